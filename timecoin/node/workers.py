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
import pickle
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, cast

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
    # A worker busy with a long job does not see its socket close, so a node
    # killed with -9 is also noticed by polling: it leaves once its parent is gone.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


_FRAME = struct.Struct("!i")
"""The length header of ``multiprocessing.connection``'s frames (messages under 2 GiB)."""


def _serve(sock: socket.socket, parent: int) -> None:
    """Run each ``(function, args)`` job the node sends, answering in order (a worker's life).

    The answer is ``(True, result)`` or ``(False, exception)``. The worker
    leaves when the node closes its end of the socket (or dies, see above).
    """
    _start_worker(parent)
    conn = Connection(sock.detach())
    while True:
        try:
            fn, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the node closed its end (or died)
            return
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # the caller gets it, as from a local call
            reply = (False, exc)
        try:
            conn.send_bytes(pickle.dumps(reply, pickle.HIGHEST_PROTOCOL))
        except OSError:  # closed while the job ran: nobody waits for the answer
            return


class WorkerGone(Exception):
    """A worker process ended, or its pool was closed, before it answered."""


class _Channel(asyncio.Protocol):
    """The node's end of one worker's socket: jobs out, answers in, both in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buf = bytearray()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.lost or self.transport is None:
            fut.set_exception(WorkerGone("the worker process is gone"))
            return fut
        data = pickle.dumps((fn, args), pickle.HIGHEST_PROTOCOL)
        self.waiting.append(fut)
        self.transport.writelines((_FRAME.pack(len(data)), data))
        return fut

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        head = _FRAME.size
        while len(buf) >= head:
            (n,) = _FRAME.unpack_from(buf)
            if len(buf) < head + n:
                return
            ok, value = pickle.loads(buf[head : head + n])
            del buf[: head + n]
            fut = self.waiting.popleft()
            if not fut.done():  # a cancelled caller no longer waits
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(WorkerGone("the worker process ended before answering"))


class _Pool:
    """*n* worker processes fed straight from the event loop, one socket pair each.

    ``concurrent.futures.ProcessPoolExecutor`` relays every job through two
    threads of the node process (a manager, and a feeder that pickles) and
    every answer back through the manager and a wake-up of the loop. At
    saturation those two threads used about 2.5 us of the node's CPU per
    transaction, with interpreter-lock hand-offs between three threads for
    every job (``bench/node.py``). Here the loop pickles a job and writes it
    to the worker's socket, and reads the answer when the socket is
    readable; nothing else runs in the node process.
    """

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        ctx = multiprocessing.get_context("spawn")  # a forked child would inherit gRPC's threads
        self.loop = loop
        self._socks: list[socket.socket] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._channels: list[_Channel] = []
        self._ready: asyncio.Task[None] | None = None
        try:
            for _ in range(n):
                mine, theirs = socket.socketpair()
                self._socks.append(mine)
                proc = ctx.Process(
                    target=_serve, args=(theirs, os.getpid()), name="timed-worker", daemon=True
                )
                proc.start()
                theirs.close()
                self._procs.append(proc)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and diagnostics)."""
        return [p.pid for p in self._procs if p.pid is not None]

    async def connected(self) -> None:
        """Attach the sockets to the loop (once; concurrent callers wait for the same attach)."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._connect())
        await self._ready

    async def _connect(self) -> None:
        for sock in self._socks:
            _, channel = await self.loop.create_connection(partial(_Channel, self.loop), sock=sock)
            self._channels.append(channel)

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Send ``fn(*args)`` to the least busy worker; the future gets its answer."""
        channel = min(self._channels, key=lambda c: len(c.waiting))
        return channel.call(fn, args)

    def close(self) -> None:
        """Close the sockets: each worker leaves after its current job; waiting calls fail.

        From another thread while the pool's loop runs, the closing is handed
        to that loop (transports belong to their loop's thread).
        """
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if self.loop.is_running() and current is not self.loop:
            self.loop.call_soon_threadsafe(self._close)
        else:
            self._close()

    def _close(self) -> None:
        for channel in self._channels:
            if channel.transport is not None and not self.loop.is_closed():
                channel.transport.abort()
            channel.connection_lost(None)
        for sock in self._socks:
            sock.close()  # a no-op for the ones a transport already closed
        for proc in self._procs:
            if not proc.is_alive():
                proc.join(0)  # reap it now rather than at exit


class WorkerProcesses:
    """Two pools of *workers* processes: signature checks, and MuHash products.

    Two pools, not one: a block's coins take a worker 100 ms or more, and in a
    shared first-in-first-out pool every admission queued behind them would
    wait that long (and a block behind a burst of admissions); the operating
    system shares the cores between the two better than a queue does.

    Each pool starts lazily, on its first job, with the ``spawn`` method, and
    is driven by the event loop that gave it that job (``_Pool``). ``verify``
    and ``products`` return None once a pool is broken (a worker was killed)
    or closed: the caller does the work itself and the node keeps running.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("WorkerProcesses needs at least one worker")
        self.workers = workers
        self._pool: _Pool | None = None
        self._hash_pool: _Pool | None = None
        self._broken = False
        self._closed = False
        self._lock = threading.Lock()

    async def _executor(self, hashing: bool = False) -> _Pool | None:
        loop = asyncio.get_running_loop()
        stale: _Pool | None = None
        with self._lock:
            if self._broken or self._closed:
                return None
            pool = self._hash_pool if hashing else self._pool
            if pool is not None and pool.loop is not loop:
                stale, pool = pool, None  # started by an earlier event loop
            if pool is None:
                pool = _Pool(self.workers, loop)
                if hashing:
                    self._hash_pool = pool
                else:
                    self._pool = pool
        if stale is not None:
            stale.close()
        try:
            await pool.connected()
        except OSError:
            self._mark_broken()
            return None
        return pool

    def _mark_broken(self) -> None:
        with self._lock:
            if not self._broken and not self._closed:
                log.warning("Worker processes failed; the node does their work itself from now on")
            self._broken = True

    async def _gather(self, futures: list[asyncio.Future[Any]]) -> list[Any] | None:
        """Await every answer; None (the pool marked broken unless closed) if a worker is gone."""
        results = await asyncio.gather(*futures, return_exceptions=True)
        for r in results:
            if isinstance(r, WorkerGone):
                if not self._closed:
                    self._mark_broken()
                return None
            if isinstance(r, BaseException):
                raise r
        return results

    async def verify(self, chain_id: str, items: Sequence[Item]) -> bytes | None:
        """Check *items* for *chain_id* in parallel chunks; one flag byte per item, or None.

        None if the pool is unavailable (broken or closed).
        """
        if not items:
            return b""
        pool = await self._executor()
        if pool is None:
            return None
        size = len(items) // self.workers + 1
        parts = await self._gather(
            [
                pool.call(verify_items, chain_id, items[i : i + size])
                for i in range(0, len(items), size)
            ]
        )
        return None if parts is None else b"".join(parts)

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
        pool = await self._executor(hashing=True)
        if pool is None:
            return None
        per = -(-sum(len(p) for p in parts) // size // self.workers) * size
        jobs = [
            (n, part[i : i + per]) for n, part in enumerate(parts) for i in range(0, len(part), per)
        ]
        results = await self._gather([pool.call(elements_product, chunk) for _, chunk in jobs])
        if results is None:
            return None
        out: list[Num] = [1] * len(parts)  # an empty part multiplies by one
        for (n, _), product in zip(jobs, results, strict=True):
            out[n] = mulmod(out[n], product)
        return out

    def close(self) -> None:
        """Stop the workers (waiting calls get None); later jobs run in this process."""
        with self._lock:
            self._closed = True
            pools = (self._pool, self._hash_pool)
            self._pool = self._hash_pool = None
        for pool in pools:
            if pool is not None:
                pool.close()
