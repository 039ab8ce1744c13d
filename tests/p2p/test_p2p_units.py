"""The small pure parts of the p2p layer: buckets, bans, seen-set, addresses, framing."""

from __future__ import annotations

import json

import pytest

from timecoin.p2p import AddressBook, MemoryStore, Misbehaviour, is_routable_address
from timecoin.p2p.addrbook import split_host_port
from timecoin.p2p.limits import BanList, SeenCache, TokenBucket
from timecoin.p2p.network import _ld, _split_block_response


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_refills_at_its_rate_up_to_burst() -> None:
    clock = Clock()
    b = TokenBucket(rate_per_s=2, burst=3, clock=clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    clock.t = 0.5
    assert b.take() and not b.take()
    clock.t = 100.0
    assert sum(b.take() for _ in range(10)) == 3


def test_ban_list_expires_and_unbans() -> None:
    clock = Clock()
    bans = BanList(clock, max_entries=2)
    bans.ban(b"a", 10)
    assert bans.is_banned(b"a") and not bans.is_banned(b"b")
    clock.t = 10.0
    assert not bans.is_banned(b"a")
    bans.ban("1.2.3.4", 5)
    assert bans.unban("1.2.3.4") and not bans.unban("1.2.3.4")
    bans.ban(b"x", 1)
    bans.ban(b"y", 100)
    bans.ban(b"z", 50)  # bounded: the ban ending soonest goes
    assert set(bans.entries()) == {b"y", b"z"}


def test_seen_cache_is_bounded_and_forgets_oldest() -> None:
    c = SeenCache(3)
    assert all(c.add(bytes([i])) for i in range(3))
    assert not c.add(b"\x00")
    c.add(b"\x03")
    assert len(c) == 3 and b"\x01" not in c and b"\x00" in c


@pytest.mark.parametrize(
    ("address", "local", "ok"),
    [
        ("8.8.8.8:24000", False, True),
        ("seed.timecoin.example:24000", False, True),
        ("[2001:4860::8888]:24000", False, True),
        ("127.0.0.1:24000", False, False),
        ("127.0.0.1:24000", True, True),
        ("192.168.1.4:24000", False, False),
        ("0.0.0.0:24000", True, False),
        ("224.0.0.1:24000", True, False),
        ("8.8.8.8:0", False, False),
        ("8.8.8.8:70000", False, False),
        ("8.8.8.8", False, False),
        ("no spaces allowed:1", False, False),
        ("a" * 300 + ":1", False, False),
        ("[::1]:5", True, True),
    ],
)
def test_routable_addresses(address: str, local: bool, ok: bool) -> None:
    assert is_routable_address(address, allow_local=local) is ok


def test_split_host_port() -> None:
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port("h:0", allow_port_zero=True) == ("h", 0)
    for bad in ("h", "h:", ":80", "a:b:80", "[::1]80", "h:x"):
        with pytest.raises(ValueError):
            split_host_port(bad)


def test_address_book_is_bounded_and_persisted() -> None:
    store = MemoryStore()
    book = AddressBook(store, capacity=2)
    book.add(b"a" * 20, "8.8.8.8:1", 100)
    book.add(b"b" * 20, "8.8.8.8:2", 200)
    book.add(b"c" * 20, "8.8.8.8:3", 300)  # evicts the stalest (a)
    book.save()
    again = AddressBook(store, capacity=10)
    assert {k: e.address for k, e in again.entries.items()} == {
        b"b" * 20: "8.8.8.8:2",
        b"c" * 20: "8.8.8.8:3",
    }
    for _ in range(10):
        again.mark_failed(b"b" * 20)
    assert b"b" * 20 not in again.entries
    store.put(b"p2p/addrbook/v1", b"{not json")
    assert AddressBook(store, capacity=10).entries == {}


def test_block_response_framing_round_trips_and_rejects_garbage() -> None:
    block, commit = b"\x0a\x03abc", b"\x08\x05"
    assert _split_block_response(_ld(1, block) + _ld(2, commit)) == (block, commit)
    big = b"x" * 300
    assert _split_block_response(_ld(2, big) + _ld(1, big)) == (big, big)
    for bad in (
        _ld(1, block),
        _ld(1, block) + _ld(1, block) + _ld(2, commit),
        _ld(3, block) + _ld(1, block) + _ld(2, commit),
        (_ld(1, block) + _ld(2, commit))[:-1],
        b"\x08\x01",
        b"\xff" * 12,
    ):
        with pytest.raises(Misbehaviour):
            _split_block_response(bad)


def test_group_partition_is_one_schedule_for_every_node() -> None:
    from timecoin.p2p import FaultSchedule
    from timecoin.p2p.faults import DROP

    a, b, c, d, x = (bytes([i]) * 20 for i in range(5))
    rule = {
        "kind": "partition",
        "start_s": 10,
        "end_s": 20,
        "groups": [[a.hex(), b.hex()], [c.hex(), d.hex()]],
    }
    text = json.dumps({"rules": [rule]})
    s = FaultSchedule.from_json(text)
    assert s.decide(b, 15, local_id=a) == 0.0
    assert s.decide(c, 15, local_id=a) == DROP
    assert s.decide(a, 15, local_id=d) == DROP and s.decide(c, 15, local_id=d) == 0.0
    # A node in no group is cut from every listed node, and they from it.
    assert s.is_partitioned(a, 15, local_id=x) and s.is_partitioned(x, 15, local_id=a)
    assert not s.is_partitioned(c, 25, local_id=a)  # healed
