"""MuHash3072: Bitcoin Core's test vectors, algebraic properties, and the UTXO element."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timecoin.core import muhash
from timecoin.core.errors import DecodeError
from timecoin.core.muhash import (
    BYTE_SIZE,
    COIN_ELEMENT_SIZE,
    MODULUS,
    MuHash3072,
    apply_changes,
    chacha20_keystream_384,
    coin_element,
    element_to_num,
    elements_product,
    mulmod,
    undo_changes,
)
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import UtxoChanges

# --- Bitcoin Core vectors (src/test/crypto_tests.cpp, muhash_tests) -----------


def from_int(i: int) -> MuHash3072:
    """Core's ``FromInt``: the set holding the 32-byte string {i, 0, ..., 0}."""
    return MuHash3072.of(bytes([i]) + bytes(31))


# uint256S("10d3...") in Core is display order: the raw digest reversed.
CORE_DIGEST_DISPLAY = "10d312b100cbd32ada024a6646e40d3482fcff103668d2625f10002a607d5863"

CORE_SER_NUMERATOR = (
    "1fa093295ea30a6a3acdc7b3f770fa538eff537528e990e2910e40bbcfd7f6696b1256901929094694b56316de342f593303"
    "dd12ac43e06dce1be1ff8301c845beb15468fff0ef002dbf80c29f26e6452bccc91b5cb9437ad410d2a67ea847887fa3c6"
    "a6553309946880fe20db2c73fe0641adbd4e86edfee0d9f8cd0ee1230898873dc13ed8ddcaf045c80faa082774279007a2"
    "253f8922ee3ef361d378a6af3ddaf180b190ac97e556888c36b3d1fb1c85aab9ccd46e3deaeb7b7cf5db067a7e9ff86b65"
    "8cf3acd6662bbcce37232daa753c48b794356c020090c831a8304416e2aa7ad633c0ddb2f11be1be316a81be7f7e472071"
    "c042cb68faef549c221ebff209273638b741aba5a81675c45a5fa92fea4ca821d7a324cb1e1a2ccd3b76c4228ec8066dad"
    "2a5df6e1bd0de45c7dd5de8070bdb46db6c554cf9aefc9b7b2bbf9f75b1864d9f95005314593905c0109b71f703d49944a"
    "e94477b51dac10a816bb6d1c700bafabc8bd86fac8df24be519a2f2836b16392e18036cb13e48c5c"
)
ONE_384_HEX = "01" + "00" * (BYTE_SIZE - 1)

# Core's overflow vector: numerator all 0xff (>= the modulus), denominator 1;
# compared through HexStr, i.e. raw byte order.
CORE_OVERFLOW_DIGEST = "3a31e6903aff0de9f62f9a9f7f8b861de76ce2cda09822b90014319ae5dc2271"


def test_core_vector_combine_divide() -> None:
    acc = from_int(0)
    acc.combine(from_int(1))
    acc.subtract(from_int(2))
    assert acc.digest()[::-1].hex() == CORE_DIGEST_DISPLAY


def test_core_vector_insert_remove() -> None:
    acc = from_int(0)
    acc.insert(bytes([1]) + bytes(31))
    acc.remove(bytes([2]) + bytes(31))
    assert acc.digest()[::-1].hex() == CORE_DIGEST_DISPLAY


def test_core_vector_serialization() -> None:
    serchk = from_int(1)
    serchk.combine(from_int(2))
    assert serchk.serialize().hex() == CORE_SER_NUMERATOR + ONE_384_HEX
    deser = MuHash3072.deserialize(serchk.serialize())
    assert deser.digest() == serchk.digest()
    assert deser == serchk


def test_core_vector_overflow() -> None:
    h = MuHash3072.deserialize(b"\xff" * BYTE_SIZE + bytes.fromhex(ONE_384_HEX))
    assert h.digest().hex() == CORE_OVERFLOW_DIGEST


def test_core_property_xy_over_yx_is_empty() -> None:
    # Core's loop: z = X*Y / (Y*X) finalizes to the empty set's digest.
    x, y = from_int(5), from_int(9)
    z = MuHash3072()
    z.combine(x)
    z.combine(y)
    y.combine(x)
    z.subtract(y)
    assert z.digest() == MuHash3072().digest()


def test_python_framework_vector() -> None:
    # test/functional/test_framework/crypto/muhash.py self-test (same value as the C++ one).
    h = MuHash3072()
    h.insert(b"\x00" * 32)
    h.insert(b"\x01" + b"\x00" * 31)
    h.remove(b"\x02" + b"\x00" * 31)
    assert h.digest()[::-1].hex() == CORE_DIGEST_DISPLAY


# --- ChaCha20 mapping -------------------------------------------------------

# RFC 8439 appendix A.1, test vectors 1 and 2: all-zero key and nonce, counters 0 and 1.
RFC8439_ZERO_BLOCK0 = (
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
)
RFC8439_ZERO_BLOCK1 = (
    "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed"
    "29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
)


def test_chacha20_keystream_matches_rfc8439() -> None:
    ks = chacha20_keystream_384(bytes(32))
    assert len(ks) == BYTE_SIZE
    assert ks[:64].hex() == RFC8439_ZERO_BLOCK0
    assert ks[64:128].hex() == RFC8439_ZERO_BLOCK1


def test_element_is_keystream_of_sha256_little_endian() -> None:
    data = b"timecoin"
    ks = chacha20_keystream_384(hashlib.sha256(data).digest())
    assert element_to_num(data) == int.from_bytes(ks, "little")


# --- arithmetic ---------------------------------------------------------------

big = st.integers(min_value=0, max_value=2**3072 - 1)


@given(big, big)
def test_mulmod_matches_python_mod(a: int, b: int) -> None:
    assert mulmod(a, b) == (a * b) % MODULUS


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (2**3072 - 1, 2**3072 - 1),
        (MODULUS, 5),
        (MODULUS - 1, MODULUS - 1),
        (MODULUS + 1, MODULUS + 1),
        (0, 2**3072 - 1),
        (1, MODULUS),
    ],
)
def test_mulmod_edges(a: int, b: int) -> None:
    assert mulmod(a, b) == (a * b) % MODULUS


# --- properties ---------------------------------------------------------------

elements = st.lists(st.binary(max_size=80), max_size=12)


@settings(max_examples=40)
@given(elements, st.binary(max_size=80))
def test_insert_then_remove_restores_digest(items: list[bytes], extra: bytes) -> None:
    h = MuHash3072.of(*items)
    before = h.digest()
    h.insert(extra)
    assert h.digest() != before
    h.remove(extra)
    assert h.digest() == before


@settings(max_examples=40)
@given(elements, st.randoms(use_true_random=False))
def test_order_independent(items: list[bytes], rnd: object) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert MuHash3072.of(*items).digest() == MuHash3072.of(*shuffled).digest()


@settings(max_examples=40)
@given(elements, elements)
def test_combine_is_union(a: list[bytes], b: list[bytes]) -> None:
    h = MuHash3072.of(*a)
    h.combine(MuHash3072.of(*b))
    assert h.digest() == MuHash3072.of(*a, *b).digest()


@settings(max_examples=40)
@given(elements, elements)
def test_serialize_round_trip(ins: list[bytes], rem: list[bytes]) -> None:
    h = MuHash3072.of(*ins)
    for r in rem:
        h.remove(r)
    blob = h.serialize()
    assert len(blob) == 2 * BYTE_SIZE
    back = MuHash3072.deserialize(blob)
    assert back.serialize() == blob
    assert back.digest() == h.digest()
    h.normalize()
    assert MuHash3072.deserialize(h.serialize()[:BYTE_SIZE]).digest() == back.digest()


def test_multiset_semantics() -> None:
    # A multiset: inserting twice differs from once; removing once leaves one.
    once, twice = MuHash3072.of(b"a"), MuHash3072.of(b"a", b"a")
    assert once.digest() != twice.digest()
    twice.remove(b"a")
    assert twice == once
    assert MuHash3072() != once


def test_digest_does_not_mutate_and_copy_is_independent() -> None:
    h = MuHash3072.of(b"x")
    h.remove(b"y")
    blob = h.serialize()
    h.digest()
    assert h.serialize() == blob
    c = h.copy()
    c.insert(b"z")
    assert h.serialize() == blob
    assert c != h


@pytest.mark.parametrize(
    "blob", [b"", bytes(10), bytes(383), bytes(385), bytes(767), bytes(769), bytes(768)]
)
def test_deserialize_rejects_bad_state(blob: bytes) -> None:
    with pytest.raises(DecodeError):
        MuHash3072.deserialize(blob)


def test_deserialize_rejects_zero_denominator() -> None:
    with pytest.raises(DecodeError):
        MuHash3072.deserialize(bytes.fromhex(ONE_384_HEX) + bytes(BYTE_SIZE))
    with pytest.raises(DecodeError):
        MuHash3072.deserialize(MODULUS.to_bytes(BYTE_SIZE, "little"))


# --- the UTXO element ---------------------------------------------------------


def _coin(i: int, *, coinbase: bool = False) -> tuple[OutPoint, Coin]:
    return (
        OutPoint(hashlib.sha256(i.to_bytes(4, "big")).digest(), i % 3),
        Coin(amount=1000 + i, pubkey_hash=bytes([i % 256]) * 20, height=i, is_coinbase=coinbase),
    )


def test_coin_element_layout() -> None:
    op = OutPoint(bytes(range(32)), 7)
    coin = Coin(amount=500_000_000, pubkey_hash=b"\xaa" * 20, height=42, is_coinbase=True)
    el = coin_element(op, coin)
    assert len(el) == COIN_ELEMENT_SIZE == 73
    assert el.hex() == (
        bytes(range(32)).hex()
        + "07000000"  # index u32 LE
        + "2a00000000000000"  # height u64 LE
        + "01"  # is_coinbase
        + "0065cd1d00000000"  # 500,000,000 units u64 LE
        + "aa" * 20
    )
    # Every field is committed to.
    variants = [
        (OutPoint(op.txid, 8), coin),
        (op, Coin(coin.amount, coin.pubkey_hash, 43, True)),
        (op, Coin(coin.amount, coin.pubkey_hash, 42, False)),
        (op, Coin(coin.amount + 1, coin.pubkey_hash, 42, True)),
        (op, Coin(coin.amount, b"\xab" * 20, 42, True)),
    ]
    assert len({coin_element(o, c) for o, c in variants} | {el}) == len(variants) + 1


@pytest.mark.parametrize(
    ("op", "coin"),
    [
        (OutPoint(bytes(31), 0), Coin(1, bytes(20), 0)),
        (OutPoint(bytes(32), 0), Coin(1, bytes(19), 0)),
        (OutPoint(bytes(32), 2**32), Coin(1, bytes(20), 0)),
        (OutPoint(bytes(32), 0), Coin(-1, bytes(20), 0)),
        (OutPoint(bytes(32), 0), Coin(2**64, bytes(20), 0)),
    ],
)
def test_coin_element_rejects_impossible_fields(op: OutPoint, coin: Coin) -> None:
    with pytest.raises(ValueError):
        coin_element(op, coin)


def test_apply_and_undo_changes() -> None:
    utxos = dict(_coin(i) for i in range(6))
    h = MuHash3072.of(*(coin_element(o, c) for o, c in utxos.items()))
    start = h.digest()
    spent = tuple(list(utxos.items())[:2])
    created = (_coin(100, coinbase=True), _coin(101))
    changes = UtxoChanges(spent=spent, created=created)
    apply_changes(h, changes)
    after = {**{o: c for o, c in utxos.items() if o not in dict(spent)}, **dict(created)}
    assert h.digest() == MuHash3072.of(*(coin_element(o, c) for o, c in after.items())).digest()
    undo_changes(h, changes)
    assert h.digest() == start


def test_apply_changes_equals_one_insert_or_remove_per_coin() -> None:
    # apply_changes writes coin_element, element_to_num and mulmod out in one
    # loop; the state must be exactly what the composed functions give.
    base = MuHash3072.of(b"a", b"b")
    spent = tuple(_coin(i) for i in range(5))
    created = tuple(_coin(i, coinbase=i % 2 == 0) for i in range(5, 12))
    fast = base.copy()
    apply_changes(fast, UtxoChanges(spent=spent, created=created))
    slow = base.copy()
    for op, coin in spent:
        slow.remove(coin_element(op, coin))
    for op, coin in created:
        slow.insert(coin_element(op, coin))
    assert fast.serialize() == slow.serialize()


@pytest.mark.parametrize(
    ("op", "coin"),
    [
        (OutPoint(bytes(31), 0), Coin(1, bytes(20), 0)),
        (OutPoint(bytes(32), 2**32), Coin(1, bytes(20), 0)),
        (OutPoint(bytes(32), 0), Coin(-1, bytes(20), 0)),
    ],
)
def test_apply_changes_rejects_impossible_fields(op: OutPoint, coin: Coin) -> None:
    h = MuHash3072()
    with pytest.raises(ValueError):
        apply_changes(h, UtxoChanges(spent=(), created=((op, coin),)))
    with pytest.raises(ValueError):
        apply_changes(h, UtxoChanges(spent=((op, coin),), created=()))


def test_elements_product_keystream_fast_path_equals_the_public_cipher(monkeypatch) -> None:
    # elements_product re-keys one ChaCha20 object through cryptography's context
    # constructor; with the pinned cryptography that path must be the one taken,
    # and it must give exactly what the public Cipher API gives.
    assert muhash._create_encryption_ctx is not None
    elements = b"".join(coin_element(*_coin(i, coinbase=i % 3 == 0)) for i in range(40))
    fast = elements_product(elements)
    monkeypatch.setattr(muhash, "_create_encryption_ctx", None)
    assert elements_product(elements) == fast
    slow = MuHash3072()
    for i in range(0, len(elements), COIN_ELEMENT_SIZE):
        slow.insert(elements[i : i + COIN_ELEMENT_SIZE])
    assert slow.serialize()[:BYTE_SIZE] == int(fast).to_bytes(BYTE_SIZE, "little")


def test_elements_product_rejects_partial_elements() -> None:
    with pytest.raises(ValueError):
        elements_product(bytes(COIN_ELEMENT_SIZE + 1))
    assert elements_product(b"") == 1
