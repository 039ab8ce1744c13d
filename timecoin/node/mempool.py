"""The mempool: valid transactions waiting for a block.

A synchronous data structure (no asyncio, no I/O of its own): the node calls it
from its executor thread, passing the UTXO view, the height and the clock.
Every public method takes one ``threading.RLock``, so concurrent callers are
safe; ``add`` holds the lock while it validates, so for parallel signature
checks verify signatures first (e.g. in a process pool, after ``precheck``)
and pass ``sig_ok=True``.

Policy (docs/mempool.md gives the reasons):

- **First seen wins.** A transaction spending an outpoint that a pending
  transaction already spends is rejected with DoubleSpend; there is no
  replace-by-fee.
- **No unconfirmed chains.** Every input must be in the confirmed UTXO set;
  spending an output of a pending transaction is MissingInput. Blocks are
  final within seconds (BFT), so a wallet waits one block instead of the pool
  tracking ancestor packages, and every subset of the pool is a valid block.
- **Limits.** At most ``max_txs`` transactions and ``max_bytes`` bytes
  (encoded size). When full, the lowest fee-rate transactions are evicted if
  the newcomer's fee rate beats each of them by at least
  ``incremental_units_per_kb``; otherwise MempoolFull.
- **Expiry.** A transaction pending longer than ``expiry_ms`` is dropped.
- **Re-check after every block.** ``remove_committed`` drops included
  transactions and those conflicting with the block; after a height gap (or
  the first block it sees) it also looks up every pending input and drops
  those whose inputs are gone. Signatures are never verified again.
- **Dedup.** Bounded LRU caches of recently rejected (with their reason) and
  recently committed txids answer AlreadyKnown without re-validating.

Ordering: fee rate ``fee / size`` (highest first), ties broken by txid
ascending, so two nodes with the same pool select the same block and evict
the same transactions (eviction takes them in exactly the reverse order).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

from sortedcontainers import SortedList

from timecoin.config import MempoolConfig
from timecoin.core.errors import (
    AlreadyKnown,
    BadCoinbase,
    BadPayload,
    ConfigError,
    DoubleSpend,
    MempoolFull,
    MissingInput,
    Oversized,
    Reason,
    RulesRejected,
    TimecoinError,
)
from timecoin.core.hashing import sha256
from timecoin.core.keys import pubkey_hash
from timecoin.core.params import ChainParams
from timecoin.core.tx import effective_size, validate_transaction
from timecoin.core.types import MasternodeRegistration, OutPoint, Transaction
from timecoin.core.utxo import UtxoView
from timecoin.node import failpoints

DEFAULT_MAX_TXS = 10_000
DEFAULT_MAX_BYTES = 300_000_000
DEFAULT_EXPIRY_MS = 14 * 24 * 3600 * 1000
"""Two weeks, as Bitcoin Core's ``-mempoolexpiry``."""
DEFAULT_RECENT_REJECTED = 50_000
DEFAULT_RECENT_COMMITTED = 50_000
RATE_SCALE = 1_000_000_000
"""Fee rates are ordered as ``fee * RATE_SCALE // size`` (nano-units per byte)."""

_RATE_BYTES = 16
"""Bytes of the rate part of an order key (a fee up to the money supply times
RATE_SCALE fits in 128 bits)."""
_RATE_TOP = (1 << (8 * _RATE_BYTES)) - 1


def order_key(fee: int, size: int, txid: bytes) -> bytes:
    """Return the key that sorts the pool: fee rate high to low, then txid ascending.

    One bytes object (the rate, inverted, big-endian, then the txid) rather
    than a ``(-rate, txid)`` tuple: the pool's sorted list compares keys about
    seventeen times per insertion, and bytes compare in one ``memcmp`` where a
    tuple compares element by element (insertion 1.3-2.0 us instead of 3.1-4.4
    with 30,000-100,000 pending).
    """
    return (_RATE_TOP - fee * RATE_SCALE // size).to_bytes(_RATE_BYTES, "big") + txid


def _txid_of(key: bytes) -> bytes:
    return key[_RATE_BYTES:]


MAX_MESSAGE_CHARS = 200
"""Rejection messages kept in the cache are truncated (bounded memory)."""
MAX_SELECT_SKIPS = 1_000
"""``select_for_block`` gives up after this many consecutive txs that do not fit."""

_BODY_REASONS = frozenset(
    {
        # Reasons that depend only on the transaction itself (body and
        # signatures) and on immutable chain data (a coin never changes once
        # created): resubmitting the identical transaction cannot succeed.
        Reason.MALFORMED,
        Reason.OVERSIZED,
        Reason.NON_CANONICAL,
        Reason.WRONG_CHAIN,
        Reason.BAD_VERSION,
        Reason.BAD_ADDRESS,
        Reason.BAD_PUBKEY,
        Reason.BAD_SIGNATURE,
        Reason.DUPLICATE_INPUT,
        Reason.WRONG_OWNER,
        Reason.VALUE_OVERFLOW,
        Reason.INSUFFICIENT_FUNDS,
        Reason.FEE_TOO_LOW,
        Reason.DUST_OUTPUT,
        Reason.MEMO_TOO_LARGE,
        Reason.TOO_MANY_ITEMS,
        Reason.BAD_COINBASE,
    }
)


class TxValidator(Protocol):
    """Ledger validation of one transaction at *height* against *view*; returns the fee.

    Raises a TimecoinError to reject. A validator that can skip signature
    checks accepts the keyword ``sig_ok`` (as ``core.tx.validate_transaction``);
    ``Mempool.add`` passes it only when its caller did.
    """

    def __call__(self, tx: Transaction, view: UtxoView, height: int, /) -> int: ...


RulesHook = Callable[[Transaction, UtxoView, int], None]
"""Extra consensus-rule check (a rules plugin); raises to reject."""


class TxState(Enum):
    """What the mempool knows about a txid (maps to chain.v1 ``TransactionStatus``)."""

    UNKNOWN = "unknown"
    PENDING = "pending"
    REJECTED = "rejected"
    COMMITTED = "committed"


class DropKind(Enum):
    """Why a transaction left the pool or never entered it."""

    REJECTED = "rejected"
    """Refused on admission."""
    EVICTED = "evicted"
    """Pushed out by a transaction paying a higher fee rate (reason MEMPOOL_FULL)."""
    EXPIRED = "expired"
    """Pending longer than the expiry (reason MEMPOOL_FULL: no dedicated code yet)."""
    CONFLICT = "conflict"
    """A committed block spent one of its inputs (reason DOUBLE_SPEND)."""
    INVALIDATED = "invalidated"
    """Re-check after a block failed (an input is gone: MISSING_INPUT)."""
    REMOVED = "removed"
    """Removed by the node (e.g. the proposer found it invalid under block rules)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A cached rejection or drop of one txid."""

    reason: Reason
    message: str
    kind: DropKind
    at_ms: int
    fingerprint: bytes | None
    """SHA-256 of the signatures of the rejected version, or None for any version."""
    epoch: int | None
    """Blocks resubmission only while the pool epoch is unchanged; None: no epoch limit."""
    blocking: bool = True
    """False: kept for ``status`` only (an expired tx may be resubmitted at once)."""


class AddResult(NamedTuple):
    """An accepted transaction (a named tuple: one is built per admission)."""

    txid: bytes
    fee: int
    """Units (inputs minus outputs)."""
    size: int
    """Bytes counted against the limits (``core.tx.effective_size``)."""
    fee_rate: int
    """Units per 1000 bytes, rounded down (comparable to ``min_fee_units_per_kb``)."""
    evicted: tuple[bytes, ...] = ()
    """Txids evicted to make room, lowest fee rate first."""


class MempoolEntry(NamedTuple):
    """One pending transaction with what the pool computed for it.

    A named tuple rather than a frozen dataclass: one is built per admission,
    and a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__`` (several times the cost).
    """

    tx: Transaction
    fee: int
    size: int
    added_ms: int
    order_key: bytes
    """``order_key(fee, size, txid)``: ascending = best first."""
    spends: tuple[OutPoint, ...]
    """Input outpoints."""
    operator: bytes | None
    """Operator address of a masternode registration, else None."""

    @property
    def fee_rate(self) -> int:
        """Units per 1000 bytes, rounded down."""
        return self.fee * 1000 // self.size


@dataclass(frozen=True, slots=True)
class TxStatus:
    """Answer of ``Mempool.status``."""

    state: TxState
    reason: Reason | None = None
    message: str = ""
    height: int | None = None
    """Block height for COMMITTED."""
    kind: DropKind | None = None


@dataclass(frozen=True, slots=True)
class MempoolStats:
    """Figures for metrics (``timed_mempool_*``)."""

    count: int
    bytes: int
    max_txs: int
    max_bytes: int
    accepted_total: int
    rejections: dict[Reason, int]
    """Cumulative admission rejections by reason (AlreadyKnown included)."""
    drops: dict[DropKind, int]
    """Cumulative removals by kind (evicted, expired, conflict, invalidated, removed)."""


_new = tuple.__new__


def _fingerprint(tx: Transaction) -> bytes:
    # txid covers the body only; a rejection caused by one set of signatures
    # must not block the same body with other (valid) signatures, or anyone
    # could censor a transaction by relaying a corrupted copy first.
    return sha256(b"".join(tx.signatures) + len(tx.signatures).to_bytes(4, "big"))


def _spends(tx: Transaction) -> tuple[OutPoint, ...]:
    return tuple([txin.prev_out for txin in tx.body.inputs])


def _operator(tx: Transaction) -> bytes | None:
    mn = tx.body.masternode
    if isinstance(mn, MasternodeRegistration):
        return pubkey_hash(mn.operator_pubkey)
    return None


class Mempool:
    """Pending transactions with fee-rate ordering, limits, expiry and dedup.

    Thread-safe: every public method that touches more than one index holds
    one reentrant lock (single dict reads such as ``get`` need none).
    """

    def __init__(
        self,
        params: ChainParams,
        *,
        max_txs: int = DEFAULT_MAX_TXS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_tx_bytes: int | None = None,
        expiry_ms: int = DEFAULT_EXPIRY_MS,
        validate: TxValidator | None = None,
        rules_hook: RulesHook | None = None,
        incremental_units_per_kb: int | None = None,
        recent_rejected: int = DEFAULT_RECENT_REJECTED,
        recent_committed: int = DEFAULT_RECENT_COMMITTED,
    ) -> None:
        """Create an empty pool.

        *validate* defaults to ``core.tx.validate_transaction`` with *params*;
        *rules_hook* (a rules plugin's transaction check) runs after it.
        *incremental_units_per_kb* is how much more per kB a newcomer must pay
        than each transaction it evicts (default: the minimum fee rate; 0 means
        any strictly higher rate). Raises ConfigError for nonsensical limits.
        """
        if max_tx_bytes is None:
            max_tx_bytes = params.max_tx_bytes
        if min(max_txs, max_bytes, max_tx_bytes, expiry_ms, recent_rejected, recent_committed) < 1:
            raise ConfigError("mempool limits must be positive")
        if incremental_units_per_kb is None:
            incremental_units_per_kb = params.min_fee_units_per_kb
        if incremental_units_per_kb < 0:
            raise ConfigError("incremental_units_per_kb must be >= 0")
        self.params = params
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.max_tx_bytes = max_tx_bytes
        self.expiry_ms = expiry_ms
        self.incremental_units_per_kb = incremental_units_per_kb
        self._validate: TxValidator = validate or self._default_validate
        self._rules_hook = rules_hook
        self._recent_rejected_max = recent_rejected
        self._recent_committed_max = recent_committed

        self._lock = threading.RLock()
        # Insertion order of this dict is arrival order: expiry walks it from the front.
        self._entries: dict[bytes, MempoolEntry] = {}
        # Order keys sorted ascending = best first. A sorted list of sublists:
        # insertion and removal are O(log n) where a flat list moves half of
        # itself (about 5 us per admission with 30,000 pending, 13 us with
        # 100,000), and a block's removals cost O(block log n), not a pass over
        # the whole pool.
        self._order: SortedList[bytes] = SortedList()
        self._spent_by: dict[OutPoint, bytes] = {}
        self._operators: dict[bytes, bytes] = {}  # operator address -> pending registration
        self._bytes = 0
        self._rejected: OrderedDict[bytes, Rejection] = OrderedDict()
        self._committed: OrderedDict[bytes, int] = OrderedDict()
        # Bumped whenever something leaves the pool or the chain advances: a
        # state-dependent rejection (MissingInput, DoubleSpend against a
        # pending tx, MempoolFull) may then succeed on resubmission.
        self._epoch = 0
        self._height: int | None = None
        """Height of the last block ``remove_committed`` was told about."""
        self._accepted_total = 0
        self._rejections: Counter[Reason] = Counter()
        self._drops: Counter[DropKind] = Counter()

    @classmethod
    def from_config(
        cls,
        params: ChainParams,
        config: MempoolConfig,
        *,
        validate: TxValidator | None = None,
        rules_hook: RulesHook | None = None,
    ) -> Mempool:
        """Build a pool from the ``[mempool]`` section of the node config."""
        return cls(
            params,
            max_txs=config.max_txs,
            max_bytes=config.max_bytes,
            expiry_ms=config.expiry_s * 1000,
            validate=validate,
            rules_hook=rules_hook,
        )

    def _default_validate(
        self, tx: Transaction, view: UtxoView, height: int, *, sig_ok: bool | None = None
    ) -> int:
        # sig_ok=True comes from the node's precheck, which also ran the stateless checks.
        return validate_transaction(
            tx, view, height, self.params, sig_ok=sig_ok, prechecked=sig_ok is True
        )

    # --- queries --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, txid: object) -> bool:
        return txid in self._entries

    def __iter__(self) -> Iterator[bytes]:
        """Pending txids, best fee rate first (a snapshot)."""
        with self._lock:
            return iter([_txid_of(key) for key in self._order])

    @property
    def size_bytes(self) -> int:
        """Sum of the sizes of pending transactions."""
        return self._bytes

    def get(self, txid: bytes) -> Transaction | None:
        """Return the pending transaction *txid*, or None."""
        entry = self._entries.get(txid)
        return None if entry is None else entry.tx

    def has_copy(self, txid: bytes, signatures: Sequence[bytes]) -> bool:
        """Tell whether *txid* is pending with exactly *signatures*, or was just committed.

        A cheap test before decoding a gossiped transaction: in a mesh each
        one arrives from several peers, and a copy identical to one already
        here would only be refused as AlreadyKnown after costing a decode. A
        copy with other signatures is not a copy: it goes through admission.
        """
        entry = self._entries.get(txid)
        if entry is not None:
            return entry.tx.signatures == tuple(signatures)
        return txid in self._committed

    def has_verified(self, tx: Transaction) -> bool:
        """Tell whether this exact transaction (same body and signatures) is pending.

        Pending transactions had their signatures verified at admission, so a
        block carrying an identical copy need not verify them again.
        """
        entry = self._entries.get(tx.txid)
        return entry is not None and entry.tx.signatures == tx.signatures

    def entry(self, txid: bytes) -> MempoolEntry | None:
        """Return the pending entry (fee, size, arrival time) for *txid*, or None."""
        return self._entries.get(txid)

    def spender(self, outpoint: OutPoint) -> bytes | None:
        """Return the txid of the pending transaction spending *outpoint*, or None."""
        return self._spent_by.get(outpoint)

    def rejection(self, txid: bytes) -> Rejection | None:
        """Return the cached rejection or drop record of *txid*, or None."""
        with self._lock:
            return self._rejected.get(txid)

    def status(self, txid: bytes) -> TxStatus:
        """Return pending / committed (with height) / rejected (with reason) / unknown."""
        with self._lock:
            if txid in self._entries:
                return TxStatus(TxState.PENDING)
            height = self._committed.get(txid)
            if height is not None:
                return TxStatus(TxState.COMMITTED, height=height)
            rej = self._rejected.get(txid)
            if rej is not None:
                return TxStatus(TxState.REJECTED, rej.reason, rej.message, kind=rej.kind)
            return TxStatus(TxState.UNKNOWN)

    def is_known(self, txid: bytes) -> bool:
        """Tell whether *txid* is pending, recently committed or rejected (gossip dedup)."""
        with self._lock:
            return txid in self._entries or txid in self._committed or txid in self._rejected

    def stats(self) -> MempoolStats:
        """Return counts, bytes and cumulative rejection/drop counters."""
        with self._lock:
            return MempoolStats(
                count=len(self._entries),
                bytes=self._bytes,
                max_txs=self.max_txs,
                max_bytes=self.max_bytes,
                accepted_total=self._accepted_total,
                rejections=dict(self._rejections),
                drops=dict(self._drops),
            )

    def min_fee_rate_units_per_kb(self) -> int:
        """Return a fee rate (units/kB) that gets a small transaction in right now.

        The chain minimum while the pool has room; when full, one more than
        the cheapest pending rate plus the eviction increment (a transaction
        large enough to need several evictions may need more).
        """
        with self._lock:
            floor = self.params.min_fee_units_per_kb
            if len(self._entries) < self.max_txs and self._bytes < self.max_bytes * 9 // 10:
                return floor
            if not self._order:
                return floor
            worst = self._entries[_txid_of(self._order[-1])]
            return max(floor, worst.fee_rate + self.incremental_units_per_kb + 1)

    # --- admission ------------------------------------------------------------

    def precheck(self, tx: Transaction) -> None:
        """Run the cheap admission checks that need no UTXO view and no signature.

        Raises AlreadyKnown, BadCoinbase, Oversized, MissingInput (spends a
        pending output), DoubleSpend (an input is spent by a pending tx) or
        BadPayload (operator registration already pending). The node calls it
        on the event loop before spending CPU on signatures, so it takes no
        lock and changes nothing: the storage thread holds the pool's lock
        while it admits a batch, and waiting for it here stalled the loop (and
        handed the interpreter lock back and forth) for every transaction. It
        only reads the pool's dicts, one atomic lookup at a time; an answer
        made stale by a concurrent add is harmless because ``add`` runs the
        same checks again under the lock. Nothing is recorded: the caller
        passes a rejection to ``reject``.
        """
        self._check_known(tx, touch=False)
        self._check_cheap(tx)

    def reject(self, tx: Transaction, exc: TimecoinError, now_ms: int) -> None:
        """Record a rejection found outside the pool (precheck, signatures) for status/stats.

        AlreadyKnown is only counted; any other reason is also remembered
        unless the transaction is pending (a rival copy must not mark it).
        """
        with self._lock:
            if isinstance(exc, AlreadyKnown) or tx.txid not in self._entries:
                self._note_rejection(tx, exc, now_ms)

    def _note_rejection(self, tx: Transaction, exc: TimecoinError, now_ms: int) -> None:
        """Count a rejection and remember it (AlreadyKnown: count only)."""
        if isinstance(exc, AlreadyKnown):
            self._rejections[Reason.ALREADY_KNOWN] += 1
            return
        self._rejections[exc.reason] += 1
        self._record_rejection(tx, exc, now_ms)

    def _check_known(self, tx: Transaction, *, touch: bool = True) -> None:
        """Raise AlreadyKnown for a pending, committed or blocking rejected *tx*.

        *touch* refreshes the rejection's place in its LRU (only under the lock).
        """
        txid = tx.txid
        if txid in self._entries:
            raise AlreadyKnown(f"{txid.hex()} is already in the mempool", txid=txid)
        height = self._committed.get(txid)
        if height is not None:
            raise AlreadyKnown(f"{txid.hex()} was committed at height {height}", height=height)
        rej = self._rejected.get(txid)
        if rej is not None and self._blocks(rej, tx):
            if touch:
                self._rejected.move_to_end(txid)
            raise AlreadyKnown(
                f"{txid.hex()} was {rej.kind.value}: {rej.reason.name}: {rej.message}",
                prior_reason=rej.reason,
            )

    def _blocks(self, rej: Rejection, tx: Transaction) -> bool:
        if not rej.blocking:
            return False
        if rej.epoch is not None and rej.epoch != self._epoch:
            return False
        return rej.fingerprint is None or rej.fingerprint == _fingerprint(tx)

    def _check_cheap(self, tx: Transaction) -> int:
        """Run the checks that need neither a UTXO view nor signatures; return the tx's size."""
        body = tx.body
        inputs = body.inputs
        if not inputs:  # tx.is_coinbase, without the property call (twice per admission)
            raise BadCoinbase("a coinbase is only valid as the first transaction of a block")
        size = effective_size(tx)
        if size > self.max_tx_bytes:
            raise Oversized(f"transaction is {size} bytes, mempool limit {self.max_tx_bytes}")
        entries, spent_by = self._entries, self._spent_by
        for i, txin in enumerate(inputs):
            op = txin.prev_out
            if op.txid in entries:
                # Policy: no unconfirmed chains (module docstring).
                raise MissingInput(
                    f"input {i} spends an output of pending {op.txid.hex()}; "
                    "wait until it is committed",
                    index=i,
                )
            other = spent_by.get(op)
            if other is not None:
                raise DoubleSpend(
                    f"input {i} {op} is already spent by pending {other.hex()} (first seen wins)",
                    outpoint=op,
                    conflicting_txid=other,
                )
        operator = _operator(tx)
        if operator is not None and operator in self._operators:
            raise BadPayload(
                f"operator {operator.hex()} already has a pending registration "
                f"{self._operators[operator].hex()}"
            )
        return size

    def add(
        self,
        tx: Transaction,
        view: UtxoView,
        height: int,
        now_ms: int,
        *,
        sig_ok: bool | None = None,
    ) -> AddResult:
        """Admit *tx* for inclusion at *height* (the next block) against confirmed *view*.

        Checks, cheapest first: dedup (AlreadyKnown), coinbase (BadCoinbase),
        size cap (Oversized), unconfirmed parent (MissingInput), conflict with
        a pending spend (DoubleSpend), the ledger validator and the rules hook,
        then the pool limits (evicting lower fee rates, else MempoolFull).
        ``sig_ok=True`` tells the validator signatures were verified already
        and the stateless checks passed (the node's precheck does both).
        Every rejection raises a TimecoinError with its reason and is recorded
        for ``status``/``rejection`` and ``stats``.
        """
        with self._lock:
            try:
                return self._add(tx, view, height, now_ms, sig_ok)
            except TimecoinError as exc:
                self._note_rejection(tx, exc, now_ms)
                raise

    def _add(
        self, tx: Transaction, view: UtxoView, height: int, now_ms: int, sig_ok: bool | None
    ) -> AddResult:
        self._check_known(tx)
        size = max(1, self._check_cheap(tx))
        if sig_ok is None:
            fee = self._validate(tx, view, height)
        else:
            fee = self._validate(tx, view, height, sig_ok=sig_ok)  # type: ignore[call-arg]
        if self._rules_hook is not None:
            try:
                self._rules_hook(tx, view, height)
            except TimecoinError:
                raise
            except Exception as exc:  # a plugin bug must not take the node down
                raise RulesRejected(f"rules plugin error: {exc!r}"[:MAX_MESSAGE_CHARS]) from exc
        victims = self._victims(fee, size)
        evicted = []
        for v in victims:
            self._drop(
                v,
                MempoolFull("evicted by a transaction paying a higher fee rate"),
                DropKind.EVICTED,
                now_ms,
            )
            evicted.append(v)
        txid = tx.txid
        # tuple.__new__ in field order: a named tuple's own __new__ is a Python call.
        entry = _new(
            MempoolEntry,
            (tx, fee, size, now_ms, order_key(fee, size, txid), _spends(tx), _operator(tx)),
        )
        self._insert(entry)
        self._accepted_total += 1
        self._rejected.pop(txid, None)
        return _new(AddResult, (txid, fee, size, entry.fee_rate, tuple(evicted)))

    def _victims(self, fee: int, size: int) -> list[bytes]:
        """Txids to evict so a (fee, size) newcomer fits; raise MempoolFull if it may not."""
        if size > self.max_bytes:
            raise MempoolFull(f"transaction of {size} bytes exceeds the pool's {self.max_bytes}")
        count = len(self._entries) + 1
        total = self._bytes + size
        victims: list[bytes] = []
        pos = len(self._order) - 1
        inc = self.incremental_units_per_kb
        while count > self.max_txs or total > self.max_bytes:
            worst = self._entries[_txid_of(self._order[pos])]
            # fee/size >= worst.fee/worst.size + inc/1000, exactly in integers.
            if 1000 * fee * worst.size < 1000 * worst.fee * size + inc * size * worst.size or (
                fee * worst.size <= worst.fee * size
            ):
                raise MempoolFull(
                    f"mempool full: fee rate {fee * 1000 // size} units/kB does not beat "
                    f"{worst.fee_rate} units/kB (+{inc}) of the cheapest pending transaction",
                    min_fee_rate=worst.fee_rate + inc + 1,
                )
            victims.append(worst.tx.txid)
            count -= 1
            total -= worst.size
            pos -= 1
        return victims

    def _insert(self, entry: MempoolEntry) -> None:
        tx = entry.tx
        self._entries[tx.txid] = entry
        self._order.add(entry.order_key)
        for op in entry.spends:
            self._spent_by[op] = tx.txid
        if entry.operator is not None:
            self._operators[entry.operator] = tx.txid
        self._bytes += entry.size

    def _unlink(self, txid: bytes, order_keys: list[bytes] | None = None) -> MempoolEntry | None:
        """Remove *txid* from every index; return its entry (None if not pending).

        With *order_keys*, its fee-order key is appended there instead, for the
        caller to remove with the others (``_forget_order``).
        """
        entry = self._entries.pop(txid, None)
        if entry is None:
            return None
        if order_keys is None:
            self._order.remove(entry.order_key)
        else:
            order_keys.append(entry.order_key)
        spent_by = self._spent_by
        for op in entry.spends:
            if spent_by.get(op) == txid:
                del spent_by[op]
        operator = entry.operator
        if operator is not None and self._operators.get(operator) == txid:
            del self._operators[operator]
        self._bytes -= entry.size
        self._epoch += 1
        return entry

    def _forget_order(self, keys: list[bytes]) -> None:
        """Remove *keys* from the fee order: one by one, or by rebuilding it without them.

        A block at saturation takes most of the pool. Removing each key from the
        sorted list costs about 0.9 us; sorting what stays, about 0.2 us per key gone.
        """
        order = self._order
        if len(keys) * 4 > len(order):
            gone = set(keys)
            self._order = SortedList([key for key in order if key not in gone])
        else:
            for key in keys:
                order.remove(key)

    def _drop(self, txid: bytes, exc: TimecoinError, kind: DropKind, now_ms: int) -> None:
        entry = self._unlink(txid)
        if entry is None:
            return
        self._drops[kind] += 1
        if kind is DropKind.EXPIRED:
            epoch, blocking = None, False
        elif kind in (DropKind.CONFLICT, DropKind.INVALIDATED):
            # An input was spent by a final block: no version of this body can
            # ever be valid again (no reorgs).
            epoch, blocking = None, True
        else:
            epoch, blocking = self._epoch, True
        self._remember(
            txid,
            Rejection(
                reason=exc.reason,
                message=exc.message[:MAX_MESSAGE_CHARS],
                kind=kind,
                at_ms=now_ms,
                fingerprint=None,
                epoch=epoch,
                blocking=blocking,
            ),
        )

    def _record_rejection(self, tx: Transaction, exc: TimecoinError, now_ms: int) -> None:
        permanent = exc.reason in _BODY_REASONS
        self._remember(
            tx.txid,
            Rejection(
                reason=exc.reason,
                message=exc.message[:MAX_MESSAGE_CHARS],
                kind=DropKind.REJECTED,
                at_ms=now_ms,
                fingerprint=_fingerprint(tx),
                epoch=None if permanent else self._epoch,
            ),
        )

    def _remember(self, txid: bytes, rej: Rejection) -> None:
        cache = self._rejected
        cache[txid] = rej
        cache.move_to_end(txid)
        while len(cache) > self._recent_rejected_max:
            cache.popitem(last=False)

    # --- blocks -----------------------------------------------------------------

    def select_for_block(self, max_bytes: int, max_txs: int) -> list[Transaction]:
        """Return pending transactions for a block: highest fee rate first, ties by txid.

        Takes each transaction in order if it still fits in *max_bytes* and
        *max_txs* (skipping ones too large, up to MAX_SELECT_SKIPS in a row).
        Never returns two transactions spending the same outpoint or
        registering the same operator. Does not modify the pool.
        """
        return self.select_with_fees(max_bytes, max_txs)[0]

    def select_with_fees(self, max_bytes: int, max_txs: int) -> tuple[list[Transaction], list[int]]:
        """``select_for_block``, with the fee admission found for each transaction.

        Every pending transaction passed the pool's validator
        (``core.tx.validate_transaction`` unless the pool was built with
        another) against the coins it spends; the block builder takes these
        fees rather than validating again (``core.block.draft_block``,
        *admitted_fees*).
        """
        with self._lock:
            chosen: list[Transaction] = []
            fees: list[int] = []
            spent: set[OutPoint] = set()
            operators: set[bytes] = set()
            room = max_bytes
            skips = 0
            entries = self._entries
            for key in self._order:
                if len(chosen) >= max_txs or skips >= MAX_SELECT_SKIPS:
                    break
                entry = entries[_txid_of(key)]
                if entry.size > room:
                    skips += 1
                    continue
                operator = entry.operator
                # The pool never holds conflicting txs; checked again so a
                # broken invariant cannot produce an invalid block.
                if not spent.isdisjoint(entry.spends) or (
                    operator is not None and operator in operators
                ):
                    continue
                spent.update(entry.spends)
                if operator is not None:
                    operators.add(operator)
                chosen.append(entry.tx)
                fees.append(entry.fee)
                room -= entry.size
                skips = 0
            return chosen, fees

    def remove_committed(
        self, block_txs: Sequence[Transaction], view: UtxoView, height: int, now_ms: int
    ) -> list[bytes]:
        """Update the pool after block *height* was committed; *view* is the UTXO set after it.

        Drops the block's transactions (remembered as committed), pending
        transactions spending an input the block spent (DoubleSpend) or
        registering an operator the block registered (BadPayload), pending
        transactions with an input missing from *view* (MissingInput; a
        presence check made when *height* does not follow the last height this
        pool was told about, signatures are not verified again) and expired ones
        (MempoolFull, kind EXPIRED). Returns the dropped txids (not the
        included ones); ``rejection(txid)`` gives each reason.
        """
        with self._lock:
            self._epoch += 1
            return self._remove_committed(block_txs, view, height, now_ms)

    def _remove_committed(
        self, block_txs: Sequence[Transaction], view: UtxoView, height: int, now_ms: int
    ) -> list[bytes]:
        dropped: list[bytes] = []
        committed = self._committed
        included: list[bytes] = []  # fee-order keys, removed together after the loop
        try:
            for tx in block_txs:
                inputs = tx.body.inputs
                if not inputs:  # the coinbase
                    continue
                txid = tx.txid
                self._unlink(txid, included)
                self._rejected.pop(txid, None)
                committed[txid] = height
                committed.move_to_end(txid)
                for txin in inputs:
                    op = txin.prev_out
                    other = self._spent_by.get(op)
                    if other is not None:
                        self._drop(
                            other,
                            DoubleSpend(
                                f"{op} was spent by {txid.hex()} at height {height}", outpoint=op
                            ),
                            DropKind.CONFLICT,
                            now_ms,
                        )
                        dropped.append(other)
                operator = _operator(tx)
                other = self._operators.get(operator) if operator is not None else None
                if other is not None:
                    self._drop(
                        other,
                        BadPayload(f"operator registered by {txid.hex()} at height {height}"),
                        DropKind.CONFLICT,
                        now_ms,
                    )
                    dropped.append(other)
        finally:
            self._forget_order(included)
        while len(committed) > self._recent_committed_max:
            committed.popitem(last=False)

        failpoints.hit("mempool_flush.mid")
        # The conflict pass above drops every pending spend of a coin this block
        # spent. Only when blocks were not all seen (first block after start, a
        # height gap) can an input be gone unnoticed: then every pending input is
        # looked up once. Doing that after every block would cost one store read
        # per pending input per block: 20,000 reads a second on a busy devnet.
        seen_all = self._height is not None and height == self._height + 1
        self._height = height
        get_coin = view.get_coin
        for txid, entry in () if seen_all else list(self._entries.items()):
            for txin in entry.tx.body.inputs:
                if get_coin(txin.prev_out) is None:
                    self._drop(
                        txid,
                        MissingInput(f"input {txin.prev_out} is no longer unspent"),
                        DropKind.INVALIDATED,
                        now_ms,
                    )
                    dropped.append(txid)
                    break
        dropped.extend(self._expire(now_ms))
        return dropped

    def expire(self, now_ms: int) -> list[bytes]:
        """Drop transactions pending for ``expiry_ms`` or longer; return their txids."""
        with self._lock:
            return self._expire(now_ms)

    def _expire(self, now_ms: int) -> list[bytes]:
        cutoff = now_ms - self.expiry_ms
        old: list[bytes] = []
        for txid, entry in self._entries.items():  # arrival order
            if entry.added_ms > cutoff:
                break
            old.append(txid)
        for txid in old:
            self._drop(
                txid,
                MempoolFull(f"expired after {self.expiry_ms // 1000} s in the mempool"),
                DropKind.EXPIRED,
                now_ms,
            )
        return old

    def remove(self, txid: bytes, exc: TimecoinError, now_ms: int) -> bool:
        """Drop pending *txid* for *exc* (e.g. a block rule rejected it); True if it was here."""
        with self._lock:
            if txid not in self._entries:
                return False
            self._drop(txid, exc, DropKind.REMOVED, now_ms)
            return True
