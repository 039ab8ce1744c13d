"""Worker processes for the node's CPU-heavy pure work.

Two jobs run there: the signature checks of submitted transactions, and the
MuHash numbers of the coins a block spends and creates (the UTXO commitment
every block header carries: about three coins per transaction, each a
SHA-256, a ChaCha20 keystream and a 3072-bit multiplication).

Why processes: a node admitting thousands of transactions a second is bound
by the interpreter lock, not by ECDSA. libsecp256k1 runs outside the lock,
but every check on a verify thread takes the lock back three times (key
parse, signature parse, verify) and runs a few microseconds of Python around
them, so the storage thread (admission, block building, commits) waited for
the lock behind the verify threads. A worker process has its own lock: the
node process sends one message per chunk of transactions (body bytes, keys,
signatures; the worker computes the signed digest) and gets one flag byte per
transaction back.

Only the yes/no answer crosses the process boundary. A transaction that
fails is checked again in the node with ``check_signatures`` so that its
rejection carries the same reason and input index as on the thread path.
For the commitment, the coins' 73-byte elements go out in one chunk per
worker and one 3072-bit number per chunk comes back; the node multiplies the
chunks (the product does not depend on how the coins are split). Meanwhile the
storage thread is free to admit transactions (``Node._propose``). Any failure
of the pool (a killed worker, a pool closed during shutdown) leaves the same
pure function to the node process, so a block's commitment is always
computed.
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

from timecoin.core.hashing import sha256
from timecoin.core.keys import is_valid_signature
from timecoin.core.muhash import COIN_ELEMENT_SIZE, Num, elements_product, mulmod
from timecoin.core.signing import tx_sign_prefix
from timecoin.core.types import Transaction

log = logging.getLogger("timed.node")

PARENT_POLL_S = 0.5
"""How often a worker checks that the node process is still its parent."""

MIN_REMOTE_ELEMENTS = 64
"""Fewer coins than this are hashed in the node process: sending them costs more
than the ~7 us each takes (an empty block still spends nothing and creates one)."""

Item = tuple[bytes, tuple[bytes, ...], tuple[bytes, ...]]
"""One transaction's body bytes, input public keys and signatures."""


def item_of(tx: Transaction) -> Item:
    """Return what a worker needs to check *tx*'s signatures.

    The body rather than its signing digest: the worker hashes it, which
    takes that SHA-256 off the node's interpreter lock for the price of
    sending about a hundred bytes more.
    """
    return (tx.body_bytes, tuple([i.pubkey for i in tx.body.inputs]), tx.signatures)


def verify_items(chain_id: str, items: Sequence[Item]) -> bytes:
    """Return one byte per item: 1 if every input's signature verifies for *chain_id*, else 0.

    The same rule as ``core.tx.check_signatures``: one signature per input,
    at least one input, each a low-S signature by that input's key over
    ``tx_sign_digest(chain_id, body)``.
    """
    prefix = tx_sign_prefix(chain_id)
    out = bytearray(len(items))
    for n, (body, pubkeys, sigs) in enumerate(items):
        digest = sha256(prefix + body)
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


class WorkerProcesses:
    """Two pools of *workers* processes: signature checks, and MuHash products.

    Two pools, not one: a block's coins take a worker 100 ms or more, and in a
    shared first-in-first-out pool every admission queued behind them would
    wait that long (and a block behind a burst of admissions); the operating
    system shares the cores between the two better than a queue does.

    Each pool starts lazily, on its first job, with the ``spawn`` method (a
    forked child would inherit gRPC's threads and locks). ``verify`` and
    ``products`` return None once a pool is broken (a worker was killed) or
    closed: the caller does the work itself and the node keeps running.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("WorkerProcesses needs at least one worker")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._hash_pool: ProcessPoolExecutor | None = None
        self._broken = False
        self._closed = False
        self._lock = threading.Lock()

    def _executor(self, hashing: bool = False) -> ProcessPoolExecutor | None:
        with self._lock:
            if self._broken or self._closed:
                return None
            pool = self._hash_pool if hashing else self._pool
            if pool is None:
                pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(os.getpid(),),
                )
                if hashing:
                    self._hash_pool = pool
                else:
                    self._pool = pool
            return pool

    def _mark_broken(self) -> None:
        with self._lock:
            if not self._broken:
                log.warning("Worker processes failed; the node does their work itself from now on")
            self._broken = True

    async def verify(self, chain_id: str, items: Sequence[Item]) -> bytes | None:
        """Check *items* for *chain_id* in parallel chunks; one flag byte per item, or None.

        None if the pool is unavailable (broken or closed).
        """
        if not items:
            return b""
        pool = self._executor()
        if pool is None:
            return None
        size = len(items) // self.workers + 1
        loop = asyncio.get_running_loop()
        try:
            parts = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, verify_items, chain_id, items[i : i + size])
                    for i in range(0, len(items), size)
                )
            )
        except BrokenProcessPool:
            self._mark_broken()
            return None
        return b"".join(parts)

    async def products(self, parts: Sequence[bytes]) -> list[Num] | None:
        """Return ``muhash.elements_product`` of every part, computed in the hashing workers.

        Each part is split into one chunk per worker; the node multiplies the
        chunks' products (a few microseconds). None, and the caller computes
        them itself, when there are too few coins to be worth sending or the
        pool is broken or closed.
        """
        size = COIN_ELEMENT_SIZE
        if any(len(p) % size for p in parts):
            raise ValueError(f"coin elements must be a multiple of {size} bytes")
        if sum(len(p) for p in parts) < MIN_REMOTE_ELEMENTS * size:
            return None
        pool = self._executor(hashing=True)
        if pool is None:
            return None
        per = -(-sum(len(p) for p in parts) // size // self.workers) * size
        jobs = [
            (n, part[i : i + per]) for n, part in enumerate(parts) for i in range(0, len(part), per)
        ]
        loop = asyncio.get_running_loop()
        try:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, elements_product, chunk) for _, chunk in jobs)
            )
        except BrokenProcessPool:
            self._mark_broken()
            return None
        except RuntimeError:  # closed meanwhile (shutdown): no new work is scheduled
            return None
        out: list[Num] = [1] * len(parts)  # an empty part multiplies by one
        for (n, _), product in zip(jobs, results, strict=True):
            out[n] = mulmod(out[n], product)
        return out

    def close(self) -> None:
        """Stop the workers (queued work is cancelled); later jobs run in this process."""
        with self._lock:
            self._closed = True
            pools = (self._pool, self._hash_pool)
            self._pool = self._hash_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
