"""AsyncChainStore: storage runs on worker threads, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from test_chainstore import make_chain

from timecoin.core.errors import BadHeight, StorageError
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import UtxoChanges
from timecoin.storage.aio import AsyncChainStore
from timecoin.storage.chainstore import BlockRecord, ChainStore, ChainTip
from timecoin_storage_leveldb import LevelDBStore


class GatedKV:
    """Wraps a store; write() blocks its thread until the test opens the gate."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.get, self.iterate, self.snapshot = inner.get, inner.iterate, inner.snapshot
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gated = False
        self.writer_threads: set[str] = set()

    def write(self, batch, *, sync=False):
        self.writer_threads.add(threading.current_thread().name)
        if self.gated:
            self.entered.set()
            # If this ran on the event loop thread the test could never open
            # the gate; fail loudly instead of hanging.
            if not self.gate.wait(timeout=10):
                raise RuntimeError("gate never opened: the event loop was blocked")
        self.inner.write(batch, sync=sync)

    def close(self):
        self.inner.close()


def big_block(height: int = 1, n_coins: int = 20_000) -> BlockRecord:
    created = tuple(
        (OutPoint(i.to_bytes(32, "big"), 0), Coin(i + 1, b"\x05" * 20, height))
        for i in range(n_coins)
    )
    return BlockRecord(height, b"\xbb" * 32, b"B" * 100_000, (), UtxoChanges((), created), b"s")


async def test_event_loop_keeps_running_during_a_large_commit(tmp_path: Path):
    kv = GatedKV(LevelDBStore(tmp_path / "db"))
    astore = AsyncChainStore(ChainStore(kv))
    kv.writer_threads.clear()  # the constructor's schema-version write ran here
    kv.gated = True
    loop_thread = threading.current_thread().name
    commit = asyncio.create_task(astore.commit_block(big_block()))

    # The commit is now parked inside write() on a worker thread; the loop
    # must still run other tasks and serve reads.
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await asyncio.to_thread(kv.entered.wait, 10)
    assert kv.entered.is_set()
    assert await astore.tip() is None  # reads are served while the write waits
    before = ticks
    await asyncio.sleep(0.01)
    assert ticks > before
    assert not commit.done()
    kv.gate.set()
    await commit
    ticking.cancel()
    assert await astore.tip() == ChainTip(1, b"\xbb" * 32)
    assert loop_thread not in kv.writer_threads
    assert all(name.startswith("chainstore-write") for name in kv.writer_threads)
    await astore.close()


async def test_writes_apply_in_the_order_they_were_awaited(tmp_path: Path):
    astore = AsyncChainStore(ChainStore(LevelDBStore(tmp_path / "db")))
    chain = make_chain(12)
    # Started together; a pool of several writer threads could reorder them
    # and the store would reject a block that does not extend the tip.
    await asyncio.gather(*(astore.commit_block(r) for r in chain))
    assert await astore.tip() == ChainTip(12, chain[-1].block_hash)
    with pytest.raises(BadHeight):
        await astore.commit_block(chain[3])
    assert await astore.disconnect_tip() == ChainTip(12, chain[-1].block_hash)
    assert await astore.get_height(chain[-1].block_hash) is None
    await astore.close()


async def test_reads_match_the_sync_store(tmp_path: Path):
    store = ChainStore(LevelDBStore(tmp_path / "db"))
    astore = AsyncChainStore(store)
    chain = make_chain(3)
    for r in chain:
        await astore.commit_block(r)
    ops = [op for op, _ in chain[2].changes.created] + [OutPoint(b"\x00" * 32, 9)]
    assert await astore.get_coins(ops) == [store.get_coin(op) for op in ops]
    assert await astore.get_coin(ops[0]) == chain[2].changes.created[0][1]
    assert await astore.get_block_bytes(2) == chain[1].block_bytes
    assert await astore.get_block_bytes_by_hash(chain[0].block_hash) == chain[0].block_bytes
    assert await astore.get_block_hash(3) == chain[2].block_hash
    assert await astore.get_block_txids(3) == chain[2].txids
    assert await astore.get_tx_location(chain[2].txids[1]) == (3, 1)
    owner = chain[2].changes.created[0][1].pubkey_hash
    assert await astore.iter_coins_by_address(owner) == store.iter_coins_by_address(owner)
    assert await astore.coins_page(limit=5) == store.coins_page(limit=5)
    assert await astore.get_undo(3) == chain[2].changes
    assert await astore.get_seen_commit(3) == b"commit-3"
    assert await astore.find_validator_set_bytes(3) == (1, b"vals-1")
    assert await astore.get_validator_set_bytes(1) == b"vals-1"
    assert await astore.get_utxo_state() == chain[2].utxo_state
    await astore.put_meta(b"k", b"v")
    assert await astore.get_meta(b"k") == b"v"
    await astore.delete_meta(b"k")
    assert await astore.get_meta(b"k") is None

    def tip_and_block() -> tuple[ChainTip | None, bytes | None]:
        with store.snapshot() as snap:
            tip = snap.tip()
            return tip, None if tip is None else snap.get_block_bytes(tip.height)

    assert await astore.run_read(tip_and_block) == (store.tip(), chain[2].block_bytes)
    await astore.close()


async def test_close_drains_then_closes_and_refuses_new_calls(tmp_path: Path):
    kv = LevelDBStore(tmp_path / "db")
    astore = AsyncChainStore(ChainStore(kv))
    pending = asyncio.create_task(astore.commit_block(big_block(n_coins=2_000)))
    await asyncio.sleep(0)  # let the commit reach the writer thread
    await astore.close()
    await pending  # finished, not cut off
    assert kv.closed
    with pytest.raises(StorageError):
        await astore.tip()
    await astore.close()  # idempotent
