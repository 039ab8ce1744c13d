"""Chain store on real LevelDB: layout, indexes, undo, and crash atomicity of commit_block."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from timecoin.core.errors import AlreadyKnown, BadHeight, NotFound, StorageError
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import UtxoChanges
from timecoin.storage import WriteBatch
from timecoin.storage.chainstore import (
    BlockRecord,
    ChainReader,
    ChainStore,
    ChainTip,
    TxLocation,
)
from timecoin_storage_leveldb import LevelDBStore
from timecoin_storage_memory import MemoryStore

# --- a deterministic toy chain ------------------------------------------------


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _pkh(n: int) -> bytes:
    return _h("owner", n)[:20]


def make_chain(n_blocks: int, coins_per_block: int = 6) -> list[BlockRecord]:
    """Blocks 1..n: each creates coins for a few owners and spends half of the previous block's."""
    return list(itertools.islice(iter_chain(coins_per_block), n_blocks))


def iter_chain(coins_per_block: int) -> Iterator[BlockRecord]:
    """The endless chain make_chain() takes its prefix from."""
    prev_created: list[tuple[OutPoint, Coin]] = []
    for height in itertools.count(1):
        txids = tuple(_h("tx", height, i) for i in range(3))
        created = tuple(
            (
                OutPoint(txids[i % 3], i),
                Coin(1000 * height + i, _pkh(i % 4), height, is_coinbase=(i % 3 == 0)),
            )
            for i in range(coins_per_block)
        )
        spent = tuple(prev_created[::2])
        yield (
            BlockRecord(
                height=height,
                block_hash=_h("block", height),
                block_bytes=b"block-%d|" % height + bytes(height % 251) * 50,
                txids=txids,
                changes=UtxoChanges(spent=spent, created=created),
                utxo_state=_h("state", height) * 24,
                commit_bytes=b"commit-%d" % height,
                validator_set_bytes=b"vals-%d" % height if height % 3 == 1 else None,
                extra=((b"last-block", b"%d" % height),),
            )
        )
        prev_created = list(created)


def dump(kv) -> list[tuple[bytes, bytes]]:
    return list(kv.iterate())


@pytest.fixture
def store(tmp_path: Path):
    s = ChainStore(LevelDBStore(tmp_path / "chain"))
    yield s
    s.close()


# --- reads after commit ---------------------------------------------------------


def test_committed_block_is_readable_through_every_index(store: ChainStore):
    b1, b2 = make_chain(2)
    store.commit_block(b1)
    store.commit_block(b2)
    assert store.tip() == ChainTip(2, b2.block_hash)
    assert store.get_block_bytes(2) == b2.block_bytes
    assert store.get_block_bytes_by_hash(b1.block_hash) == b1.block_bytes
    assert store.get_block_hash(1) == b1.block_hash
    assert store.get_height(b2.block_hash) == 2
    assert store.get_block_txids(2) == b2.txids
    assert store.get_tx_location(b2.txids[2]) == TxLocation(2, 2)
    assert store.get_tx_location(b1.txids[0]) == TxLocation(1, 0)
    assert store.get_undo(2) == b2.changes
    assert store.get_seen_commit(2) == b"commit-2"
    assert store.get_validator_set_bytes(1) == b"vals-1"
    assert store.get_validator_set_bytes(2) is None
    assert store.find_validator_set_bytes(2) == (1, b"vals-1")
    assert store.get_utxo_state() == b2.utxo_state
    assert store.get_meta(b"last-block") == b"2"
    for outpoint, coin in b2.changes.created:
        assert store.get_coin(outpoint) == coin
    for outpoint, _ in b2.changes.spent:
        assert store.get_coin(outpoint) is None


def test_missing_things_are_none(store: ChainStore):
    assert store.tip() is None
    assert store.get_block_bytes(1) is None
    assert store.get_block_bytes(-1) is None
    assert store.get_block_bytes_by_hash(b"\x00" * 32) is None
    assert store.get_height(b"\x00" * 32) is None
    assert store.get_tx_location(b"\x01" * 32) is None
    assert store.get_coin(OutPoint(b"\x01" * 32, 0)) is None
    assert store.get_coin(OutPoint(b"\x01" * 32, 1 << 40)) is None
    assert store.get_undo(5) is None
    assert store.get_utxo_state() is None
    assert store.find_validator_set_bytes(10) is None


def test_spent_outputs_stay_spent_after_reopen(tmp_path: Path):
    # The bug the original node shipped: spends lived only in memory, so
    # reopening the store resurrected spent coins.
    path = tmp_path / "chain"
    chain = make_chain(3)
    store = ChainStore(LevelDBStore(path))
    for record in chain:
        store.commit_block(record)
    spent_in_3 = [op for op, _ in chain[2].changes.spent]
    assert spent_in_3
    store.close()

    store = ChainStore(LevelDBStore(path))
    try:
        assert store.tip() == ChainTip(3, chain[2].block_hash)
        for op in spent_in_3:
            assert store.get_coin(op) is None
        listed = {op for owner in range(4) for op, _ in store.iter_coins_by_address(_pkh(owner))}
        assert listed.isdisjoint(spent_in_3)
        assert {op for op, _ in store.iter_all_coins()} == listed
    finally:
        store.close()


def test_utxo_set_matches_a_replay_of_the_changes(store: ChainStore):
    chain = make_chain(6)
    utxos: dict[OutPoint, Coin] = {}
    for record in chain:
        store.commit_block(record)
        for op, _ in record.changes.spent:
            del utxos[op]
        utxos.update(record.changes.created)
    assert dict(store.iter_all_coins()) == utxos
    assert list(store.iter_all_coins()) == sorted(utxos.items())
    # Paging walks the same set.
    paged, after = [], None
    while page := store.coins_page(after=after, limit=4):
        paged += page
        after = page[-1][0]
    assert paged == sorted(utxos.items())


def test_address_index_paginates_in_outpoint_order(store: ChainStore):
    for record in make_chain(5):
        store.commit_block(record)
    owner = _pkh(1)
    everything = store.iter_coins_by_address(owner, limit=10_000)
    assert everything and all(coin.pubkey_hash == owner for _, coin in everything)
    assert [op for op, _ in everything] == sorted(op for op, _ in everything)
    pages, after = [], None
    while page := store.iter_coins_by_address(owner, after=after, limit=2):
        assert len(page) <= 2
        pages += page
        after = page[-1][0]
    assert pages == everything
    assert store.iter_coins_by_address(b"short") == []
    assert store.iter_coins_by_address(_pkh(99)) == []


# --- commit rules -------------------------------------------------------------


def test_commit_must_extend_the_tip(store: ChainStore):
    b1, b2, b3 = make_chain(3)
    store.commit_block(b1)
    with pytest.raises(BadHeight):
        store.commit_block(b3)
    with pytest.raises(BadHeight):
        store.commit_block(b1)
    store.commit_block(b2)
    dup = BlockRecord(3, b1.block_hash, b"x", (), UtxoChanges((), ()), b"s")
    with pytest.raises(AlreadyKnown):
        store.commit_block(dup)
    assert store.tip() == ChainTip(2, b2.block_hash)


def test_first_block_may_be_at_any_height(store: ChainStore):
    genesis = BlockRecord(0, _h("g"), b"genesis", (), UtxoChanges((), ()), b"s0")
    store.commit_block(genesis)
    assert store.tip() == ChainTip(0, genesis.block_hash)


def test_bad_record_shapes_are_storage_errors(store: ChainStore):
    coin = Coin(1, b"\x01" * 19, 1)
    bad_coin = BlockRecord(1, _h(1), b"", (), UtxoChanges((), ((OutPoint(_h("t"), 0), coin),)), b"")
    with pytest.raises(StorageError):
        store.commit_block(bad_coin)
    with pytest.raises(StorageError):
        store.commit_block(BlockRecord(1, b"short", b"", (), UtxoChanges((), ()), b""))
    assert store.tip() is None


def test_schema_version_mismatch_refuses_to_open(tmp_path: Path):
    kv = LevelDBStore(tmp_path / "db")
    ChainStore(kv)
    batch = WriteBatch()
    batch.put(b"v", (99).to_bytes(4, "big"))
    kv.write(batch)
    with pytest.raises(StorageError, match="schema version 99"):
        ChainStore(kv)
    kv.close()


# --- undo ------------------------------------------------------------------------


def test_disconnect_tip_restores_the_exact_previous_state(store: ChainStore):
    chain = make_chain(4)
    dumps = [dump(store.kv)]
    for record in chain:
        store.commit_block(record)
        dumps.append(dump(store.kv))
    for height in range(4, 0, -1):
        assert store.disconnect_tip() == ChainTip(height, chain[height - 1].block_hash)
        assert dump(store.kv) == dumps[height - 1]
    with pytest.raises(NotFound):
        store.disconnect_tip()
    # And the chain can be rebuilt on top of the reverted state.
    for record in chain:
        store.commit_block(record)
    assert dump(store.kv) == dumps[-1]


def test_put_meta_outside_blocks_survives_disconnect(store: ChainStore):
    b1, b2 = make_chain(2)
    store.commit_block(b1)
    store.put_meta(b"node", b"settings")
    store.commit_block(b2)
    store.disconnect_tip()
    assert store.get_meta(b"node") == b"settings"
    assert store.get_meta(b"last-block") == b"1"
    store.delete_meta(b"node")
    assert store.get_meta(b"node") is None


# --- reads are point reads and use snapshots ------------------------------------


class CountingKV:
    """A KVStore wrapper that counts calls (and can fail writes)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.gets = 0
        self.iterations = 0
        self.writes: list[tuple[int, bool]] = []
        self.fail_writes = False

    def get(self, key):
        self.gets += 1
        return self.inner.get(key)

    def iterate(self, *args, **kwargs):
        self.iterations += 1
        return self.inner.iterate(*args, **kwargs)

    def write(self, batch, *, sync=False):
        self.writes.append((len(batch), sync))
        if self.fail_writes:
            raise StorageError("injected: disk on fire")
        self.inner.write(batch, sync=sync)

    def snapshot(self):
        return self.inner.snapshot()

    def close(self):
        self.inner.close()


def test_tx_index_and_coin_lookups_are_single_point_reads(tmp_path: Path):
    kv = CountingKV(LevelDBStore(tmp_path / "db"))
    store = ChainStore(kv, unspent_cache=0)
    chain = make_chain(3)
    for record in chain:
        store.commit_block(record)
    kv.gets = kv.iterations = 0
    assert store.get_tx_location(chain[1].txids[1]) == TxLocation(2, 1)
    assert (kv.gets, kv.iterations) == (1, 0)
    op, coin = chain[2].changes.created[0]
    assert store.get_coin(op) == coin
    assert (kv.gets, kv.iterations) == (2, 0)
    assert store.get_height(chain[0].block_hash) == 1
    assert (kv.gets, kv.iterations) == (3, 0)
    store.close()


# --- the coins cache in front of get_coin -----------------------------------------


def test_coins_cache_serves_created_and_read_coins_and_forgets_spent_ones(tmp_path: Path):
    kv = CountingKV(LevelDBStore(tmp_path / "db"))
    store = ChainStore(kv)
    chain = make_chain(4)
    for record in chain[:2]:
        store.commit_block(record)
    kv.gets = 0
    created = chain[1].changes.created
    assert all(store.get_coin(op) == coin for op, coin in created)
    assert kv.gets == 0  # coins a block creates are cached as it commits
    op, coin = chain[0].changes.created[1]  # created by block 1, unspent (odd position)
    store._unspent.clear()
    store.get_coin(op)
    store.get_coin(op)
    assert kv.gets == 1  # one read, then the cache
    store.commit_block(chain[2])  # spends every other coin of block 2
    spent = {o for o, _ in chain[2].changes.spent}
    for o, c in created:
        assert store.get_coin(o) == (None if o in spent else c)
    store.close()
    reopened = ChainStore(LevelDBStore(tmp_path / "db"))
    for o, c in created:
        assert reopened.get_coin(o) == (None if o in spent else c)
    reopened.close()


def test_a_coin_read_before_a_commit_is_not_cached_after_it(store: ChainStore):
    chain = make_chain(3)
    for record in chain[:2]:
        store.commit_block(record)
    op, coin = chain[2].changes.spent[0]
    store._unspent.clear()
    # A reader on another thread looked the coin up, then a block spending it
    # committed before the reader could cache what it read.
    gen = store._unspent_gen
    assert ChainReader.get_coin(store, op) == coin
    store.commit_block(chain[2])
    store._remember(gen, ((op, coin),))
    assert store.get_coin(op) is None


def test_get_coin_does_not_cache_a_coin_a_commit_spent_while_it_read(tmp_path: Path):
    class CommitDuringRead(CountingKV):
        during_read = None

        def get(self, key):
            value = super().get(key)
            hook, self.during_read = self.during_read, None
            if hook is not None:
                hook()  # as if a block committed between the read and the caching
            return value

    kv = CommitDuringRead(LevelDBStore(tmp_path / "db"))
    store = ChainStore(kv)
    chain = make_chain(3)
    for record in chain[:2]:
        store.commit_block(record)
    op, coin = chain[2].changes.spent[0]
    store._unspent.clear()
    kv.during_read = lambda: store.commit_block(chain[2])
    assert store.get_coin(op) == coin  # what the read saw, before the block
    assert store.get_coin(op) is None  # and the cache did not keep it
    store.close()


def test_coins_cache_is_bounded_and_emptied_by_disconnect(tmp_path: Path):
    store = ChainStore(LevelDBStore(tmp_path / "db"), unspent_cache=8)
    chain = make_chain(6, coins_per_block=10)
    for record in chain:
        store.commit_block(record)
        assert len(store._unspent) <= 8
    removed = store.disconnect_tip()
    assert removed.height == 6 and not store._unspent
    for op, _ in chain[5].changes.created:
        assert store.get_coin(op) is None
    for op, coin in chain[5].changes.spent:
        assert store.get_coin(op) == coin  # restored by the undo data, read afresh
    store.close()


def test_commit_block_is_one_synced_write(tmp_path: Path):
    kv = CountingKV(MemoryStore())
    store = ChainStore(kv)
    kv.writes.clear()
    b1 = make_chain(1)[0]
    store.commit_block(b1)
    assert len(kv.writes) == 1
    n_ops, sync = kv.writes[0]
    assert sync is True
    # block, hash<->height, txids, 3 tx index, 6 coins + 6 address entries,
    # undo, commit, validator set, meta, utxo state, tip
    assert n_ops == 4 + 3 + 12 + 1 + 1 + 1 + 1 + 2


def test_a_failed_write_leaves_the_previous_state(tmp_path: Path):
    kv = CountingKV(LevelDBStore(tmp_path / "db"))
    store = ChainStore(kv)
    b1, b2 = make_chain(2)
    store.commit_block(b1)
    before = dump(kv.inner)
    kv.fail_writes = True
    with pytest.raises(StorageError, match="injected"):
        store.commit_block(b2)
    assert dump(kv.inner) == before
    kv.fail_writes = False
    store.commit_block(b2)  # the store is usable afterwards
    assert store.tip() == ChainTip(2, b2.block_hash)
    store.close()


def test_snapshot_reads_do_not_see_later_commits(store: ChainStore):
    b1, b2 = make_chain(2)
    store.commit_block(b1)
    with store.snapshot() as snap:
        store.commit_block(b2)
        assert snap.tip() == ChainTip(1, b1.block_hash)
        assert snap.get_block_bytes(2) is None
        for op, coin in b2.changes.spent:
            assert snap.get_coin(op) == coin
        assert snap.get_utxo_state() == b1.utxo_state
    assert store.tip() == ChainTip(2, b2.block_hash)


def test_get_coin_on_corrupt_record_is_a_storage_error(tmp_path: Path):
    kv = MemoryStore()
    store = ChainStore(kv)
    batch = WriteBatch()
    op = OutPoint(b"\x07" * 32, 3)
    batch.put(b"U" + op.txid + (3).to_bytes(4, "big"), b"too short")
    kv.write(batch)
    with pytest.raises(StorageError, match="corrupt"):
        store.get_coin(op)


# --- crash atomicity with a killed process --------------------------------------

CRASH_COINS_PER_BLOCK = 60


class _ExitAfterWrites:
    """KV wrapper for the child: the process dies right after its n-th write returns."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.left = inner, n
        self.get, self.iterate, self.snapshot = inner.get, inner.iterate, inner.snapshot

    def write(self, batch, *, sync=False):
        self.inner.write(batch, sync=sync)
        self.left -= 1
        if self.left == 0:
            os._exit(3)  # no cleanup, no close: as abrupt as a power cut after the write

    def close(self):
        self.inner.close()


def _child_main(path: str, exit_after_writes: int = 0) -> None:
    """Run in a subprocess: commit blocks as fast as possible until killed."""
    kv = LevelDBStore(path)
    store = ChainStore(_ExitAfterWrites(kv, exit_after_writes) if exit_after_writes else kv)
    start = (store.tip() or ChainTip(0, b"")).height
    for record in itertools.islice(iter_chain(CRASH_COINS_PER_BLOCK), start, None):
        store.commit_block(record)
        print(record.height, flush=True)


def _spawn_child(path: Path, exit_after_writes: int = 0) -> subprocess.Popen[str]:
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('chainstore_child', {__file__!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        f"mod._child_main({str(path)!r}, {exit_after_writes})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def reference_dump(height: int) -> list[tuple[bytes, bytes]]:
    """The store's full content after block *height* of the crash chain, built in memory."""
    kv = MemoryStore()
    store = ChainStore(kv)
    for record in make_chain(height, CRASH_COINS_PER_BLOCK):
        store.commit_block(record)
    return dump(kv)


@pytest.mark.parametrize("kill_at_height", [7, 60, 140])
def test_killed_mid_commit_reopens_at_a_whole_block(tmp_path: Path, kill_at_height: int):
    # The child keeps committing while its progress lines travel through the
    # pipe, so SIGKILL lands wherever it is - often inside a batch write.
    # Reopening must give exactly the state after some block, never a mix.
    path = tmp_path / "chain"
    child = _spawn_child(path)
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) >= kill_at_height:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    store = ChainStore(LevelDBStore(path))
    try:
        tip = store.tip()
        height = 0 if tip is None else tip.height
        assert height >= kill_at_height
        assert dump(store.kv) == reference_dump(height)
    finally:
        store.close()


def test_child_module_is_importable_by_path():
    # Guards the subprocess trick above: the module loads outside pytest.
    spec = importlib.util.spec_from_file_location("chainstore_child_check", __file__)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert len(mod.make_chain(2)) == 2


@pytest.mark.parametrize("exit_after_writes", [1, 2, 5, 33])
def test_process_exit_between_writes_reopens_at_a_whole_block(
    tmp_path: Path, exit_after_writes: int
):
    # Deterministic companion of the SIGKILL test: the process dies right
    # after its n-th KV write (the first one records the schema version). If
    # commit_block ever split a block over two writes, some n would stop
    # between them and the reopened state would match no block.
    path = tmp_path / "chain"
    child = _spawn_child(path, exit_after_writes)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 3
    store = ChainStore(LevelDBStore(path))
    try:
        tip = store.tip()
        height = 0 if tip is None else tip.height
        assert height == exit_after_writes - 1
        assert dump(store.kv) == reference_dump(height)
    finally:
        store.close()
