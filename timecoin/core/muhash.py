"""MuHash3072: the rolling multiset hash behind the UTXO-set commitment.

This is Bitcoin Core's construction (src/crypto/muhash.{h,cpp}, used by
``gettxoutsetinfo muhash`` and the coinstats index), bit for bit, so its test
vectors apply (tests/unit/test_muhash.py):

* An element ``data`` maps to a 3072-bit number: the first 384 bytes of the
  ChaCha20 keystream (RFC 8439, block counter 0, all-zero nonce) keyed with
  SHA-256(data), read little-endian.
* The set is the product of its elements modulo the prime
  ``p = 2^3072 - 1103717``. Removal multiplies a separate denominator, so
  insert and remove are one modular multiplication each; the only modular
  inverse happens when a digest is taken.
* digest = SHA-256(384-byte little-endian encoding of numerator/denominator).

Why a multiset hash: the digest depends only on which coins exist, not on
the order they were added, and a block updates it in time proportional to
the coins it touches. Nodes, snapshots and crash recovery compare one
32-byte value to prove they hold the same UTXO set (DESIGN.md, Protocol).

Each UTXO enters the set as ``coin_element(outpoint, coin)``, a fixed 73-byte
layout documented in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import gmpy2
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography's own constructor of a cipher context, under its public ``Cipher``
    from cryptography.hazmat.bindings._rust import openssl as _rust_openssl

    _create_encryption_ctx: Any = _rust_openssl.ciphers.create_encryption_ctx
except (ImportError, AttributeError):  # another layout: the public path only
    _create_encryption_ctx = None

from timecoin.core.errors import DecodeError
from timecoin.core.types import ADDRESS_PAYLOAD_LEN, HASH_LEN, Coin, OutPoint

if TYPE_CHECKING:  # only for annotations: keeps utxo.py free to import this module
    from timecoin.core.utxo import UtxoChanges

MODULUS = 2**3072 - 1103717
"""The largest 3072-bit safe prime of the form 2^3072 - c, as Bitcoin Core uses."""

Num = Any
"""A number modulo ``MODULUS``: a ``gmpy2.mpz`` (GMP), which compares equal to ``int``."""

BYTE_SIZE = 384
"""Bytes in one 3072-bit number."""

SERIALIZED_SIZE = 2 * BYTE_SIZE
"""Bytes of a serialized state: numerator || denominator, each little-endian."""

COIN_ELEMENT_SIZE = HASH_LEN + 4 + 8 + 1 + 8 + ADDRESS_PAYLOAD_LEN
"""Bytes of one ``coin_element``: 73."""

_ZERO_KEYSTREAM_INPUT = bytes(BYTE_SIZE)
# cryptography's ChaCha20 takes OpenSSL's 16-byte IV: a 32-bit little-endian
# block counter followed by the 96-bit RFC 8439 nonce. All zeros gives counter
# 0 and nonce 0, exactly Bitcoin Core's ChaCha20 with a zero IV.
_ZERO_IV = bytes(16)
_COIN_LAYOUT = struct.Struct("<32sIQBQ20s")
_P = gmpy2.mpz(MODULUS)
_MASK = gmpy2.mpz((1 << 3072) - 1)
_C = gmpy2.mpz(2**3072 - MODULUS)
_ONE = gmpy2.mpz(1)
_MPZ_LE = b"\x01\x01"
"""``gmpy2.from_binary`` header for a non-negative mpz; little-endian magnitude follows."""


def mulmod(a: Num, b: Num) -> Num:
    """Return ``a * b mod MODULUS`` for 0 <= a, b < 2^3072.

    Uses 2^3072 = C (mod p) with C = 1103717 instead of a general division:
    two folds bring a 6144-bit product below 2^3072 + 2^42 < 2p, so one
    conditional subtraction finishes. On GMP numbers this is about 1.4 us,
    five times CPython's own ``int`` (7 us), and it is the per-coin cost of
    every block.
    """
    x = a * b
    x = (x & _MASK) + (x >> 3072) * _C
    x = (x & _MASK) + (x >> 3072) * _C
    return x - _P if x >= _P else x


def chacha20_keystream_384(key: bytes) -> bytes:
    """Return the first 384 ChaCha20 keystream bytes for *key* (counter 0, zero nonce)."""
    encryptor = Cipher(algorithms.ChaCha20(key, _ZERO_IV), mode=None).encryptor()
    return encryptor.update(_ZERO_KEYSTREAM_INPUT)


def element_to_num(data: bytes) -> Num:
    """Map *data* to its 3072-bit number (Bitcoin Core's ``MuHash3072::ToNum3072``)."""
    return gmpy2.from_binary(_MPZ_LE + chacha20_keystream_384(hashlib.sha256(data).digest()))


def _from_le(data: bytes) -> Num:
    return gmpy2.from_binary(_MPZ_LE + data) % _P


def _to_le(value: Num) -> bytes:
    return int(value).to_bytes(BYTE_SIZE, "little")


class MuHash3072:
    """A multiset of byte strings, kept as numerator / denominator modulo ``MODULUS``.

    Mutable on purpose: it is an accumulator on the block-apply hot path.
    ``copy()`` before speculative updates (block validation works on a copy
    and hands back the new state only if the block is valid).
    """

    __slots__ = ("_num", "_den")

    def __init__(self) -> None:
        """Create the hash of the empty set."""
        self._num: Num = _ONE
        self._den: Num = _ONE

    @classmethod
    def of(cls, *elements: bytes) -> Self:
        """Create the hash of the set holding *elements* (Core's ``MuHash3072(data)``)."""
        h = cls()
        for e in elements:
            h.insert(e)
        return h

    def insert(self, data: bytes) -> None:
        """Add *data* to the set."""
        self._num = mulmod(self._num, element_to_num(data))

    def remove(self, data: bytes) -> None:
        """Remove *data* from the set (the caller guarantees it is there)."""
        self._den = mulmod(self._den, element_to_num(data))

    def combine(self, other: MuHash3072) -> None:
        """Add every element of *other* to this set (Core's ``operator*=``)."""
        self._num = mulmod(self._num, other._num)
        self._den = mulmod(self._den, other._den)

    def subtract(self, other: MuHash3072) -> None:
        """Remove every element of *other* from this set (Core's ``operator/=``)."""
        self._num = mulmod(self._num, other._den)
        self._den = mulmod(self._den, other._num)

    def copy(self) -> MuHash3072:
        """Return an independent copy of this state."""
        h = MuHash3072()
        h._num, h._den = self._num, self._den
        return h

    def normalize(self) -> None:
        """Fold the denominator into the numerator (one modular inverse)."""
        if self._den != 1:
            self._num = (self._num * gmpy2.invert(self._den, _P)) % _P
            self._den = _ONE

    def digest(self) -> bytes:
        """Return SHA-256 of numerator/denominator as 384 little-endian bytes (32 bytes).

        Does not change the state, so the accumulator can keep rolling.
        """
        value = self._num if self._den == 1 else self._num * gmpy2.invert(self._den, _P)
        return hashlib.sha256(_to_le(value % _P)).digest()

    def serialize(self) -> bytes:
        """Return numerator || denominator, 384 bytes little-endian each (Core's layout)."""
        return _to_le(self._num) + _to_le(self._den)

    @classmethod
    def deserialize(cls, data: bytes) -> Self:
        """Rebuild a state from ``serialize()`` output, or from a finalized 384-byte value.

        Values at or above the modulus are reduced, as Core does. Raises
        DecodeError on a wrong length or a zero numerator or denominator,
        which no sequence of inserts and removes can produce.
        """
        if len(data) == SERIALIZED_SIZE:
            num, den = _from_le(data[:BYTE_SIZE]), _from_le(data[BYTE_SIZE:])
        elif len(data) == BYTE_SIZE:
            num, den = _from_le(data), _ONE
        else:
            raise DecodeError(
                f"MuHash3072 state must be {SERIALIZED_SIZE} or {BYTE_SIZE} bytes, got {len(data)}"
            )
        if num == 0 or den == 0:
            raise DecodeError("MuHash3072 state has a zero numerator or denominator")
        h = cls()
        h._num, h._den = num, den
        return h

    def __eq__(self, other: object) -> bool:
        """Two states are equal iff they hash the same multiset (a/b == c/d)."""
        if not isinstance(other, MuHash3072):
            return NotImplemented
        return bool((self._num * other._den - other._num * self._den) % _P == 0)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"MuHash3072(digest={self.digest().hex()})"


def coin_element(outpoint: OutPoint, coin: Coin) -> bytes:
    """Return the canonical 73 bytes of one UTXO as it enters the multiset.

    Layout (little-endian, as Core's coin serialization for MuHash)::

        txid[32] || index:u32 || height:u64 || is_coinbase:u8 || amount:u64 || pubkey_hash[20]

    Raises ValueError on field sizes the ledger never produces (a caller bug).
    """
    if len(outpoint.txid) != HASH_LEN or len(coin.pubkey_hash) != ADDRESS_PAYLOAD_LEN:
        raise ValueError("coin_element: txid must be 32 bytes and pubkey_hash 20 bytes")
    try:
        return _COIN_LAYOUT.pack(
            outpoint.txid,
            outpoint.index,
            coin.height,
            1 if coin.is_coinbase else 0,
            coin.amount,
            coin.pubkey_hash,
        )
    except struct.error as exc:
        raise ValueError(f"coin_element: field out of range: {exc}") from None


def apply_changes(h: MuHash3072, changes: UtxoChanges) -> None:
    """Update *h* for one block: remove every spent coin, insert every created coin."""
    apply_products(
        h,
        elements_product(coin_elements(changes.spent)),
        elements_product(coin_elements(changes.created)),
    )


def apply_products(h: MuHash3072, spent: Num, created: Num) -> None:
    """Update *h* by ``elements_product`` of the spent and of the created coins' elements.

    The same as ``apply_changes`` for products computed elsewhere (the node's
    worker processes compute them in parts: a product does not depend on how
    the coins are split).
    """
    h._den = mulmod(h._den, spent)
    h._num = mulmod(h._num, created)


def coin_elements(coins: Sequence[tuple[OutPoint, Coin]]) -> bytes:
    """Return the ``coin_element`` of every coin, concatenated (73 bytes each).

    Raises ValueError on field sizes the ledger never produces (a caller bug),
    as ``coin_element`` does.
    """
    pack = _COIN_LAYOUT.pack
    parts = []
    for outpoint, coin in coins:
        txid, pubkey_hash = outpoint.txid, coin.pubkey_hash
        if len(txid) != HASH_LEN or len(pubkey_hash) != ADDRESS_PAYLOAD_LEN:
            coin_element(outpoint, coin)  # raises the ValueError
        try:
            parts.append(
                pack(
                    txid,
                    outpoint.index,
                    coin.height,
                    1 if coin.is_coinbase else 0,
                    coin.amount,
                    pubkey_hash,
                )
            )
        except struct.error:
            coin_element(outpoint, coin)  # raises the ValueError
            raise
    return b"".join(parts)


def elements_product(elements: bytes) -> Num:
    """Return the product of the numbers of concatenated 73-byte coin elements, mod ``MODULUS``.

    ``element_to_num`` and ``mulmod`` written out in one loop: this runs for
    every coin a block touches (about three per transaction) and the calls
    between them cost a fifth of the loop. Pure (no state, no I/O), so worker
    processes can run it on parts of a block. ``tests/unit/test_muhash.py``
    checks it against the composed functions. Raises ValueError unless the
    length is a multiple of ``COIN_ELEMENT_SIZE``.
    """
    size = COIN_ELEMENT_SIZE
    if len(elements) % size:
        raise ValueError(f"coin elements must be a multiple of {size} bytes")
    sha256 = hashlib.sha256
    from_binary = gmpy2.from_binary
    mask, c, p = _MASK, _C, _P
    zeros, iv, header = _ZERO_KEYSTREAM_INPUT, _ZERO_IV, _MPZ_LE
    create = _create_encryption_ctx
    # A fresh 32-byte SHA-256 key needs none of ``ChaCha20.__init__``'s checks, and
    # ``Cipher(...).encryptor()`` only forwards to ``create``: one algorithm object
    # per call, re-keyed per coin, saves 1.5 of the keystream's 3.6 us. Local to
    # this call, so threads never share it. test_muhash.py pins it to the public path.
    algo = algorithms.ChaCha20(bytes(32), iv)
    acc = _ONE
    view = memoryview(elements)
    for off in range(0, len(elements), size):
        key = sha256(view[off : off + size]).digest()
        if create is not None:
            algo.key = key
            stream = create(algo, None).update(zeros)
        else:
            stream = Cipher(algorithms.ChaCha20(key, iv), mode=None).encryptor().update(zeros)
        x = acc * from_binary(header + stream)
        x = (x & mask) + (x >> 3072) * c
        x = (x & mask) + (x >> 3072) * c
        acc = x - p if x >= p else x
    return acc


def undo_changes(h: MuHash3072, changes: UtxoChanges) -> None:
    """Reverse ``apply_changes``: remove created coins and re-insert spent ones."""
    for outpoint, coin in changes.created:
        h.remove(coin_element(outpoint, coin))
    for outpoint, coin in changes.spent:
        h.insert(coin_element(outpoint, coin))
