"""UTXO view protocol and the changes a block makes to the UTXO set.

The interface (``UtxoView``, ``UtxoChanges``) comes first so storage and
consensus can build on it; below it: the overlay block validation applies
transactions on, ``apply_block_txs``, the inverse used to undo a block, a
dict-backed view and a read-only overlay view.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Protocol

from timecoin.core.errors import DoubleSpend, MissingInput
from timecoin.core.types import Coin, OutPoint, Transaction


class UtxoView(Protocol):
    """Read access to a UTXO set (chain store, mempool overlay, test dict)."""

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the unspent coin at *outpoint*, or None if it does not exist or is spent."""
        ...


@dataclass(frozen=True, slots=True)
class UtxoChanges:
    """What applying one block does to the UTXO set.

    ``spent`` is also the block's undo data: undoing the block removes
    ``created`` and restores ``spent``. Coins both created and spent inside the
    same block appear in neither list.
    """

    spent: tuple[tuple[OutPoint, Coin], ...]
    created: tuple[tuple[OutPoint, Coin], ...]


# --- applying and undoing -------------------------------------------------


def invert_changes(changes: UtxoChanges) -> UtxoChanges:
    """Return the changes that undo *changes*: restore what was spent, remove what was created.

    Applying ``changes`` and then ``invert_changes(changes)`` (to a view or to
    a MuHash state) leaves it exactly as before.
    """
    return UtxoChanges(spent=changes.created, created=changes.spent)


undo_changes = invert_changes
"""Alias: the undo of a block is the inverse of its changes (``spent`` is the undo data)."""


_new = tuple.__new__


_outpoint_of = itemgetter(0)


class UtxoOverlay:
    """A mutable layer over a base view: coins created and spent since the base.

    Block validation applies transactions one after another on an overlay, so
    a later transaction may spend an earlier one's outputs and a second spend
    of the same coin is seen as a double spend. ``changes()`` returns the net
    effect: coins created and spent inside the layer appear in neither list.
    """

    __slots__ = ("_base", "_created", "_spent")

    def __init__(self, base: UtxoView) -> None:
        self._base = base
        self._created: dict[OutPoint, Coin] = {}
        self._spent: dict[OutPoint, Coin] = {}

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the coin at *outpoint* as seen through this layer."""
        coin = self._created.get(outpoint)
        if coin is not None:
            return coin
        if outpoint in self._spent:
            return None
        return self._base.get_coin(outpoint)

    def is_spent_here(self, outpoint: OutPoint) -> bool:
        """Tell whether *outpoint* was spent in this layer (created here or in the base)."""
        return outpoint in self._spent

    def spend(self, outpoint: OutPoint) -> Coin:
        """Spend *outpoint*; raise DoubleSpend if already spent here, MissingInput if unknown."""
        if outpoint in self._spent:
            raise DoubleSpend(f"{outpoint} spent twice", outpoint=outpoint)
        coin = self._created.get(outpoint)
        if coin is None:
            coin = self._base.get_coin(outpoint)
            if coin is None:
                raise MissingInput(f"{outpoint} does not exist", outpoint=outpoint)
        self._spent[outpoint] = coin
        return coin

    def add(self, outpoint: OutPoint, coin: Coin) -> None:
        """Create *coin*; raise DoubleSpend if this layer already created *outpoint*.

        The base is not consulted: txids never repeat (a coinbase commits to its
        height; any other body spends inputs that exist only once), so a lookup
        per created output would cost a store read for nothing.
        """
        if outpoint in self._created:
            raise DoubleSpend(f"{outpoint} already exists", outpoint=outpoint)
        self._created[outpoint] = coin

    def apply_tx(self, tx: Transaction, height: int) -> None:
        """Spend *tx*'s inputs and add its outputs (no validity checks beyond existence)."""
        body = tx.body
        inputs = body.inputs
        spend = self.spend
        for txin in inputs:
            spend(txin.prev_out)
        cb = not inputs  # a coinbase
        txid = tx.txid
        created = self._created
        for i, out in enumerate(body.outputs):
            # tuple.__new__: the named tuples' own __new__ is a Python call per output.
            op = _new(OutPoint, (txid, i))
            if op in created:
                raise DoubleSpend(f"{op} already exists", outpoint=op)
            created[op] = _new(Coin, (out.amount, out.pubkey_hash, height, cb))

    def changes(self) -> UtxoChanges:
        """Net changes of this layer in a deterministic order (sorted by outpoint)."""
        # Sorted by outpoint alone, in C: a key compares two outpoints once, where
        # comparing the (outpoint, coin) pairs compares them twice (== then <).
        created_here, spent_here = self._created, self._spent
        spent = [item for item in spent_here.items() if item[0] not in created_here]
        created = [item for item in created_here.items() if item[0] not in spent_here]
        spent.sort(key=_outpoint_of)
        created.sort(key=_outpoint_of)
        return UtxoChanges(spent=tuple(spent), created=tuple(created))


def apply_block_txs(txs: Sequence[Transaction], view: UtxoView, height: int) -> UtxoChanges:
    """Return the UTXO changes of applying *txs* (in block order) at *height* on top of *view*.

    Does not validate the transactions (``core.block.validate_block`` does);
    it only refuses to spend a coin that is missing (MissingInput) or already
    spent in the block (DoubleSpend). The spent coins in the result are the
    undo data.
    """
    overlay = UtxoOverlay(view)
    for tx in txs:
        overlay.apply_tx(tx, height)
    return overlay.changes()


class MemoryUtxoView:
    """A dict-backed UTXO set (tests, the mempool's scratch state, small tools)."""

    __slots__ = ("_coins",)

    def __init__(
        self, coins: Mapping[OutPoint, Coin] | Iterable[tuple[OutPoint, Coin]] = ()
    ) -> None:
        self._coins: dict[OutPoint, Coin] = dict(coins)

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the coin at *outpoint*, or None."""
        return self._coins.get(outpoint)

    def apply(self, changes: UtxoChanges) -> None:
        """Apply *changes* atomically: check everything first, then mutate.

        Raises MissingInput if a spent coin is absent or differs, DoubleSpend
        if a created outpoint is already occupied; the set is then unchanged.
        """
        coins = self._coins
        spent_ops = set()
        for op, coin in changes.spent:
            if coins.get(op) != coin or op in spent_ops:
                raise MissingInput(f"cannot spend {op}: not in the set", outpoint=op)
            spent_ops.add(op)
        for op, _ in changes.created:
            if op in coins and op not in spent_ops:
                raise DoubleSpend(f"cannot create {op}: already in the set", outpoint=op)
        for op in spent_ops:
            del coins[op]
        for op, coin in changes.created:
            coins[op] = coin

    def undo(self, changes: UtxoChanges) -> None:
        """Undo *changes* (previously applied): remove created coins, restore spent ones."""
        self.apply(invert_changes(changes))

    def copy(self) -> MemoryUtxoView:
        """Return an independent copy."""
        return MemoryUtxoView(self._coins)

    def items(self) -> Iterator[tuple[OutPoint, Coin]]:
        """Iterate over all (outpoint, coin) pairs, in insertion order."""
        return iter(self._coins.items())

    def snapshot(self) -> dict[OutPoint, Coin]:
        """Return a plain dict copy of the set (for comparisons)."""
        return dict(self._coins)

    def total(self) -> int:
        """Return the sum of all coin amounts."""
        return sum(c.amount for c in self._coins.values())

    def __len__(self) -> int:
        return len(self._coins)

    def __contains__(self, outpoint: object) -> bool:
        return outpoint in self._coins


class OverlayView:
    """Read-only *base* with *changes* applied on top (e.g. the state after a pending block)."""

    __slots__ = ("_base", "_created", "_spent")

    def __init__(self, base: UtxoView, changes: UtxoChanges) -> None:
        self._base = base
        self._created = dict(changes.created)
        self._spent = {op for op, _ in changes.spent}

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """Return the coin at *outpoint* after the changes."""
        coin = self._created.get(outpoint)
        if coin is not None:
            return coin
        if outpoint in self._spent:
            return None
        return self._base.get_coin(outpoint)
