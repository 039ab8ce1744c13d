"""Storage backend conformance kit: a pytest plugin for authors of ``KVStore`` backends.

Installed with timecoin (entry point ``pytest11``), so its fixtures are there
in any pytest run. To check a backend, give your conftest a factory and subclass
the test class::

    # conftest.py
    import pytest
    from my_backend import MyStore

    @pytest.fixture
    def kv_store_factory():
        return lambda path: MyStore(path)       # (path: Path) -> KVStore

    @pytest.fixture
    def kv_store_durable():                      # optional, default True
        return True                              # False: data need not survive close()

    # test_my_backend.py
    from timecoin.testing.storage_conformance import StorageConformance

    class TestMyBackend(StorageConformance):
        pass

Optional fixture ``kv_store_allows_empty_key`` (default True): whether the
empty key ``b""`` is a valid key. LevelDB and the memory backend allow it; a
backend that cannot must raise ``StorageError`` when a batch holds it.

Each test states one rule of the interface (``timecoin/storage/kv.py``):
bytewise order, exact prefix bounds, half-open ranges, all-or-nothing batches
that no reader sees half of, point-in-time iterators and snapshots, durability
across reopen, ``StorageError`` after close.
"""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from timecoin.core.errors import StorageError
from timecoin.storage.kv import KVReader, KVStore, WriteBatch

__all__ = ["StorageConformance", "StoreFactory"]

StoreFactory = Callable[[Path], KVStore]


# --- fixtures (defaults; a conftest overrides them) -----------------------


@pytest.fixture
def kv_store_durable() -> bool:
    """Whether data must survive ``close()`` and reopening at the same path."""
    return True


@pytest.fixture
def kv_store_allows_empty_key() -> bool:
    """Whether ``b""`` is a valid key for the backend under test."""
    return True


@pytest.fixture
def kv_store_path(tmp_path: Path) -> Path:
    """Directory the store under test lives in."""
    return tmp_path / "store"


@pytest.fixture
def kv_store(kv_store_factory: StoreFactory, kv_store_path: Path) -> Iterator[KVStore]:
    """Open a fresh store with the backend's ``kv_store_factory``; close it afterwards."""
    store = kv_store_factory(kv_store_path)
    yield store
    store.close()


# --- helpers --------------------------------------------------------------


def _put(store: KVStore, items: dict[bytes, bytes] | list[tuple[bytes, bytes]]) -> None:
    batch = WriteBatch()
    pairs = items.items() if isinstance(items, dict) else items
    for k, v in pairs:
        batch.put(k, v)
    store.write(batch)


def _reference(
    data: dict[bytes, bytes],
    prefix: bytes,
    start: bytes | None,
    stop: bytes | None,
    reverse: bool,
) -> list[tuple[bytes, bytes]]:
    """Model answer for ``iterate``: filter, then sort bytewise."""
    keys = [
        k
        for k in data
        if k.startswith(prefix) and (start is None or k >= start) and (stop is None or k < stop)
    ]
    keys.sort(reverse=reverse)
    return [(k, data[k]) for k in keys]


_ALPHABET = (0x00, 0x01, 0x61, 0x62, 0xFE, 0xFF)


def _random_key(rng: random.Random, low: int, high: int) -> bytes:
    return bytes(rng.choice(_ALPHABET) for _ in range(rng.randint(low, high)))


def _random_items(rng: random.Random) -> dict[bytes, bytes]:
    """Short keys over an alphabet rich in 0x00/0xff neighbours (no empty key)."""
    data = {_random_key(rng, 1, 4): rng.randbytes(rng.randint(0, 8)) for _ in range(400)}
    return data


def _check_ranges_against_model(
    reader: KVReader, data: dict[bytes, bytes], rng: random.Random
) -> None:
    probes = [b""] + [_random_key(rng, 1, 3) for _ in range(40)]
    for _ in range(400):
        prefix = rng.choice(probes[:12])
        start = rng.choice([None, *probes])
        stop = rng.choice([None, *probes])
        reverse = rng.random() < 0.5
        got = list(reader.iterate(prefix=prefix, start=start, stop=stop, reverse=reverse))
        want = _reference(data, prefix, start, stop, reverse)
        assert got == want, f"iterate({prefix=}, {start=}, {stop=}, {reverse=})"


class _InjectedError(Exception):
    """Raised by ``_ExplodingBatch`` to simulate a failure while a batch is applied."""


class _ExplodingBatch(WriteBatch):
    """A batch whose iteration fails after *after* operations.

    A backend that streams operations into the store as it reads them would
    leave the first ones applied; a conforming one collects the whole batch
    (LevelDB: ``write_batch(transaction=True)``) before committing it.
    """

    __slots__ = ("_after",)

    def __init__(self, after: int) -> None:
        super().__init__()
        self._after = after

    def __iter__(self) -> Iterator[tuple[bytes, bytes | None]]:
        for i, op in enumerate(super().__iter__()):
            if i == self._after:
                raise _InjectedError("injected failure in the middle of a batch")
            yield op


# Keys that stress bytewise ordering: 0x00 and 0xff bytes, prefixes that are
# bytewise neighbours (b"a\xff" vs b"b"), and shorter-before-longer.
_TRICKY_KEYS = [
    b"\x00",
    b"\x00\x00",
    b"\x00\xff",
    b"\x01",
    b"\x7f",
    b"\x80",
    b"`",
    b"a",
    b"a\x00",
    b"a\x00\x00",
    b"a\x01",
    b"a\xfe",
    b"a\xff",
    b"a\xff\x00",
    b"a\xff\xff",
    b"aa",
    b"b",
    b"b\x00",
    b"\xfe\xff",
    b"\xff",
    b"\xff\x00",
    b"\xff\xff",
    b"\xff\xff\xff",
]


class StorageConformance:
    """Contract tests every ``KVStore`` backend must pass (subclass it as ``Test...``)."""

    # --- point reads and writes -------------------------------------------

    def test_factory_returns_a_kv_store(self, kv_store: KVStore) -> None:
        assert isinstance(kv_store, KVStore)

    def test_get_missing_returns_none(self, kv_store: KVStore) -> None:
        assert kv_store.get(b"nothing here") is None

    def test_put_get_delete(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"k1": b"v1", b"k2": b"v2"})
        assert kv_store.get(b"k1") == b"v1"
        assert kv_store.get(b"k2") == b"v2"
        batch = WriteBatch()
        batch.put(b"k1", b"v1b")
        batch.delete(b"k2")
        batch.delete(b"never existed")
        kv_store.write(batch)
        assert kv_store.get(b"k1") == b"v1b"
        assert kv_store.get(b"k2") is None

    def test_empty_value_is_not_absent(self, kv_store: KVStore) -> None:
        # Index entries (e.g. address -> outpoint) carry empty values.
        _put(kv_store, {b"idx": b""})
        assert kv_store.get(b"idx") == b""
        assert list(kv_store.iterate(prefix=b"idx")) == [(b"idx", b"")]

    def test_later_operation_in_a_batch_wins(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"x": b"old"})
        batch = WriteBatch()
        batch.delete(b"x")
        batch.put(b"x", b"new")
        batch.put(b"y", b"first")
        batch.delete(b"y")
        batch.put(b"z", b"1")
        batch.put(b"z", b"2")
        kv_store.write(batch)
        assert kv_store.get(b"x") == b"new"
        assert kv_store.get(b"y") is None
        assert kv_store.get(b"z") == b"2"

    def test_mixed_batches_match_a_model(self, kv_store: KVStore) -> None:
        # Small and big batches that put, delete and re-put the same keys many
        # times over: the store must always equal a dict given the same ops.
        rng = random.Random(5)
        model: dict[bytes, bytes] = {}
        for size in (3, 500, 1, 80, 1000, 10):
            batch = WriteBatch()
            for _ in range(size):
                key = bytes([rng.choice((0x00, 0x01, 0x61, 0xFF)), rng.randrange(12)])
                if rng.random() < 0.4:
                    batch.delete(key)
                    model.pop(key, None)
                else:
                    value = rng.randbytes(rng.randint(0, 3))
                    batch.put(key, value)
                    model[key] = value
            kv_store.write(batch)
            assert list(kv_store.iterate()) == sorted(model.items())
            assert list(kv_store.iterate(reverse=True)) == sorted(model.items(), reverse=True)
            assert all(kv_store.get(k) == v for k, v in model.items())

    def test_empty_batch_changes_nothing(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"a": b"1"})
        kv_store.write(WriteBatch())
        kv_store.write(WriteBatch(), sync=True)
        assert list(kv_store.iterate()) == [(b"a", b"1")]

    def test_large_values_and_many_keys(self, kv_store: KVStore) -> None:
        big = bytes(random.Random(1).getrandbits(8) for _ in range(1 << 16)) * 64  # 4 MiB
        _put(kv_store, {b"big": big})
        many = {i.to_bytes(4, "big"): i.to_bytes(4, "little") * 8 for i in range(20_000)}
        _put(kv_store, many)
        assert kv_store.get(b"big") == big
        got = list(kv_store.iterate(start=b"\x00\x00\x00\x00", stop=b"\x00\x01\x00\x00"))
        assert got == sorted(many.items())

    def test_empty_key(self, kv_store: KVStore, kv_store_allows_empty_key: bool) -> None:
        if not kv_store_allows_empty_key:
            batch = WriteBatch()
            batch.put(b"", b"v")
            with pytest.raises(StorageError):
                kv_store.write(batch)
            assert list(kv_store.iterate()) == []
            return
        _put(kv_store, {b"": b"empty", b"\x00": b"zero"})
        assert kv_store.get(b"") == b"empty"
        # The empty key sorts before every other key.
        assert [k for k, _ in kv_store.iterate()] == [b"", b"\x00"]
        assert [k for k, _ in kv_store.iterate(reverse=True)] == [b"\x00", b""]

    # --- ordering and ranges ----------------------------------------------

    def test_iteration_is_bytewise_sorted(self, kv_store: KVStore) -> None:
        rng = random.Random(7)
        data = {k: k[::-1] + b"!" for k in _TRICKY_KEYS}
        for _ in range(300):
            k = bytes(rng.choice((0, 1, 0x7F, 0x80, 0xFE, 0xFF)) for _ in range(rng.randint(1, 4)))
            data[k] = b"r" + k
        items = list(data.items())
        rng.shuffle(items)
        _put(kv_store, items)
        assert list(kv_store.iterate()) == sorted(data.items())
        assert list(kv_store.iterate(reverse=True)) == sorted(data.items(), reverse=True)

    def test_prefix_bounds_are_exact(self, kv_store: KVStore) -> None:
        data = {k: b"v" for k in _TRICKY_KEYS}
        _put(kv_store, data)

        def keys(prefix: bytes, reverse: bool = False) -> list[bytes]:
            return [k for k, _ in kv_store.iterate(prefix=prefix, reverse=reverse)]

        assert keys(b"a") == [
            b"a",
            b"a\x00",
            b"a\x00\x00",
            b"a\x01",
            b"aa",
            b"a\xfe",
            b"a\xff",
            b"a\xff\x00",
            b"a\xff\xff",
        ]
        # b"a\xff"'s upper neighbour b"b" must not leak in.
        assert keys(b"a\xff") == [b"a\xff", b"a\xff\x00", b"a\xff\xff"]
        assert keys(b"a\xff", reverse=True) == [b"a\xff\xff", b"a\xff\x00", b"a\xff"]
        assert keys(b"a\x00") == [b"a\x00", b"a\x00\x00"]
        # An all-0xff prefix has no finite upper bound.
        assert keys(b"\xff") == [b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff"]
        assert keys(b"\xff\xff", reverse=True) == [b"\xff\xff\xff", b"\xff\xff"]
        assert keys(b"\x00") == [b"\x00", b"\x00\x00", b"\x00\xff"]
        assert keys(b"b\x00\x00") == []
        assert keys(b"c") == []

    def test_start_is_inclusive_stop_exclusive(self, kv_store: KVStore) -> None:
        _put(kv_store, {bytes([i]): bytes([i]) for i in range(10)})

        def keys(**kw: object) -> list[int]:
            return [k[0] for k, _ in kv_store.iterate(**kw)]  # type: ignore[arg-type]

        assert keys(start=b"\x03", stop=b"\x06") == [3, 4, 5]
        assert keys(start=b"\x03", stop=b"\x06", reverse=True) == [5, 4, 3]
        assert keys(start=b"\x08") == [8, 9]
        assert keys(stop=b"\x02") == [0, 1]
        assert keys(stop=b"\x02", reverse=True) == [1, 0]
        assert keys(start=b"\x03\x00", stop=b"\x05\x00") == [4, 5]
        assert keys(start=b"\x05", stop=b"\x05") == []
        assert keys(start=b"\x06", stop=b"\x03") == []

    def test_prefix_with_start_stop_and_reverse_match_a_model(self, kv_store: KVStore) -> None:
        rng = random.Random(11)
        data = _random_items(rng)
        _put(kv_store, data)
        _check_ranges_against_model(kv_store, data, rng)

    def test_snapshot_ranges_match_a_model_despite_later_writes(self, kv_store: KVStore) -> None:
        # Keys written or deleted after the snapshot sit around the bounds the
        # snapshot is asked about; they must neither appear nor hide others.
        rng = random.Random(12)
        data = _random_items(rng)
        _put(kv_store, data)
        with kv_store.snapshot() as snap:
            later = WriteBatch()
            for k in rng.sample(sorted(data), len(data) // 3):
                later.delete(k)
            for k in _random_items(random.Random(13)):
                later.put(k + b"\xff", b"later")
            later.put(b"\xff" * 6, b"later")
            kv_store.write(later)
            _check_ranges_against_model(snap, data, rng)

    # --- atomicity and isolation ------------------------------------------

    def test_failed_batch_applies_nothing(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"keep": b"old", b"gone?": b"still here"})
        before = list(kv_store.iterate())
        batch = _ExplodingBatch(after=3)
        batch.put(b"keep", b"overwritten")
        batch.delete(b"gone?")
        batch.put(b"new1", b"x")
        batch.put(b"new2", b"y")  # iteration fails before this op
        with pytest.raises((_InjectedError, StorageError)):
            kv_store.write(batch, sync=True)
        assert list(kv_store.iterate()) == before
        # The store is still usable afterwards.
        _put(kv_store, {b"after": b"ok"})
        assert kv_store.get(b"after") == b"ok"

    def test_iterator_sees_the_store_as_of_its_creation(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"p/1": b"a", b"p/2": b"b", b"p/3": b"c"})
        it = kv_store.iterate(prefix=b"p/")
        first = next(it)
        batch = WriteBatch()
        batch.delete(b"p/2")
        batch.put(b"p/25", b"new")
        batch.put(b"p/3", b"changed")
        kv_store.write(batch)
        assert [first, *it] == [(b"p/1", b"a"), (b"p/2", b"b"), (b"p/3", b"c")]

    def test_snapshot_is_point_in_time(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"a": b"1", b"b": b"2"})
        with kv_store.snapshot() as snap:
            batch = WriteBatch()
            batch.put(b"a", b"1b")
            batch.delete(b"b")
            batch.put(b"c", b"3")
            kv_store.write(batch)
            assert snap.get(b"a") == b"1"
            assert snap.get(b"b") == b"2"
            assert snap.get(b"c") is None
            assert list(snap.iterate()) == [(b"a", b"1"), (b"b", b"2")]
            assert list(snap.iterate(reverse=True, start=b"b")) == [(b"b", b"2")]
        assert kv_store.get(b"a") == b"1b"
        assert list(kv_store.iterate()) == [(b"a", b"1b"), (b"c", b"3")]

    def test_snapshot_closed_raises(self, kv_store: KVStore) -> None:
        _put(kv_store, {b"a": b"1"})
        snap = kv_store.snapshot()
        snap.close()
        snap.close()  # idempotent
        with pytest.raises(StorageError):
            snap.get(b"a")

    def test_concurrent_readers_never_see_half_a_batch(self, kv_store: KVStore) -> None:
        n_keys, rounds = 2_000, 6
        prefixes = [b"big/%d/" % r for r in range(rounds)]
        firsts = [p + (0).to_bytes(4, "big") for p in prefixes]
        lasts = [p + (n_keys - 1).to_bytes(4, "big") for p in prefixes]
        violations: list[str] = []
        done = threading.Event()
        started = [threading.Event() for _ in range(2)]

        def reader(ready: threading.Event) -> None:
            while not done.is_set():
                for r, prefix in enumerate(prefixes):
                    count = sum(1 for _ in kv_store.iterate(prefix=prefix))
                    if count not in (0, n_keys):
                        violations.append(f"iterator saw {count}/{n_keys} keys of round {r}")
                    # Batches apply in op order; a torn write would show the
                    # first key before the last one.
                    if kv_store.get(firsts[r]) is not None and kv_store.get(lasts[r]) is None:
                        violations.append(f"point reads saw half of round {r}")
                ready.set()

        threads = [threading.Thread(target=reader, args=(ev,)) for ev in started]
        # Switch threads often so readers run in the middle of each write.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        try:
            for t in threads:
                t.start()
            for ev in started:
                ev.wait(timeout=30)
            for prefix in prefixes:
                batch = WriteBatch()
                for i in range(n_keys):
                    batch.put(prefix + i.to_bytes(4, "big"), b"v" * 64)
                kv_store.write(batch)
        finally:
            done.set()
            for t in threads:
                t.join()
            sys.setswitchinterval(interval)
        assert violations == [], violations[:5]
        assert sum(1 for _ in kv_store.iterate(prefix=b"big/")) == n_keys * rounds

    # --- lifecycle ----------------------------------------------------------

    def test_reopen_keeps_data(
        self, kv_store_factory: StoreFactory, kv_store_path: Path, kv_store_durable: bool
    ) -> None:
        if not kv_store_durable:
            pytest.skip("backend declares itself not durable (kv_store_durable is False)")
        store = kv_store_factory(kv_store_path)
        _put(store, {b"a": b"1", b"b": b"2"})
        batch = WriteBatch()
        batch.delete(b"a")  # a delete must survive reopen too
        batch.put(b"c", b"3")
        store.write(batch, sync=True)
        store.close()
        store = kv_store_factory(kv_store_path)
        try:
            assert list(store.iterate()) == [(b"b", b"2"), (b"c", b"3")]
        finally:
            store.close()

    def test_use_after_close_raises_storage_error(
        self, kv_store_factory: StoreFactory, kv_store_path: Path
    ) -> None:
        # A store of its own, not the kv_store fixture, which closes on teardown.
        store = kv_store_factory(kv_store_path)
        _put(store, {b"a": b"1", b"b": b"2"})
        it = store.iterate()
        assert next(it) == (b"a", b"1")
        snap = store.snapshot()
        store.close()
        store.close()  # idempotent
        with pytest.raises(StorageError):
            store.get(b"a")
        with pytest.raises(StorageError):
            list(store.iterate())
        with pytest.raises(StorageError):
            _put(store, {b"c": b"3"})
        with pytest.raises(StorageError):
            store.snapshot()
        with pytest.raises(StorageError):
            list(it)
        with pytest.raises(StorageError):
            snap.get(b"a")
        snap.close()
