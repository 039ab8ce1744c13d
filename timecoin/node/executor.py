"""The storage thread's executor: one thread, calls run by priority, then in arrival order.

The node keeps a single writer of chain and mempool state (``Node.in_db``).
With a plain FIFO, a block that must be validated or committed waits behind
every mempool admission batch queued before it: under load that is hundreds
of milliseconds added to every block, and so to every transaction's latency.
Here consensus work (build, validate, commit, sync) goes first, queries next
and admissions last; within a priority the order is arrival order, so two
admissions or two commits never swap.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

URGENT = 0
"""Consensus work: building, validating and committing blocks, applying synced ones."""
NORMAL = 1
"""Queries (the client API) and anything submitted without a priority."""
BACKGROUND = 2
"""Mempool admission and bookkeeping writes."""

_STOP = 1 << 30  # after everything queued, whatever its priority


class PriorityExecutor(Executor):
    """A single worker thread taking calls from a priority queue (``URGENT`` first)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._shutdown = False
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` at ``NORMAL`` priority (the Executor interface)."""
        return self.submit_at(NORMAL, fn, *args, **kwargs)

    def submit_at(
        self, priority: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> Future[T]:
        """Queue ``fn(*args, **kwargs)`` at *priority* (lower runs first)."""
        future: Future[T] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.put((priority, next(self._seq), (future, fn, args, kwargs)))
        return future

    def _work(self) -> None:
        while True:
            _, _, item = self._queue.get()
            if item is None:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the calls already queued (cancelled first with *cancel_futures*)."""
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                if cancel_futures:
                    while True:
                        try:
                            _, _, item = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is not None:
                            item[0].cancel()
                self._queue.put((_STOP, next(self._seq), None))
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()
