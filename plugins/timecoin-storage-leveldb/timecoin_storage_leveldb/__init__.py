"""LevelDB storage backend for timed (name ``leveldb``, the default).

Built on plyvel. LevelDB gives everything the KV interface asks for natively:
bytewise key order, atomic ``WriteBatch`` (one log record, replayed whole or
not at all after a crash), ``sync`` writes, and snapshots; iterators read from
an implicit snapshot taken when they are created.

Options (``[storage.options]`` in the node config):

``create_if_missing`` (bool, default true)
    Create the database if *path* holds none.
``lru_cache_size`` (int bytes, default 64 MiB)
    Block cache shared by reads.
``bloom_filter_bits`` (int, default 10)
    Bits per key of the bloom filter; makes point reads of absent keys (UTXO
    misses, tx-index misses) cost no disk seek. 0 disables it.
``write_buffer_size`` (int bytes, default 64 MiB)
    Memtable size before a flush to a sorted table. Larger than LevelDB's 4 MiB
    default: a busy chain writes every block's bytes, coins, address
    and tx-index entries and undo record (about 600 bytes per payment), and
    with a 1,000,000-coin store the compaction thread took 0.28 of a core at
    16 MiB and 0.13 at 64 MiB (``bench/node.py --txs 300000``). Costs up to
    twice this in memory while a full memtable is written out.
``compression`` (``"none"`` or ``"snappy"``, default ``"none"``)
    Block compression of sorted tables. Off, as Bitcoin Core has it for its
    chainstate: hashes, keys and signatures do not compress, and compacting a
    busy devnet's store with Snappy took about a third of a core
    (``bench/node.py``, 500 ms blocks). Tables written either way stay readable.
``max_file_size`` (int bytes, default 32 MiB)
    Target size of one sorted table (LevelDB's default is 2 MiB; Bitcoin Core
    uses 32 MiB): fewer, larger files to open and compact.

Closing the store while other threads still use it is not safe (LevelDB's
rule); the async wrapper drains its executor first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import plyvel  # type: ignore[import-untyped]

from timecoin.core.errors import ConfigError, StorageError
from timecoin.storage.hookspecs import hookimpl
from timecoin.storage.kv import WriteBatch, key_bounds

__all__ = [
    "NAME",
    "LevelDBSnapshot",
    "LevelDBStore",
    "timed_open_storage",
    "timed_storage_backends",
]

NAME = "leveldb"

_DEFAULTS: dict[str, Any] = {
    "create_if_missing": True,
    "lru_cache_size": 64 * 1024 * 1024,
    "bloom_filter_bits": 10,
    "write_buffer_size": 64 * 1024 * 1024,
    "compression": "none",
    "max_file_size": 32 * 1024 * 1024,
}
_COMPRESSION = {"none": None, "snappy": "snappy"}

# plyvel raises RuntimeError for use after close and plyvel.Error (an OSError
# for I/O, CorruptionError, ...) for LevelDB failures; both become StorageError.
_BACKEND_ERRORS = (plyvel.Error, RuntimeError)


def _forward(it: Any) -> Iterator[tuple[bytes, bytes]]:
    try:
        with it:
            yield from it
    except _BACKEND_ERRORS as e:
        raise StorageError(f"leveldb iteration failed: {e}") from e


def _backward(raw: Any, low: bytes, high: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    # plyvel's own reverse iterator drops keys when a bound lies past the last
    # key visible in a snapshot (keys written after the snapshot confuse its
    # seek), so reverse scans walk a raw iterator: seek to the first key >=
    # high, step back once, then prev() down to low.
    try:
        if high is None:
            raw.seek_to_last()
        else:
            raw.seek(high)
            if raw.valid():
                raw.prev()
            else:
                raw.seek_to_last()
        while raw.valid():
            key = raw.key()
            if key < low:
                break
            yield key, raw.value()
            raw.prev()
    except _BACKEND_ERRORS as e:
        raise StorageError(f"leveldb iteration failed: {e}") from e
    finally:
        try:
            raw.close()
        except _BACKEND_ERRORS:
            pass


def _iterate(
    source: Any,
    prefix: bytes,
    start: bytes | None,
    stop: bytes | None,
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    bounds = key_bounds(prefix, start, stop)
    if bounds is None:
        return iter(())
    low, high = bounds
    try:
        # Created here, not lazily inside the generator, so the implicit
        # snapshot is taken when iterate() is called.
        if reverse:
            return _backward(source.raw_iterator(), low, high)
        return _forward(source.iterator(start=low, stop=high))
    except _BACKEND_ERRORS as e:
        raise StorageError(f"leveldb iterator: {e}") from e


class LevelDBSnapshot:
    """A LevelDB snapshot (``KVSnapshot``)."""

    __slots__ = ("_snap",)

    def __init__(self, snap: Any) -> None:
        self._snap = snap

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._snap.get(key)  # type: ignore[no-any-return]
        except _BACKEND_ERRORS as e:
            raise StorageError(f"leveldb snapshot get: {e}") from e

    def iterate(
        self,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._snap, prefix, start, stop, reverse)

    def close(self) -> None:
        try:
            self._snap.close()
        except _BACKEND_ERRORS:
            pass  # already released (e.g. the database was closed first)

    def __enter__(self) -> LevelDBSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LevelDBStore:
    """A ``KVStore`` on one LevelDB database directory."""

    __slots__ = ("_db", "path")

    def __init__(self, path: Path | str, **options: Any) -> None:
        unknown = sorted(set(options) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"unknown leveldb option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_DEFAULTS))}"
            )
        opts = {**_DEFAULTS, **options}
        for key in ("lru_cache_size", "bloom_filter_bits", "write_buffer_size", "max_file_size"):
            value = opts[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"leveldb option {key} must be a non-negative integer")
        if opts["compression"] not in _COMPRESSION:
            raise ConfigError(
                f"leveldb option compression must be one of {', '.join(_COMPRESSION)}, "
                f"not {opts['compression']!r}"
            )
        if not isinstance(opts["create_if_missing"], bool):
            raise ConfigError("leveldb option create_if_missing must be a boolean")
        self.path = Path(path)
        try:
            if opts["create_if_missing"]:
                self.path.mkdir(parents=True, exist_ok=True)
            self._db = plyvel.DB(
                str(self.path),
                create_if_missing=opts["create_if_missing"],
                lru_cache_size=opts["lru_cache_size"] or None,
                bloom_filter_bits=opts["bloom_filter_bits"],
                write_buffer_size=opts["write_buffer_size"] or None,
                compression=_COMPRESSION[opts["compression"]],
                max_file_size=opts["max_file_size"] or None,
            )
        except (plyvel.Error, OSError) as e:
            raise StorageError(f"cannot open leveldb at {self.path}: {e}") from e

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._db.get(key)  # type: ignore[no-any-return]
        except _BACKEND_ERRORS as e:
            raise StorageError(f"leveldb get: {e}") from e

    def iterate(
        self,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        return _iterate(self._db, prefix, start, stop, reverse)

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        try:
            # transaction=True: if anything raises while the batch is being
            # filled, nothing is written. LevelDB then applies the batch as one
            # log record, so a crash leaves all of it or none of it.
            with self._db.write_batch(transaction=True, sync=sync) as wb:
                put, delete = wb.put, wb.delete
                for key, value in batch:
                    if value is None:
                        delete(key)
                    else:
                        put(key, value)
        except _BACKEND_ERRORS as e:
            raise StorageError(f"leveldb write: {e}") from e

    def snapshot(self) -> LevelDBSnapshot:
        try:
            return LevelDBSnapshot(self._db.snapshot())
        except _BACKEND_ERRORS as e:
            raise StorageError(f"leveldb snapshot: {e}") from e

    def close(self) -> None:
        self._db.close()

    @property
    def closed(self) -> bool:
        return bool(self._db.closed)

    def __repr__(self) -> str:
        return f"LevelDBStore({str(self.path)!r})"


@hookimpl
def timed_open_storage(name: str, path: Path, options: Mapping[str, object]) -> LevelDBStore | None:
    """Open LevelDB when the config asks for ``leveldb``."""
    if name != NAME:
        return None
    return LevelDBStore(path, **dict(options))


@hookimpl
def timed_storage_backends() -> list[str]:
    """Offer ``leveldb``."""
    return [NAME]
