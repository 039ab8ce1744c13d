"""Both first-party backends pass the conformance kit, and are found by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from timecoin.core.errors import ConfigError, StorageError
from timecoin.storage import WriteBatch, available_backends, make_plugin_manager, open_store
from timecoin.testing.storage_conformance import StorageConformance
from timecoin_storage_leveldb import LevelDBStore
from timecoin_storage_memory import MemoryStore


class TestLevelDBConformance(StorageConformance):
    @pytest.fixture
    def kv_store_factory(self):
        return lambda path: LevelDBStore(path)


class TestMemoryConformance(StorageConformance):
    @pytest.fixture
    def kv_store_factory(self):
        return lambda path: MemoryStore(path)

    @pytest.fixture
    def kv_store_durable(self):
        return False


class TestOpenedThroughHooksConformance(StorageConformance):
    """The kit also passes for the store open_store() hands out (what the node uses)."""

    @pytest.fixture
    def kv_store_factory(self):
        return lambda path: open_store("leveldb", path, {"bloom_filter_bits": 0})


def test_entry_points_offer_both_backends():
    assert {"leveldb", "memory"} <= set(available_backends(make_plugin_manager()))


def test_open_store_picks_the_backend_by_name(tmp_path: Path):
    pm = make_plugin_manager()
    leveldb = open_store("leveldb", tmp_path / "db", {}, pm=pm)
    memory = open_store("memory", tmp_path / "mem", pm=pm)
    try:
        assert isinstance(leveldb, LevelDBStore)
        assert isinstance(memory, MemoryStore)
        assert (tmp_path / "db" / "CURRENT").exists()
    finally:
        leveldb.close()
        memory.close()


def test_unknown_backend_is_a_config_error_naming_the_available_ones(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        open_store("rocksdb", tmp_path)
    assert "'rocksdb'" in str(info.value)
    assert "'leveldb'" in str(info.value) and "'memory'" in str(info.value)
    assert info.value.details["available"] == sorted(info.value.details["available"])


def test_no_plugins_at_all_says_so(tmp_path: Path):
    pm = make_plugin_manager(load_entry_points=False)
    with pytest.raises(ConfigError, match="none installed"):
        open_store("leveldb", tmp_path, pm=pm)


def test_third_party_plugin_can_take_over_a_name(tmp_path: Path):
    from timecoin.storage.hookspecs import hookimpl

    class Shadow:
        @hookimpl(tryfirst=True)
        def timed_open_storage(self, name, path, options):
            return MemoryStore() if name == "leveldb" else None

        @hookimpl
        def timed_storage_backends(self):
            return ["leveldb"]

    pm = make_plugin_manager()
    pm.register(Shadow())
    store = open_store("leveldb", tmp_path / "x", pm=pm)
    assert isinstance(store, MemoryStore)
    assert available_backends(pm).count("leveldb") == 1


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        ("leveldb", {"lru_cache": 1}, ConfigError),
        ("leveldb", {"bloom_filter_bits": "ten"}, ConfigError),
        ("leveldb", {"create_if_missing": "yes"}, ConfigError),
        ("leveldb", {"compression": "zstd"}, ConfigError),
        ("leveldb", {"max_file_size": -1}, ConfigError),
        ("memory", {"anything": 1}, ConfigError),
    ],
)
def test_bad_options_are_config_errors(tmp_path: Path, name, options, error):
    with pytest.raises(error):
        open_store(name, tmp_path / "db", options)


def test_leveldb_reads_tables_written_with_the_other_compression(tmp_path: Path):
    # Changing the option on an existing store is safe: every table block records
    # its own compression. Enough data that the memtable flushes to tables.
    from timecoin.storage.kv import WriteBatch

    rows = {i.to_bytes(4, "big"): bytes([i % 251]) * 300 for i in range(4000)}
    store = LevelDBStore(tmp_path / "db", compression="snappy", write_buffer_size=64 * 1024)
    batch = WriteBatch()
    for k, v in rows.items():
        batch.put(k, v)
    store.write(batch, sync=True)
    store.close()
    again = LevelDBStore(tmp_path / "db", compression="none", max_file_size=1 << 20)
    try:
        assert list(again.iterate()) == sorted(rows.items())
    finally:
        again.close()
    assert any(p.suffix == ".ldb" for p in (tmp_path / "db").iterdir())


def test_leveldb_tables_are_uncompressed_unless_snappy_is_asked_for(tmp_path: Path):
    from timecoin.storage.kv import WriteBatch

    rows = {i.to_bytes(4, "big"): bytes([i % 251]) * 300 for i in range(4000)}

    def table_bytes(name: str, **options: object) -> int:
        store = LevelDBStore(tmp_path / name, write_buffer_size=64 * 1024, **options)
        batch = WriteBatch()
        for k, v in rows.items():
            batch.put(k, v)
        store.write(batch, sync=True)
        store.close()
        LevelDBStore(tmp_path / name, **options).close()  # reopening flushes the log to tables
        return sum(p.stat().st_size for p in (tmp_path / name).iterdir() if p.suffix == ".ldb")

    plain, snappy = table_bytes("default"), table_bytes("snappy", compression="snappy")
    assert plain > 300 * 4000 > 5 * snappy  # these rows compress well; the default keeps them


def test_leveldb_missing_database_without_create_is_a_storage_error(tmp_path: Path):
    with pytest.raises(StorageError):
        LevelDBStore(tmp_path / "absent", create_if_missing=False)


def test_leveldb_second_opener_gets_a_storage_error(tmp_path: Path):
    first = LevelDBStore(tmp_path / "db")
    try:
        with pytest.raises(StorageError, match="lock"):
            LevelDBStore(tmp_path / "db")
    finally:
        first.close()


def test_memory_snapshot_survives_copy_on_write():
    store = MemoryStore()
    batch = WriteBatch()
    for i in range(100):
        batch.put(b"k%03d" % i, b"v")
    store.write(batch)
    snaps = []
    for round_ in range(3):
        snaps.append(store.snapshot())
        batch = WriteBatch()
        batch.delete(b"k%03d" % round_)
        batch.put(b"n%03d" % round_, b"w")
        store.write(batch)
    for round_, snap in enumerate(snaps):
        assert len(list(snap.iterate(prefix=b"k"))) == 100 - round_
        assert len(list(snap.iterate(prefix=b"n"))) == round_
    assert len(store) == 100


@pytest.mark.parametrize("batch_size", [5, 300])
def test_memory_store_matches_a_dict_under_mixed_batches(batch_size: int):
    # Small batches update the sorted key list key by key, big ones re-sort
    # once; both must keep it equal to the sorted dict.
    import random

    rng = random.Random(batch_size)
    store, model = MemoryStore(), {}
    for _ in range(30):
        batch = WriteBatch()
        for _ in range(batch_size):
            key = bytes([rng.randrange(40)])
            if rng.random() < 0.4:
                batch.delete(key)
                model.pop(key, None)
            else:
                value = rng.randbytes(2)
                batch.put(key, value)
                model[key] = value
        store.write(batch)
        assert list(store.iterate()) == sorted(model.items())
