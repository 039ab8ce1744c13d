"""UTXO overlay, apply/undo, and change sets."""

from __future__ import annotations

import pytest
from ledger_helpers import TIME, coinbase_tx, funded_view, key, pkh, spend

from timecoin.core import errors as err
from timecoin.core.muhash import MuHash3072, apply_changes, coin_element
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import (
    MemoryUtxoView,
    OverlayView,
    UtxoChanges,
    UtxoOverlay,
    apply_block_txs,
    invert_changes,
    undo_changes,
)

FEE = 10_000


def _op(tx, i):
    return OutPoint(tx.txid, i)


def test_apply_block_txs_nets_intra_block_coins():
    view, ops = funded_view([(1, 10 * TIME), (2, 4 * TIME)])
    cb = coinbase_tx(5, [(pkh(9), 100 * TIME)])
    a = spend([(ops[0], key(1))], [(6 * TIME, pkh(3)), (4 * TIME - FEE, pkh(1))])
    b = spend([(_op(a, 0), key(3))], [(6 * TIME - FEE, pkh(4))])
    changes = apply_block_txs([cb, a, b], view, 5)
    spent = dict(changes.spent)
    created = dict(changes.created)
    assert set(spent) == {ops[0]}
    assert spent[ops[0]] == view.get_coin(ops[0])
    assert set(created) == {_op(cb, 0), _op(a, 1), _op(b, 0)}
    assert created[_op(cb, 0)] == Coin(100 * TIME, pkh(9), 5, is_coinbase=True)
    assert created[_op(b, 0)] == Coin(6 * TIME - FEE, pkh(4), 5, is_coinbase=False)
    # Deterministic order: sorted by outpoint.
    assert [op for op, _ in changes.created] == sorted(created)
    # Created minus spent is what the coinbase minted minus the two fees (left unclaimed here).
    total_created = sum(c.amount for c in created.values())
    assert total_created - spent[ops[0]].amount == 100 * TIME - 2 * FEE


def test_apply_block_txs_refuses_double_and_missing_spends():
    view, ops = funded_view([(1, 10 * TIME)])
    a = spend([(ops[0], key(1))], [(TIME, pkh(3))])
    b = spend([(ops[0], key(1))], [(2 * TIME, pkh(3))])
    with pytest.raises(err.DoubleSpend):
        apply_block_txs([a, b], view, 1)
    ghost = spend([(OutPoint(b"\x09" * 32, 0), key(1))], [(TIME, pkh(3))])
    with pytest.raises(err.MissingInput):
        apply_block_txs([ghost], view, 1)


def test_overlay_semantics():
    view, ops = funded_view([(1, 10 * TIME)])
    ov = UtxoOverlay(view)
    coin = ov.spend(ops[0])
    assert coin == view.get_coin(ops[0])
    assert ov.get_coin(ops[0]) is None and ov.is_spent_here(ops[0])
    assert view.get_coin(ops[0]) is not None  # base untouched
    with pytest.raises(err.DoubleSpend):
        ov.spend(ops[0])
    with pytest.raises(err.MissingInput):
        ov.spend(OutPoint(b"\x01" * 32, 3))
    new = OutPoint(b"\x02" * 32, 0)
    ov.add(new, Coin(5, pkh(1), 1))
    with pytest.raises(err.DoubleSpend):
        ov.add(new, Coin(5, pkh(1), 1))
    assert ov.get_coin(new) == Coin(5, pkh(1), 1)
    ov.spend(new)
    changes = ov.changes()
    assert changes == UtxoChanges(spent=((ops[0], view.get_coin(ops[0])),), created=())


def test_memory_view_apply_undo_roundtrip():
    view, ops = funded_view([(1, 10 * TIME), (2, 3 * TIME)])
    before = view.snapshot()
    a = spend([(ops[0], key(1))], [(TIME, pkh(3))])
    changes = apply_block_txs([a], view, 1)
    view.apply(changes)
    assert ops[0] not in view and _op(a, 0) in view and len(view) == 2
    view.undo(changes)
    assert view.snapshot() == before
    assert undo_changes is invert_changes
    assert invert_changes(invert_changes(changes)) == changes


def test_memory_view_apply_is_atomic():
    view, ops = funded_view([(1, 10 * TIME)])
    before = view.snapshot()
    missing = UtxoChanges(
        spent=((ops[0], view.get_coin(ops[0])), (OutPoint(b"\x05" * 32, 0), Coin(1, pkh(1), 0))),
        created=((OutPoint(b"\x06" * 32, 0), Coin(1, pkh(1), 1)),),
    )
    with pytest.raises(err.MissingInput):
        view.apply(missing)
    assert view.snapshot() == before
    # Spending a coin with different contents than the set holds is refused too.
    wrong = UtxoChanges(spent=((ops[0], Coin(1, pkh(1), 0)),), created=())
    with pytest.raises(err.MissingInput):
        view.apply(wrong)
    clash = UtxoChanges(spent=(), created=((ops[0], Coin(1, pkh(1), 1)),))
    with pytest.raises(err.DoubleSpend):
        view.apply(clash)
    assert view.snapshot() == before


def test_overlay_view_reads_through():
    base = MemoryUtxoView({OutPoint(b"\x01" * 32, 0): Coin(5, pkh(1), 0)})
    changes = UtxoChanges(
        spent=((OutPoint(b"\x01" * 32, 0), Coin(5, pkh(1), 0)),),
        created=((OutPoint(b"\x02" * 32, 0), Coin(4, pkh(2), 1)),),
    )
    ov = OverlayView(base, changes)
    assert ov.get_coin(OutPoint(b"\x01" * 32, 0)) is None
    assert ov.get_coin(OutPoint(b"\x02" * 32, 0)) == Coin(4, pkh(2), 1)
    assert base.get_coin(OutPoint(b"\x01" * 32, 0)) is not None


def test_muhash_follows_apply_and_undo():
    view, ops = funded_view([(1, 10 * TIME), (2, 3 * TIME)])
    h = MuHash3072.of(*(coin_element(op, c) for op, c in view.items()))
    d0 = h.digest()
    a = spend([(ops[0], key(1))], [(TIME, pkh(3))])
    changes = apply_block_txs([a], view, 1)
    apply_changes(h, changes)
    view.apply(changes)
    assert h.digest() == MuHash3072.of(*(coin_element(op, c) for op, c in view.items())).digest()
    apply_changes(h, invert_changes(changes))
    assert h.digest() == d0
