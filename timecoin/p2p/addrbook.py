"""Peer addresses: validation of host:port strings and a bounded, persisted book.

The book is persisted as one JSON value through ``AddressBookStore`` (the
node backs it with the chain store's metadata; tests use ``MemoryStore``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("timecoin.p2p")

ADDRESS_BOOK_KEY = b"p2p/addrbook/v1"
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class AddressBookStore(Protocol):
    """Key/value persistence for the address book (the node's metadata store)."""

    def get(self, key: bytes) -> bytes | None:
        """Return the stored value or None."""

    def put(self, key: bytes, value: bytes) -> None:
        """Store *value* under *key* (durability is the store's business)."""


class MemoryStore:
    """Dict-backed ``AddressBookStore`` (tests, nodes without storage)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        """Return the stored value or None."""
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        """Store *value*."""
        self.data[key] = value


def split_host_port(address: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError if malformed."""
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {address!r}")
        port_s = rest
    else:
        host, sep, port_s = address.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"bad address {address!r}")
    if not port_s.isdigit() or not int(port_s) < 65536 or not host:
        raise ValueError(f"bad address {address!r}")
    if int(port_s) == 0 and not allow_port_zero:
        raise ValueError(f"bad address {address!r}")
    return host, int(port_s)


def is_loopback_host(host: str) -> bool:
    """Tell whether *host* is localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_routable_address(address: str, *, allow_local: bool, max_len: int = 262) -> bool:
    """Tell whether *address* looks like a dialable host:port from a peer's point of view.

    Unspecified, multicast, reserved and link-local IPs are never routable;
    loopback and private ranges only with *allow_local* (local testnets).
    """
    if len(address) > max_len:
        return False
    try:
        host, _port = split_host_port(address)
    except ValueError:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host == "localhost":
            return allow_local
        return _HOSTNAME.match(host) is not None
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local:
        return False
    if ip.is_loopback or ip.is_private:
        return allow_local
    # ::1 counts as reserved in ipaddress, so this comes after the loopback case.
    return not ip.is_reserved


@dataclass(slots=True)
class BookEntry:
    """One known peer address."""

    address: str
    last_seen_ms: int
    failures: int = 0


class AddressBook:
    """node id -> address, bounded; persisted as JSON through an ``AddressBookStore``."""

    def __init__(self, store: AddressBookStore | None, capacity: int) -> None:
        self._store = store
        self._cap = capacity
        self.entries: dict[bytes, BookEntry] = {}
        self._dirty = False
        if store is not None:
            self._load(store)

    def _load(self, store: AddressBookStore) -> None:
        raw = store.get(ADDRESS_BOOK_KEY)
        if not raw:
            return
        try:
            items = json.loads(raw)
            for it in items[: self._cap]:
                nid = bytes.fromhex(it["node_id"])
                self.entries[nid] = BookEntry(
                    str(it["address"]), int(it["last_seen_ms"]), int(it.get("failures", 0))
                )
        except (ValueError, KeyError, TypeError) as exc:
            # A corrupt book only costs us known peers; seeds will refill it.
            log.warning("Ignoring unreadable address book: %s", exc)
            self.entries.clear()

    def add(self, node_id: bytes, address: str, last_seen_ms: int) -> None:
        """Insert or refresh an address; evicts the stalest entry when full."""
        cur = self.entries.get(node_id)
        if cur is not None:
            if last_seen_ms >= cur.last_seen_ms or cur.address != address:
                cur.address, cur.last_seen_ms = address, max(last_seen_ms, cur.last_seen_ms)
            self._dirty = True
            return
        if len(self.entries) >= self._cap:
            stalest = min(self.entries, key=lambda k: self.entries[k].last_seen_ms)
            del self.entries[stalest]
        self.entries[node_id] = BookEntry(address, last_seen_ms)
        self._dirty = True

    def mark_failed(self, node_id: bytes) -> None:
        """Count a failed dial; an address that keeps failing is forgotten."""
        e = self.entries.get(node_id)
        if e is None:
            return
        e.failures += 1
        if e.failures >= 10:
            del self.entries[node_id]
        self._dirty = True

    def remove(self, node_id: bytes) -> None:
        """Forget *node_id* (banned peers)."""
        if self.entries.pop(node_id, None) is not None:
            self._dirty = True

    def sample(self, n: int) -> list[tuple[bytes, BookEntry]]:
        """Up to *n* entries, most recently seen first."""
        items = sorted(self.entries.items(), key=lambda kv: -kv[1].last_seen_ms)
        return items[:n]

    def save(self) -> None:
        """Persist if anything changed."""
        if self._store is None or not self._dirty:
            return
        items = [
            {
                "node_id": k.hex(),
                "address": e.address,
                "last_seen_ms": e.last_seen_ms,
                "failures": e.failures,
            }
            for k, e in self.entries.items()
        ]
        self._store.put(ADDRESS_BOOK_KEY, json.dumps(items).encode())
        self._dirty = False
