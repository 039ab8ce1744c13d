"""Signature checks of submitted transactions in worker processes.

Why processes: a node admitting thousands of transactions a second is bound
by the interpreter lock, not by ECDSA. libsecp256k1 runs outside the lock,
but every check on a verify thread takes the lock back three times (key
parse, signature parse, verify) and runs a few microseconds of Python around
them, so the storage thread (admission, block building, commits) waited for
the lock behind the verify threads. A worker process has its own lock: the
node process sends one message per chunk of transactions (digest, keys,
signatures) and gets one flag byte per transaction back.

Only the yes/no answer crosses the process boundary. A transaction that
fails is checked again in the node with ``check_signatures`` so that its
rejection carries the same reason and input index as on the thread path.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import tx_sign_digest
from timecoin.core.types import Transaction

log = logging.getLogger("timed.node")

PARENT_POLL_S = 0.5
"""How often a worker checks that the node process is still its parent."""

Item = tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]
"""One transaction's signing digest, input public keys and signatures."""


def item_of(tx: Transaction, chain_id: str) -> Item:
    """Return what a worker needs to check *tx*'s signatures for *chain_id*."""
    return (
        tx_sign_digest(chain_id, tx.body_bytes),
        tuple(i.pubkey for i in tx.body.inputs),
        tx.signatures,
    )


def verify_items(items: Sequence[Item]) -> bytes:
    """Return one byte per item: 1 if every input's signature verifies, else 0.

    The same rule as ``core.tx.check_signatures``: one signature per input,
    at least one input, each a low-S signature by that input's key.
    """
    out = bytearray(len(items))
    for n, (digest, pubkeys, sigs) in enumerate(items):
        ok = 0 < len(sigs) == len(pubkeys)
        if ok:
            for pubkey, sig in zip(pubkeys, sigs, strict=True):
                if not is_valid_signature(pubkey, sig, digest):
                    ok = False
                    break
        out[n] = ok
    return bytes(out)


def _start_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the node process decides when
    # its workers stop (``close``), so they must not die first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A worker holds both ends of its task pipe, so a node killed with -9
    # would leave it waiting forever: it leaves once its parent is gone.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


class SignatureProcesses:
    """A pool of *workers* processes checking transaction signatures.

    Started lazily, on the first batch, with the ``spawn`` method (a forked
    child would inherit gRPC's threads and locks). ``verify`` returns None
    once the pool is broken (a worker was killed): the caller falls back to
    its threads and the node keeps running.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("SignatureProcesses needs at least one worker")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False

    async def verify(self, items: Sequence[Item]) -> bytes | None:
        """Check *items* in parallel chunks; one flag byte per item, or None if unavailable."""
        if self._broken:
            return None
        if not items:
            return b""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        size = len(items) // self.workers + 1
        loop = asyncio.get_running_loop()
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(self._pool, verify_items, items[i : i + size])
                    for i in range(0, len(items), size)
                )
            )
        except BrokenProcessPool:
            log.warning("Signature worker processes failed; checking on threads from now on")
            self._broken = True
            return None
        return b"".join(parts)

    def close(self) -> None:
        """Stop the workers (queued work is cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
