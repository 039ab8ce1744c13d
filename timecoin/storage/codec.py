"""Fixed-width byte encodings of the chain store's keys and values.

Everything the chain store writes is one of these: big-endian integers (so
keys sort by number), a 36-byte outpoint (txid || index u32), a 37-byte coin
and the undo record of a block. They are storage formats, not wire formats:
only this node reads them, and ``SCHEMA_VERSION`` in ``chainstore.py`` changes
when they do.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from timecoin.core.errors import StorageError
from timecoin.core.types import ADDRESS_PAYLOAD_LEN, HASH_LEN, Coin, OutPoint
from timecoin.core.utxo import UtxoChanges

U8 = struct.Struct(">B")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
TX_LOCATION = struct.Struct(">QI")
"""Value of a tx-index entry: block height u64, position in the block u32."""
COIN = struct.Struct(">QQB20s")
"""amount u64, height u64, flags u8 (bit 0: coinbase), pubkey_hash 20 bytes = 37 bytes."""
TIP = struct.Struct(">Q32s")
"""Value of the tip key: height u64, block hash 32 bytes."""

OUTPOINT_LEN = HASH_LEN + 4
COIN_LEN = COIN.size
COIN_RECORD = struct.Struct(">32sI" + COIN.format.lstrip(">"))
"""An outpoint followed by its coin (36 + 37 bytes): one pack for both, as the
undo record stores them and a block commit writes them (``coin_records``)."""
_FLAG_COINBASE = 0x01

UNDO_VERSION = 1


def encode_height(height: int) -> bytes:
    """Encode a height as 8 bytes big-endian, so height keys sort numerically."""
    try:
        return U64.pack(height)
    except struct.error as e:
        raise StorageError(f"height {height!r} does not fit in u64") from e


def decode_height(data: bytes) -> int:
    """Decode an 8-byte big-endian height."""
    try:
        return int(U64.unpack(data)[0])
    except struct.error as e:
        raise StorageError(f"corrupt height value {data.hex()}") from e


def encode_outpoint(outpoint: OutPoint) -> bytes:
    """Encode an outpoint as txid (32) || index (u32 big-endian)."""
    if len(outpoint.txid) != HASH_LEN:
        raise StorageError(f"outpoint txid must be {HASH_LEN} bytes, got {len(outpoint.txid)}")
    try:
        return outpoint.txid + U32.pack(outpoint.index)
    except struct.error as e:
        raise StorageError(f"outpoint index {outpoint.index!r} does not fit in u32") from e


def decode_outpoint(data: bytes) -> OutPoint:
    """Decode the 36 bytes written by ``encode_outpoint``."""
    if len(data) != OUTPOINT_LEN:
        raise StorageError(f"corrupt outpoint {data.hex()}")
    return OutPoint(data[:HASH_LEN], U32.unpack_from(data, HASH_LEN)[0])


def encode_coin(coin: Coin) -> bytes:
    """Encode a coin in its fixed 37-byte form."""
    if len(coin.pubkey_hash) != ADDRESS_PAYLOAD_LEN:
        raise StorageError(
            f"coin pubkey_hash must be {ADDRESS_PAYLOAD_LEN} bytes, got {len(coin.pubkey_hash)}"
        )
    try:
        return COIN.pack(
            coin.amount, coin.height, _FLAG_COINBASE if coin.is_coinbase else 0, coin.pubkey_hash
        )
    except struct.error as e:
        raise StorageError(f"coin amount or height out of range: {coin}") from e


_tuple_new = tuple.__new__


def make_coin(amount: int, pubkey_hash: bytes, height: int, is_coinbase: bool) -> Coin:
    """Build a ``Coin`` from already-validated fields, faster than ``Coin(...)``.

    ``Coin`` is a named tuple: ``tuple.__new__`` with the fields in order skips
    its generated ``__new__`` (a Python call) on the hottest read path
    (``ChainReader.get_coin``). A unit test keeps the field order in step.
    """
    return _tuple_new(Coin, (amount, pubkey_hash, height, is_coinbase))


def decode_coin(data: bytes) -> Coin:
    """Decode the 37 bytes written by ``encode_coin``."""
    try:
        amount, height, flags, pubkey_hash = COIN.unpack(data)
    except struct.error as e:
        raise StorageError(f"corrupt coin record {data.hex()}") from e
    return make_coin(amount, pubkey_hash, height, (flags & _FLAG_COINBASE) != 0)


@dataclass(frozen=True, slots=True)
class UndoRecord:
    """Everything needed to revert one block, stored with it in the same batch.

    Kept beside the block rather than recomputed so ``disconnect_tip`` needs no
    block decoding and no MuHash arithmetic: it restores the previous tip, the
    previous UTXO-commitment state, the coins, and the metadata the block set.
    """

    prev_tip: tuple[int, bytes] | None
    """(height, hash) of the block before this one; None for the first block."""
    prev_utxo_state: bytes | None
    """MuHash state before this block; None if none was stored yet."""
    changes: UtxoChanges
    """The block's UTXO changes (``spent`` are the coins to restore)."""
    prev_meta: tuple[tuple[bytes, bytes | None], ...] = ()
    """Metadata keys the block set, with their previous values (None: absent)."""


def coin_records(items: Sequence[tuple[OutPoint, Coin]]) -> list[bytes]:
    """Encode each (outpoint, coin) as ``encode_outpoint(op) + encode_coin(coin)`` (73 bytes).

    One struct pack per coin: a block commit needs every coin's key, value and
    undo entry, and slices them all from this one record.
    """
    pack = COIN_RECORD.pack
    out = []
    try:
        for (txid, index), (amount, pkh, height, coinbase) in items:
            # "32s"/"20s" would pad or cut a wrong length without a word.
            if len(txid) != HASH_LEN or len(pkh) != ADDRESS_PAYLOAD_LEN:
                raise StorageError(f"malformed outpoint or coin: {(txid, index)} {pkh!r}")
            out.append(pack(txid, index, amount, height, _FLAG_COINBASE if coinbase else 0, pkh))
    except struct.error as e:
        raise StorageError(f"coin field out of range: {e}") from e
    return out


def _encode_coins(out: bytearray, records: Sequence[bytes]) -> None:
    out += U32.pack(len(records))
    out += b"".join(records)


def _encode_blob(out: bytearray, blob: bytes | None) -> None:
    if blob is None:
        out += b"\x00"
    else:
        out += b"\x01"
        out += U32.pack(len(blob))
        out += blob


def encode_undo(
    record: UndoRecord, records: tuple[Sequence[bytes], Sequence[bytes]] | None = None
) -> bytes:
    """Serialize an undo record (version byte first).

    *records* are ``coin_records`` of the record's spent and created coins if
    the caller has them already.
    """
    if records is None:
        records = (coin_records(record.changes.spent), coin_records(record.changes.created))
    out = bytearray(U8.pack(UNDO_VERSION))
    if record.prev_tip is None:
        out += b"\x00"
    else:
        out += b"\x01"
        out += TIP.pack(*record.prev_tip)
    _encode_blob(out, record.prev_utxo_state)
    _encode_coins(out, records[0])
    _encode_coins(out, records[1])
    out += U32.pack(len(record.prev_meta))
    for key, value in record.prev_meta:
        _encode_blob(out, key)
        _encode_blob(out, value)
    return bytes(out)


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise StorageError("corrupt undo record: truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self) -> int:
        return int(self.take(1)[0])

    def u32(self) -> int:
        return int(U32.unpack(self.take(4))[0])

    def blob(self) -> bytes | None:
        flag = self.u8()
        if flag == 0:
            return None
        if flag != 1:
            raise StorageError("corrupt undo record: bad presence flag")
        return self.take(self.u32())

    def coins(self) -> tuple[tuple[OutPoint, Coin], ...]:
        count = self.u32()
        return tuple(
            (decode_outpoint(self.take(OUTPOINT_LEN)), decode_coin(self.take(COIN_LEN)))
            for _ in range(count)
        )


def decode_undo(data: bytes) -> UndoRecord:
    """Parse the bytes written by ``encode_undo``; raises StorageError if corrupt."""
    r = _Reader(data)
    version = r.u8()
    if version != UNDO_VERSION:
        raise StorageError(f"undo record version {version} is not {UNDO_VERSION}")
    prev_tip: tuple[int, bytes] | None = None
    if r.u8():
        height, block_hash = TIP.unpack(r.take(TIP.size))
        prev_tip = (height, block_hash)
    prev_state = r.blob()
    spent = r.coins()
    created = r.coins()
    prev_meta = []
    for _ in range(r.u32()):
        key = r.blob()
        if key is None:
            raise StorageError("corrupt undo record: metadata key missing")
        prev_meta.append((key, r.blob()))
    if r.pos != len(data):
        raise StorageError("corrupt undo record: trailing bytes")
    return UndoRecord(prev_tip, prev_state, UtxoChanges(spent, created), tuple(prev_meta))
