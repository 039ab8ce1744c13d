"""The storage thread's priority executor."""

import asyncio
import threading

import pytest

from timecoin.node.executor import BACKGROUND, NORMAL, URGENT, PriorityExecutor


def test_queued_calls_run_by_priority_then_arrival():
    ex = PriorityExecutor("test-db")
    gate = threading.Event()
    ran: list[str] = []
    first = ex.submit(gate.wait)  # occupies the thread while the rest queue up
    futures = [
        ex.submit_at(BACKGROUND, ran.append, "admit-1"),
        ex.submit_at(NORMAL, ran.append, "query"),
        ex.submit_at(URGENT, ran.append, "commit-1"),
        ex.submit_at(BACKGROUND, ran.append, "admit-2"),
        ex.submit_at(URGENT, ran.append, "commit-2"),
    ]
    gate.set()
    assert first.result(5) is True
    for f in futures:
        f.result(5)
    assert ran == ["commit-1", "commit-2", "query", "admit-1", "admit-2"]
    ex.shutdown()


def test_results_exceptions_and_asyncio_wrapping():
    ex = PriorityExecutor("test-db")

    def boom() -> None:
        raise ValueError("no")

    assert ex.submit(sum, [1, 2, 3]).result(5) == 6
    with pytest.raises(ValueError, match="no"):
        ex.submit_at(URGENT, boom).result(5)

    async def main() -> int:
        return await asyncio.wrap_future(ex.submit_at(URGENT, lambda: 7))

    assert asyncio.run(main()) == 7
    ex.shutdown()


def test_shutdown_runs_what_is_queued_or_cancels_it():
    ex = PriorityExecutor("test-db")
    gate = threading.Event()
    ex.submit(gate.wait)
    later = ex.submit_at(BACKGROUND, lambda: "done")
    threading.Timer(0.05, gate.set).start()
    ex.shutdown(wait=True)
    assert later.result(0) == "done"
    with pytest.raises(RuntimeError):
        ex.submit(lambda: None)

    ex2 = PriorityExecutor("test-db")
    gate2 = threading.Event()
    ex2.submit(gate2.wait)
    dropped = ex2.submit_at(BACKGROUND, lambda: "never")
    ex2.shutdown(wait=False, cancel_futures=True)
    gate2.set()
    assert dropped.cancelled()
