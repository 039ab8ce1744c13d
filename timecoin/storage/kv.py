"""The key-value interface every storage backend implements (DESIGN.md, Storage).

Rules of the interface, which ``timecoin.testing.storage_conformance`` checks:

- Keys and values are ``bytes``. Keys sort bytewise (``memcmp`` order, shorter
  first on a common prefix), exactly as LevelDB's default comparator. The empty
  key is a valid key and sorts first.
- ``iterate(prefix, start, stop, reverse)`` yields ``(key, value)`` pairs whose
  key starts with *prefix* and lies in ``[start, stop)``; *start* and *stop* are
  whole keys (not suffixes of *prefix*). An iterator sees the store as it was
  when ``iterate`` was called, whatever is written while it runs.
- ``write(batch, sync=...)`` applies every put and delete of a ``WriteBatch`` or
  none of them; no reader ever sees part of a batch. Within one batch a later
  operation on a key wins over an earlier one. ``sync=True`` returns only once
  the batch is durable (fsync) on a durable backend.
- ``snapshot()`` is a read-only, point-in-time view until closed.
- Failures inside the backend, including any use after ``close()``, raise
  ``timecoin.core.errors.StorageError``.

Everything above the interface (chain store, node) relies on these and nothing
more, so a third-party backend that passes the conformance kit is a drop-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import itemgetter
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = [
    "KVReader",
    "KVSnapshot",
    "KVStore",
    "WriteBatch",
    "key_bounds",
    "prefix_upper_bound",
]


_key_of, _value_of = itemgetter(0), itemgetter(1)
_BYTES = frozenset({bytes})
_BYTES_OR_NONE = frozenset({bytes, type(None)})


class WriteBatch:
    """An ordered list of puts and deletes, applied atomically by ``KVStore.write``.

    A plain value object: building one touches no store, so a caller can
    assemble a whole block commit and hand it over in one call. Operations are
    kept in order; iterating yields ``(key, value)`` with ``value is None`` for a
    delete.
    """

    __slots__ = ("_ops",)

    def __init__(self, ops: Iterable[tuple[bytes, bytes | None]] = ()) -> None:
        self._ops: list[tuple[bytes, bytes | None]] = []
        for key, value in ops:
            if value is None:
                self.delete(key)
            else:
                self.put(key, value)

    def put(self, key: bytes, value: bytes) -> None:
        """Set *key* to *value* when the batch is written."""
        # Reject str and friends here, where the caller's mistake is, rather than
        # deep inside a backend halfway through applying the batch.
        if type(key) is not bytes:
            key = _as_bytes(key, "key")
        if type(value) is not bytes:
            value = _as_bytes(value, "value")
        self._ops.append((key, value))

    def extend(self, ops: list[tuple[bytes, bytes | None]]) -> None:
        """Append many puts (``(key, value)``) and deletes (``(key, None)``) in order.

        The same checks as ``put``/``delete``, without a method call per
        operation (a block commit writes five or so per transaction): the
        types of all keys and of all values are collected in C.
        """
        if set(map(type, map(_key_of, ops))) <= _BYTES and (
            set(map(type, map(_value_of, ops))) <= _BYTES_OR_NONE
        ):
            self._ops.extend(ops)
            return
        for k, v in ops:  # slow path: convert or raise like put/delete
            if v is None:
                self.delete(k)
            else:
                self.put(k, v)

    def delete(self, key: bytes) -> None:
        """Remove *key* (if present) when the batch is written."""
        if type(key) is not bytes:
            key = _as_bytes(key, "key")
        self._ops.append((key, None))

    def __iter__(self) -> Iterator[tuple[bytes, bytes | None]]:
        return iter(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def __repr__(self) -> str:
        return f"WriteBatch(<{len(self._ops)} ops>)"


def _as_bytes(obj: object, what: str) -> bytes:
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    raise TypeError(f"{what} must be bytes, not {type(obj).__name__}")


@runtime_checkable
class KVReader(Protocol):
    """Point reads and ordered range scans (a store or one of its snapshots)."""

    def get(self, key: bytes) -> bytes | None:
        """Return the value of *key*, or None if it is absent."""
        ...

    def iterate(
        self,
        prefix: bytes = b"",
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Pairs with ``key.startswith(prefix)`` and ``start <= key < stop``, sorted bytewise.

        Descending when *reverse*. The view is fixed when this is called.
        """
        ...


@runtime_checkable
class KVSnapshot(KVReader, Protocol):
    """A consistent, read-only view of a store at one point in time."""

    def close(self) -> None:
        """Release the view; further reads raise StorageError. Idempotent."""
        ...

    def __enter__(self) -> KVSnapshot: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class KVStore(KVReader, Protocol):
    """A storage backend: what ``timed_open_storage`` returns."""

    def write(self, batch: WriteBatch, *, sync: bool = False) -> None:
        """Apply every operation of *batch* or none (a failure leaves the store unchanged)."""
        ...

    def snapshot(self) -> KVSnapshot:
        """Open a point-in-time view; the caller closes it (or uses ``with``)."""
        ...

    def close(self) -> None:
        """Release the backend; afterwards every call raises StorageError. Idempotent."""
        ...


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    r"""Return the smallest key greater than every key that starts with *prefix*.

    None when there is no such key (empty prefix or all 0xff bytes): the range
    is then unbounded above. ``b"a\xff"`` gives ``b"b"``, so the neighbour
    ``b"b"`` itself is excluded.
    """
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes((trimmed[-1] + 1,))


def key_bounds(
    prefix: bytes, start: bytes | None, stop: bytes | None
) -> tuple[bytes, bytes | None] | None:
    """Combine *prefix* and ``[start, stop)`` into one half-open key range.

    Returns ``(low, high)`` with *high* None for unbounded, or None when the
    range is empty (so a backend can skip opening an iterator). Backends share
    this so every one of them draws the boundaries identically.
    """
    low = prefix
    if start is not None and start > low:
        low = start
    high = prefix_upper_bound(prefix)
    if stop is not None and (high is None or stop < high):
        high = stop
    if high is not None and low >= high:
        return None
    return low, high
