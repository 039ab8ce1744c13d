"""Storage encodings: coins, outpoints, undo records round-trip; corrupt bytes are StorageError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timecoin.core.errors import StorageError
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import UtxoChanges
from timecoin.storage.codec import (
    COIN_LEN,
    UndoRecord,
    coin_records,
    decode_coin,
    decode_height,
    decode_outpoint,
    decode_undo,
    encode_coin,
    encode_height,
    encode_outpoint,
    encode_undo,
    make_coin,
)

u64 = st.integers(0, 2**64 - 1)
outpoints = st.builds(OutPoint, st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1))
coins = st.builds(Coin, u64, st.binary(min_size=20, max_size=20), u64, st.booleans())
coin_lists = st.lists(st.tuples(outpoints, coins), max_size=5).map(tuple)
undo_records = st.builds(
    UndoRecord,
    st.none() | st.tuples(u64, st.binary(min_size=32, max_size=32)),
    st.none() | st.binary(max_size=800),
    st.builds(UtxoChanges, coin_lists, coin_lists),
    st.lists(st.tuples(st.binary(max_size=10), st.none() | st.binary(max_size=10)), max_size=3).map(
        tuple
    ),
)


@given(coins)
def test_coin_round_trip(coin: Coin):
    data = encode_coin(coin)
    assert len(data) == COIN_LEN
    assert decode_coin(data) == coin


@given(outpoints)
def test_outpoint_round_trip_and_order(op: OutPoint):
    data = encode_outpoint(op)
    assert decode_outpoint(data) == op
    # Big-endian index: key order equals (txid, index) order.
    nxt = OutPoint(op.txid, op.index + 1)
    if nxt.index < 2**32:
        assert encode_outpoint(nxt) > data


@given(u64, u64)
def test_height_keys_sort_numerically(a: int, b: int):
    assert (encode_height(a) < encode_height(b)) == (a < b)
    assert decode_height(encode_height(a)) == a


@given(coin_lists)
def test_coin_records_are_the_outpoint_then_the_coin(items):
    assert coin_records(items) == [encode_outpoint(op) + encode_coin(c) for op, c in items]


@pytest.mark.parametrize(
    "item",
    [
        (OutPoint(b"\x01" * 31, 0), Coin(1, b"\x02" * 20, 1, False)),  # short txid
        (OutPoint(b"\x01" * 32, 0), Coin(1, b"\x02" * 21, 1, False)),  # long pubkey hash
        (OutPoint(b"\x01" * 32, 2**32), Coin(1, b"\x02" * 20, 1, False)),  # index > u32
        (OutPoint(b"\x01" * 32, 0), Coin(-1, b"\x02" * 20, 1, False)),  # negative amount
    ],
)
def test_coin_records_refuse_what_the_fixed_layout_cannot_hold(item):
    with pytest.raises(StorageError):
        coin_records([item])


@given(undo_records)
def test_undo_with_the_callers_records_is_the_same_bytes(record: UndoRecord):
    ch = record.changes
    assert encode_undo(record, (coin_records(ch.spent), coin_records(ch.created))) == (
        encode_undo(record)
    )


@given(undo_records)
def test_undo_round_trip(record: UndoRecord):
    assert decode_undo(encode_undo(record)) == record


@given(undo_records, st.data())
def test_truncated_undo_is_a_storage_error(record: UndoRecord, data):
    raw = encode_undo(record)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(StorageError):
        decode_undo(raw[:cut])
    with pytest.raises(StorageError):
        decode_undo(raw + b"\x00")


def test_make_coin_builds_the_same_object_as_the_constructor():
    # make_coin fills Coin's tuple directly; if Coin gains or reorders a field
    # this fails and make_coin must learn it.
    assert list(Coin._fields) == [
        "amount",
        "pubkey_hash",
        "height",
        "is_coinbase",
    ]
    fast = make_coin(5, b"\x01" * 20, 7, True)
    assert fast == Coin(5, b"\x01" * 20, 7, True)
    assert hash(fast) == hash(Coin(5, b"\x01" * 20, 7, True))
    with pytest.raises(AttributeError):
        fast.amount = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        Coin(1, b"\x00" * 19, 1),
        Coin(-1, b"\x00" * 20, 1),
        Coin(1, b"\x00" * 20, 2**64),
    ],
)
def test_unencodable_coins_are_storage_errors(bad: Coin):
    with pytest.raises(StorageError):
        encode_coin(bad)


def test_bad_outpoints_and_corrupt_bytes_are_storage_errors():
    with pytest.raises(StorageError):
        encode_outpoint(OutPoint(b"\x00" * 31, 0))
    with pytest.raises(StorageError):
        encode_outpoint(OutPoint(b"\x00" * 32, 2**32))
    with pytest.raises(StorageError):
        decode_outpoint(b"\x00" * 35)
    with pytest.raises(StorageError):
        decode_coin(b"\x00" * 36)
    with pytest.raises(StorageError):
        decode_height(b"\x00" * 7)
    with pytest.raises(StorageError):
        decode_undo(b"\x02")
