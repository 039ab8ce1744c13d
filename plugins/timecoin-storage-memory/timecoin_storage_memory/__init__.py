"""In-memory storage backend for timed (name ``memory``): tests and throwaway devnets.

Nothing survives ``close()`` or the process; *path* is ignored and no options
are accepted.

Layout: a dict for point reads plus a sorted key list searched with ``bisect``
for range scans. Consistency for iterators and snapshots is copy-on-write: a
reader that needs a stable view (``iterate``, ``snapshot``) takes references to
the current dict and list and marks them shared; the next write copies them
before changing anything, so those readers keep their view. Writes apply under
a lock that point reads also take, so no reader ever sees part of a batch
(LevelDB gives the same guarantee by publishing a batch's sequence number only
once the whole batch is in its memtable).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

from timecoin.core.errors import ConfigError, StorageError
from timecoin.storage.hookspecs import hookimpl
from timecoin.storage.kv import WriteBatch, key_bounds

__all__ = ["NAME", "MemorySnapshot", "MemoryStore", "timed_open_storage", "timed_storage_backends"]

NAME = "memory"

_SMALL_BATCH = 64
"""Batches up to this size update the sorted key list key by key."""


class _Closed:
    """Shared closed flag, readable by iterators and snapshots after the store is gone."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


def _scan(
    keys: list[bytes],
    data: dict[bytes, bytes],
    closed: tuple[_Closed, ...],
    prefix: bytes,
    start: bytes | None,
    stop: bytes | None,
    reverse: bool,
) -> Iterator[tuple[bytes, bytes]]:
    bounds = key_bounds(prefix, start, stop)
    if bounds is None:
        return iter(())
    low, high = bounds
    lo = bisect.bisect_left(keys, low)
    hi = len(keys) if high is None else bisect.bisect_left(keys, high)
    positions = range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)

    def gen() -> Iterator[tuple[bytes, bytes]]:
        for i in positions:
            if any(c.value for c in closed):
                raise StorageError("memory store: iterator used after close")
            key = keys[i]
            yield key, data[key]

    return gen()


class MemorySnapshot:
    """A frozen view of a ``MemoryStore`` (``KVSnapshot``)."""

    __slots__ = ("_closed", "_data", "_keys", "_store_closed")

    def __init__(self, keys: list[bytes], data: dict[bytes, bytes], store_closed: _Closed) -> None:
        self._keys = keys
        self._data = data
        self._store_closed = store_closed
        self._closed = _Closed()

    def _check(self) -> None:
        if self._closed.value or self._store_closed.value:
            raise StorageError("memory snapshot is closed")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._data.get(key)

    def iterate(
        self,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return _scan(
            self._keys,
            self._data,
            (self._closed, self._store_closed),
            prefix,
            start,
            stop,
            reverse,
        )

    def close(self) -> None:
        self._closed.value = True

    def __enter__(self) -> MemorySnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryStore:
    """A ``KVStore`` held in process memory."""

    __slots__ = ("_closed", "_data", "_keys", "_lock", "_shared")

    def __init__(self, path: Path | str | None = None, **options: object) -> None:
        if options:
            raise ConfigError(
                f"the memory storage backend takes no options (got {', '.join(sorted(options))})"
            )
        self._lock = threading.Lock()
        self._keys: list[bytes] = []
        self._data: dict[bytes, bytes] = {}
        self._shared = False
        self._closed = _Closed()

    def _check(self) -> None:
        if self._closed.value:
            raise StorageError("memory store is closed")

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            self._check()
            return self._data.get(key)

    def _share(self) -> tuple[list[bytes], dict[bytes, bytes]]:
        with self._lock:
            self._check()
            self._shared = True
            return self._keys, self._data

    def iterate(
        self,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        keys, data = self._share()
        return _scan(keys, data, (self._closed,), prefix, start, stop, reverse)

    def snapshot(self) -> MemorySnapshot:
        keys, data = self._share()
        return MemorySnapshot(keys, data, self._closed)

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        # Materialise (and type-check) every operation before touching the
        # store: if producing the batch fails midway, nothing is applied.
        ops = list(batch)
        for key, value in ops:
            if type(key) is not bytes or (value is not None and type(value) is not bytes):
                raise StorageError("memory store: keys and values must be bytes")
        with self._lock:
            self._check()
            if self._shared:
                # Copy-on-write: iterators and snapshots keep the old objects.
                self._keys = list(self._keys)
                self._data = dict(self._data)
                self._shared = False
            keys, data = self._keys, self._data
            if len(ops) <= _SMALL_BATCH:
                for key, value in ops:
                    if value is None:
                        if data.pop(key, None) is not None:
                            del keys[bisect.bisect_left(keys, key)]
                    else:
                        if key not in data:
                            bisect.insort(keys, key)
                        data[key] = value
            else:
                # Big batch: one insort per key would shift the list once per
                # key (quadratic); one sort of all keys, in C, is far cheaper.
                for key, value in ops:
                    if value is None:
                        data.pop(key, None)
                    else:
                        data[key] = value
                keys[:] = sorted(data)

    def close(self) -> None:
        with self._lock:
            self._closed.value = True

    @property
    def closed(self) -> bool:
        return self._closed.value

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._data)} keys>)"


@hookimpl
def timed_open_storage(name: str, path: Path, options: Mapping[str, object]) -> MemoryStore | None:
    """Open a fresh in-memory store when the config asks for ``memory``."""
    if name != NAME:
        return None
    return MemoryStore(path, **dict(options))


@hookimpl
def timed_storage_backends() -> list[str]:
    """Offer ``memory``."""
    return [NAME]
