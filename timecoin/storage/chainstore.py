"""The chain store: blocks, indexes, UTXO set and chain tip on one ``KVStore``.

Bytes in, bytes out for blocks, commits and validator sets (decoding happens
above, in the chain state); coins and outpoints have fixed encodings
(``timecoin.storage.codec``). Key layout, one-byte prefixes (docs/storage.md)::

    B height8                    -> block bytes
    h height8                    -> block hash (32)
    H hash32                     -> height8
    L height8                    -> txids of the block, concatenated (32 each)
    T txid32                     -> height8 || position u32       (tx index)
    U txid32 index4              -> coin (37 bytes)               (UTXO set)
    A pubkey_hash20 txid32 index4 -> b""                          (address index)
    D height8                    -> undo record
    C height8                    -> seen commit bytes
    V height8                    -> validator set bytes
    M key                        -> metadata value
    t                            -> tip: height8 || hash32
    m                            -> UTXO commitment (MuHash) state
    v                            -> schema version u32

DESIGN.md, Storage: a block commit is one atomic write batch - block,
indexes, UTXO changes, undo data and the new tip together - so a crash at any
point leaves the previous or the next state, never a mix. ``commit_block`` and
``disconnect_tip`` each build exactly one ``WriteBatch`` and write it with
``sync=True``; nothing else is written on the way.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import NamedTuple

from timecoin.core.errors import AlreadyKnown, BadHeight, NotFound, StorageError
from timecoin.core.types import ADDRESS_PAYLOAD_LEN, HASH_LEN, Coin, OutPoint
from timecoin.core.utxo import UtxoChanges
from timecoin.storage.codec import (
    COIN,
    COIN_RECORD,
    OUTPOINT_LEN,
    TIP,
    TX_LOCATION,
    U32,
    U64,
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
from timecoin.storage.kv import KVReader, KVSnapshot, KVStore, WriteBatch

__all__ = [
    "SCHEMA_VERSION",
    "BlockRecord",
    "ChainReader",
    "ChainSnapshot",
    "ChainStore",
    "ChainTip",
    "TxLocation",
]

SCHEMA_VERSION = 1
"""Bumped whenever the key layout or a value encoding changes."""

P_BLOCK = b"B"
P_HEIGHT_HASH = b"h"
P_HASH_HEIGHT = b"H"
P_BLOCK_TXIDS = b"L"
P_TX = b"T"
P_COIN = b"U"
P_ADDRESS = b"A"
P_UNDO = b"D"
P_COMMIT = b"C"
P_VALIDATORS = b"V"
P_META = b"M"
K_TIP = b"t"
K_UTXO_STATE = b"m"
K_VERSION = b"v"

DEFAULT_PAGE_SIZE = 1000

COIN_CACHE_ENTRIES = 1 << 16
"""Bound of the decoded-coin cache (about 10 MB when full)."""

UNSPENT_CACHE_ENTRIES = 1 << 16
"""Default bound of ``ChainStore``'s outpoint -> coin cache (about 23 MB when full)."""

UNSPENT_CACHE_ENTRY_BYTES = 350
"""Memory of one entry of that cache: outpoint, coin, their bytes and the dict slot
(346 bytes measured with tracemalloc for coins of distinct transactions)."""

_pack_u32 = U32.pack
_unpack_coin = COIN.unpack
# Shared by all readers: entries map immutable stored bytes to an equal
# immutable Coin, so sharing across stores and threads is safe.
_coin_cache: dict[bytes, Coin] = {}
_coin_cache_get = _coin_cache.get


class ChainTip(NamedTuple):
    """The last committed block."""

    height: int
    block_hash: bytes


class TxLocation(NamedTuple):
    """Where a transaction is: block height and position in that block."""

    height: int
    position: int


@dataclass(frozen=True, slots=True)
class BlockRecord:
    """Everything one finalized block writes, committed atomically by ``commit_block``."""

    height: int
    block_hash: bytes
    """SHA-256(header_bytes), 32 bytes."""
    block_bytes: bytes
    """The encoded block as received (the store never decodes it)."""
    txids: tuple[bytes, ...]
    """Transaction ids in block order (position = index in this tuple)."""
    changes: UtxoChanges
    """UTXO set changes of the block; also its undo data."""
    utxo_state: bytes
    """Serialized UTXO-commitment (MuHash3072) state after the block."""
    commit_bytes: bytes | None = None
    """The commit this node saw for the block (CometBFT's "seen commit"); the
    canonical one arrives as the next block's last_commit."""
    validator_set_bytes: bytes | None = None
    """Validator set recorded at this height (the chain state decides which
    height it governs, by convention height + 2); None when unchanged."""
    extra: tuple[tuple[bytes, bytes], ...] = ()
    """Metadata puts (``M`` namespace) that must land with the block."""


class ChainReader:
    """Read-side of the chain store over any ``KVReader`` (the store or a snapshot).

    Implements ``timecoin.core.utxo.UtxoView``.
    """

    __slots__ = ("_get", "_reader")

    def __init__(self, reader: KVReader) -> None:
        self._reader = reader
        # Bound once: get_coin is the hot path of validation (one point read
        # plus a fixed struct unpack).
        self._get = reader.get

    # --- UTXO set -----------------------------------------------------------

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the unspent coin at *outpoint*, or None (``UtxoView``).

        The validation hot path: one point read, then the decoded coin comes
        from a small cache keyed by the stored bytes themselves (a coin is
        usually read twice: at mempool admission and in block validation) or
        from one fixed-size unpack. Keying by value, not by outpoint, means the
        cache can never serve a coin the store no longer holds.
        """
        try:
            key = P_COIN + outpoint.txid + _pack_u32(outpoint.index)
        except struct.error:
            return None  # index beyond u32: no stored outpoint has it
        raw = self._get(key)
        if raw is None:
            return None
        coin = _coin_cache_get(raw)
        if coin is not None:
            return coin
        try:
            amount, height, flags, pubkey_hash = _unpack_coin(raw)
        except struct.error as e:
            raise StorageError(f"corrupt coin record at {outpoint}") from e
        coin = make_coin(amount, pubkey_hash, height, (flags & 1) != 0)
        if len(_coin_cache) >= COIN_CACHE_ENTRIES:
            _coin_cache.clear()  # crude bound; refilling costs one unpack per coin
        _coin_cache[raw] = coin
        return coin

    def iter_coins_by_address(
        self,
        pubkey_hash: bytes,
        after: OutPoint | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
    ) -> list[tuple[OutPoint, Coin]]:
        """List up to *limit* coins owned by *pubkey_hash*, in outpoint order.

        Paginate with *after* (exclusive): pass the last outpoint of the
        previous page. Reads index and coins from one snapshot, so a block
        committed meanwhile never yields a coin that is half there.
        """
        if len(pubkey_hash) != ADDRESS_PAYLOAD_LEN or limit <= 0:
            return []
        prefix = P_ADDRESS + pubkey_hash
        # Smallest key after the given outpoint's entry: append a zero byte.
        start = None if after is None else prefix + encode_outpoint(after) + b"\x00"
        out: list[tuple[OutPoint, Coin]] = []
        with self._consistent() as view:
            for key, _ in view.iterate(prefix=prefix, start=start):
                op_bytes = key[len(prefix) :]
                raw = view.get(P_COIN + op_bytes)
                if raw is None:
                    raise StorageError(f"address index entry without coin: {key.hex()}")
                out.append((decode_outpoint(op_bytes), decode_coin(raw)))
                if len(out) >= limit:
                    break
        return out

    def iter_all_coins(self) -> Iterator[tuple[OutPoint, Coin]]:
        """Yield every coin of the UTXO set in outpoint order (commitment recomputation).

        One iterator: it sees the set as of this call, whatever commits later.
        """
        for key, raw in self._reader.iterate(prefix=P_COIN):
            yield decode_outpoint(key[1:]), decode_coin(raw)

    def coins_page(
        self, after: OutPoint | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[tuple[OutPoint, Coin]]:
        """List up to *limit* coins after *after* (exclusive), in outpoint order."""
        start = None if after is None else P_COIN + encode_outpoint(after) + b"\x00"
        out: list[tuple[OutPoint, Coin]] = []
        if limit <= 0:
            return out
        for key, raw in self._reader.iterate(prefix=P_COIN, start=start):
            out.append((decode_outpoint(key[1:]), decode_coin(raw)))
            if len(out) >= limit:
                break
        return out

    def get_utxo_state(self) -> bytes | None:
        """Return the UTXO-commitment state stored with the tip, or None before genesis."""
        return self._get(K_UTXO_STATE)

    # --- blocks -------------------------------------------------------------

    def tip(self) -> ChainTip | None:
        """Return the last committed block's height and hash, or None for an empty chain."""
        raw = self._get(K_TIP)
        if raw is None:
            return None
        try:
            height, block_hash = TIP.unpack(raw)
        except Exception as e:
            raise StorageError("corrupt tip record") from e
        return ChainTip(height, block_hash)

    def get_block_bytes(self, height: int) -> bytes | None:
        """Return the encoded block at *height*, or None."""
        if not 0 <= height < 1 << 64:
            return None
        return self._get(P_BLOCK + U64.pack(height))

    def get_block_hash(self, height: int) -> bytes | None:
        """Return the hash of the block at *height*, or None."""
        if not 0 <= height < 1 << 64:
            return None
        return self._get(P_HEIGHT_HASH + U64.pack(height))

    def get_height(self, block_hash: bytes) -> int | None:
        """Return the height of the block with *block_hash*, or None if unknown."""
        raw = self._get(P_HASH_HEIGHT + block_hash)
        return None if raw is None else decode_height(raw)

    def get_block_bytes_by_hash(self, block_hash: bytes) -> bytes | None:
        """Return the encoded block with *block_hash*, or None."""
        with self._consistent() as view:
            raw = view.get(P_HASH_HEIGHT + block_hash)
            return None if raw is None else view.get(P_BLOCK + raw)

    def get_block_txids(self, height: int) -> tuple[bytes, ...] | None:
        """Return the txids of the block at *height* in block order, or None."""
        if not 0 <= height < 1 << 64:
            return None
        raw = self._get(P_BLOCK_TXIDS + U64.pack(height))
        if raw is None:
            return None
        return tuple(raw[i : i + HASH_LEN] for i in range(0, len(raw), HASH_LEN))

    def get_tx_location(self, txid: bytes) -> TxLocation | None:
        """Return (height, position) of a committed transaction: one point read."""
        raw = self._get(P_TX + txid)
        if raw is None:
            return None
        try:
            return TxLocation(*TX_LOCATION.unpack(raw))
        except Exception as e:
            raise StorageError(f"corrupt tx index entry for {txid.hex()}") from e

    def get_undo(self, height: int) -> UtxoChanges | None:
        """Return the UTXO changes of the block at *height* (``spent`` restores it), or None."""
        record = self._undo_record(height)
        return None if record is None else record.changes

    def _undo_record(self, height: int) -> UndoRecord | None:
        raw = self._get(P_UNDO + encode_height(height))
        return None if raw is None else decode_undo(raw)

    def get_seen_commit(self, height: int) -> bytes | None:
        """Return the commit this node stored with the block at *height*, or None."""
        if not 0 <= height < 1 << 64:
            return None
        return self._get(P_COMMIT + U64.pack(height))

    def get_validator_set_bytes(self, height: int) -> bytes | None:
        """Return the validator set bytes recorded at exactly *height*, or None."""
        if not 0 <= height < 1 << 64:
            return None
        return self._get(P_VALIDATORS + U64.pack(height))

    def find_validator_set_bytes(self, height: int) -> tuple[int, bytes] | None:
        """Return the latest validator set recorded at or below *height* as (height, bytes)."""
        if height < 0:
            return None
        stop = P_VALIDATORS + encode_height(height) + b"\x00"
        for key, value in self._reader.iterate(prefix=P_VALIDATORS, stop=stop, reverse=True):
            return decode_height(key[1:]), value
        return None

    def get_meta(self, key: bytes) -> bytes | None:
        """Return a metadata value (``M`` namespace), or None."""
        return self._get(P_META + key)

    def schema_version(self) -> int | None:
        """Return the layout version recorded in the store, or None if never written."""
        raw = self._get(K_VERSION)
        return None if raw is None else int(U32.unpack(raw)[0])

    # --- helpers ------------------------------------------------------------

    def _consistent(self) -> AbstractContextManager[KVReader]:
        """Open a point-in-time view for multi-key reads (the reader itself if it is one)."""
        snapshot = getattr(self._reader, "snapshot", None)
        if snapshot is None:
            return nullcontext(self._reader)
        return snapshot()  # type: ignore[no-any-return]


class ChainSnapshot(ChainReader):
    """Chain reads from one point in time; close it (or use ``with``)."""

    __slots__ = ("_snapshot",)

    def __init__(self, snapshot: KVSnapshot) -> None:
        super().__init__(snapshot)
        self._snapshot = snapshot

    def close(self) -> None:
        """Release the underlying KV snapshot."""
        self._snapshot.close()

    def __enter__(self) -> ChainSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChainStore(ChainReader):
    """The node's persistent chain: reads from ``ChainReader`` plus atomic block commits.

    One writer at a time (an internal lock; ``AsyncChainStore`` also serializes
    writes on one thread). Readers may run concurrently from other threads.

    ``get_coin`` answers from a bounded outpoint -> coin cache in front of
    the store (Bitcoin Core's coins cache plays this part): a coin is read at
    mempool admission, again when the block spending it is built or
    validated, and new coins are often spent soon after. Only unspent coins
    are cached; ``commit_block`` removes what a block spends and adds what it
    creates, and a read that overlaps a commit is not cached (see
    ``_remember``), so the cache never answers what the store no longer holds.
    """

    __slots__ = ("_kv", "_write_lock", "_unspent", "_unspent_max", "_unspent_gen", "_unspent_lock")

    def __init__(self, kv: KVStore, *, unspent_cache: int = UNSPENT_CACHE_ENTRIES) -> None:
        super().__init__(kv)
        self._kv = kv
        self._write_lock = threading.Lock()
        self._unspent: dict[OutPoint, Coin] = {}
        self._unspent_max = max(0, unspent_cache)
        self._unspent_gen = 0
        """Bumped before and after every write that changes coins."""
        self._unspent_lock = threading.Lock()
        version = self.schema_version()
        if version is None:
            if self.tip() is not None:
                raise StorageError("store has a chain but no schema version")
            batch = WriteBatch()
            batch.put(K_VERSION, U32.pack(SCHEMA_VERSION))
            kv.write(batch, sync=True)
        elif version != SCHEMA_VERSION:
            raise StorageError(
                f"chain store schema version {version}, this node reads {SCHEMA_VERSION}; "
                "reindex or use a matching release"
            )

    @property
    def kv(self) -> KVStore:
        """The underlying key-value store."""
        return self._kv

    def snapshot(self) -> ChainSnapshot:
        """Open a consistent read view of the whole chain (tip, blocks, coins together)."""
        return ChainSnapshot(self._kv.snapshot())

    # --- the coins cache --------------------------------------------------------

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the unspent coin at *outpoint*, or None; cached (see the class docstring)."""
        coin = self._unspent.get(outpoint)
        if coin is not None:
            return coin
        gen = self._unspent_gen
        coin = ChainReader.get_coin(self, outpoint)
        if coin is not None and self._unspent_max:
            # ``_remember`` for one coin, written out: a miss is one per input
            # of every admitted transaction spending a coin older than the cache,
            # and the call costs 0.75 us of a 3.6 us miss even compiled.
            with self._unspent_lock:
                if gen == self._unspent_gen:
                    cache = self._unspent
                    cache[outpoint] = coin
                    if len(cache) > self._unspent_max:
                        self._evict()
        return coin

    def _remember(self, gen: int | None, coins: Iterable[tuple[OutPoint, Coin]]) -> None:
        """Cache *coins* read when the generation was *gen* (None: the writer, after a write).

        A write bumps the generation under the lock before it starts and again,
        with its cache updates, after it ends; a reader's coins are kept only if
        no write began since the reader looked, so a coin read just before a
        block spent it cannot outlive that block in the cache.
        """
        cache = self._unspent
        with self._unspent_lock:
            if gen is not None and gen != self._unspent_gen:
                return
            cache.update(coins)
            if len(cache) > self._unspent_max:
                self._evict()

    def _evict(self) -> None:
        """Drop the oldest cached coins, a quarter of the bound more than the excess.

        Called with the cache's lock held.
        """
        cache = self._unspent
        excess = len(cache) - self._unspent_max
        for op in list(islice(cache, excess + self._unspent_max // 4)):
            del cache[op]

    def _begin_coin_write(self) -> None:
        with self._unspent_lock:
            self._unspent_gen += 1

    def _end_coin_write(self, changes: UtxoChanges | None) -> None:
        """Update the cache for a written batch; *changes* None empties it."""
        with self._unspent_lock:
            self._unspent_gen += 1
            if changes is None:
                self._unspent.clear()
                return
            pop = self._unspent.pop
            for op, _ in changes.spent:
                pop(op, None)
        if self._unspent_max:
            self._remember(None, changes.created)

    def commit_block(self, record: BlockRecord) -> None:
        """Write block *record* with its indexes, UTXO changes, undo data and new tip.

        One write batch with ``sync=True``: after a crash the store holds either
        the previous tip or this block with everything that belongs to it.
        Raises ``BadHeight`` unless the block extends the tip (any height is
        accepted for the first block) and ``AlreadyKnown`` for a known hash.
        """
        if len(record.block_hash) != HASH_LEN:
            raise StorageError(f"block hash must be {HASH_LEN} bytes")
        if not set(map(len, record.txids)) <= {HASH_LEN}:  # every length, in C
            raise StorageError(f"txid must be {HASH_LEN} bytes")
        with self._write_lock:
            tip = self.tip()
            if tip is not None and record.height != tip.height + 1:
                raise BadHeight(
                    f"block height {record.height} does not extend tip {tip.height}",
                    height=record.height,
                    tip=tip.height,
                )
            if self._get(P_HASH_HEIGHT + record.block_hash) is not None:
                raise AlreadyKnown(f"block {record.block_hash.hex()} is already stored")
            h8 = encode_height(record.height)
            batch = WriteBatch()
            batch.put(P_BLOCK + h8, record.block_bytes)
            batch.put(P_HEIGHT_HASH + h8, record.block_hash)
            batch.put(P_HASH_HEIGHT + record.block_hash, h8)
            batch.put(P_BLOCK_TXIDS + h8, b"".join(record.txids))
            pack_location, height = TX_LOCATION.pack, record.height
            ops: list[tuple[bytes, bytes | None]] = [
                (P_TX + txid, pack_location(height, position))
                for position, txid in enumerate(record.txids)
            ]
            # Spends before creations: an outpoint never appears in both (see
            # UtxoChanges), and a later op on a key would win anyway. Each coin
            # is packed once; its key, value and undo entry are slices of that.
            spent = coin_records(record.changes.spent)
            created = coin_records(record.changes.created)
            op_end, pkh_at = OUTPOINT_LEN, COIN_RECORD.size - ADDRESS_PAYLOAD_LEN
            ops += [(P_COIN + r[:op_end], None) for r in spent]
            ops += [(P_ADDRESS + r[pkh_at:] + r[:op_end], None) for r in spent]
            ops += [(P_COIN + r[:op_end], r[op_end:]) for r in created]
            ops += [(P_ADDRESS + r[pkh_at:] + r[:op_end], b"") for r in created]
            batch.extend(ops)
            prev_meta = tuple((key, self._get(P_META + key)) for key, _ in record.extra)
            undo = UndoRecord(
                prev_tip=None if tip is None else (tip.height, tip.block_hash),
                prev_utxo_state=self._get(K_UTXO_STATE),
                changes=record.changes,
                prev_meta=prev_meta,
            )
            batch.put(P_UNDO + h8, encode_undo(undo, (spent, created)))
            if record.commit_bytes is not None:
                batch.put(P_COMMIT + h8, record.commit_bytes)
            if record.validator_set_bytes is not None:
                batch.put(P_VALIDATORS + h8, record.validator_set_bytes)
            for key, value in record.extra:
                batch.put(P_META + key, value)
            batch.put(K_UTXO_STATE, record.utxo_state)
            batch.put(K_TIP, TIP.pack(record.height, record.block_hash))
            self._begin_coin_write()
            self._kv.write(batch, sync=True)
            self._end_coin_write(record.changes)

    def disconnect_tip(self) -> ChainTip:
        """Revert the tip block with its undo data in one atomic batch; return what was removed.

        Finalized blocks are never reverted in operation (BFT finality); this
        serves reindexing, repair tools and tests. Raises ``NotFound`` on an
        empty chain.
        """
        with self._write_lock:
            tip = self.tip()
            if tip is None:
                raise NotFound("no block to disconnect")
            h8 = encode_height(tip.height)
            undo = self._undo_record(tip.height)
            if undo is None:
                raise StorageError(f"no undo data for tip height {tip.height}")
            txids = self.get_block_txids(tip.height) or ()
            batch = WriteBatch()
            for key in (P_BLOCK, P_HEIGHT_HASH, P_BLOCK_TXIDS, P_UNDO, P_COMMIT, P_VALIDATORS):
                batch.delete(key + h8)
            batch.delete(P_HASH_HEIGHT + tip.block_hash)
            for txid in txids:
                batch.delete(P_TX + txid)
            for outpoint, coin in undo.changes.created:
                op = encode_outpoint(outpoint)
                batch.delete(P_COIN + op)
                batch.delete(P_ADDRESS + coin.pubkey_hash + op)
            for outpoint, coin in undo.changes.spent:
                op = encode_outpoint(outpoint)
                batch.put(P_COIN + op, encode_coin(coin))
                batch.put(P_ADDRESS + coin.pubkey_hash + op, b"")
            # Reverse order so that a key set twice by the block ends at its
            # value from before the block.
            for key, previous in reversed(undo.prev_meta):
                if previous is None:
                    batch.delete(P_META + key)
                else:
                    batch.put(P_META + key, previous)
            if undo.prev_utxo_state is None:
                batch.delete(K_UTXO_STATE)
            else:
                batch.put(K_UTXO_STATE, undo.prev_utxo_state)
            if undo.prev_tip is None:
                batch.delete(K_TIP)
            else:
                batch.put(K_TIP, TIP.pack(*undo.prev_tip))
            self._begin_coin_write()
            try:
                self._kv.write(batch, sync=True)
            finally:
                self._end_coin_write(None)
            return tip

    def put_meta(self, key: bytes, value: bytes, *, sync: bool = True) -> None:
        """Set a metadata value outside any block commit (node settings, markers)."""
        batch = WriteBatch()
        batch.put(P_META + key, value)
        with self._write_lock:
            self._kv.write(batch, sync=sync)

    def delete_meta(self, key: bytes, *, sync: bool = True) -> None:
        """Remove a metadata value."""
        batch = WriteBatch()
        batch.delete(P_META + key)
        with self._write_lock:
            self._kv.write(batch, sync=sync)

    def close(self) -> None:
        """Close the underlying store."""
        self._kv.close()
