"""Mempool: admission, first-seen conflicts, limits and eviction, dedup, expiry, blocks.

Two kinds of tests: ones through the real ledger validator with signed
transactions (``ledger_helpers.spend``), and bulk/limit tests with an injected
validator whose fee is chosen per transaction (no ECDSA, so they stay fast).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_helpers import PARAMS, TIME, Chain, coinbase_tx, funded_view, key, make_set, pkh, spend

from timecoin.core import errors as err
from timecoin.core.hashing import sha256
from timecoin.core.types import (
    MAX_MONEY_UNITS,
    Coin,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
)
from timecoin.core.utxo import MemoryUtxoView, UtxoView
from timecoin.node.mempool import (
    AddResult,
    DropKind,
    Mempool,
    MempoolEntry,
    TxState,
    order_key,
)

R = err.Reason
FEE = 10_000
NOW = 1_700_000_000_000
H = 1  # height of the next block


# --- real validator -----------------------------------------------------------------


@pytest.fixture
def funded():
    return funded_view([(1, 10 * TIME), (2, 5 * TIME), (1, 3 * TIME), (3, 2 * TIME)])


def _pay(op: OutPoint, k: int, amount: int, fee: int = FEE, to: int = 9) -> Transaction:
    return spend([(op, key(k))], [(amount - fee, pkh(to))])


def test_admission_with_real_validator(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    tx = _pay(ops[0], 1, 10 * TIME, fee=25_000)
    res = pool.add(tx, view, H, NOW)
    assert res.txid == tx.txid
    assert res.fee == 25_000
    assert res.size == tx.size
    assert res.fee_rate == 25_000 * 1000 // tx.size
    assert res.evicted == ()
    # Built with tuple.__new__ in the pool: the same values as through the constructors.
    assert res == AddResult(
        txid=tx.txid, fee=25_000, size=tx.size, fee_rate=res.fee_rate, evicted=()
    )
    assert pool.entry(tx.txid) == MempoolEntry(
        tx=tx,
        fee=25_000,
        size=tx.size,
        added_ms=NOW,
        order_key=order_key(25_000, tx.size, tx.txid),
        spends=(ops[0],),
        operator=None,
    )
    assert tx.txid in pool and len(pool) == 1
    assert pool.get(tx.txid) is tx
    assert pool.size_bytes == tx.size
    assert pool.status(tx.txid).state is TxState.PENDING
    assert pool.spender(ops[0]) == tx.txid
    assert pool.stats().accepted_total == 1


def test_real_validator_rejections_carry_reasons(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    wrong_owner = _pay(ops[0], 2, 10 * TIME)  # key 2 does not own ops[0]
    with pytest.raises(err.WrongOwner):
        pool.add(wrong_owner, view, H, NOW)
    too_cheap = _pay(ops[1], 2, 5 * TIME, fee=1)
    with pytest.raises(err.FeeTooLow):
        pool.add(too_cheap, view, H, NOW)
    missing = _pay(OutPoint(sha256(b"nowhere"), 0), 1, TIME)
    with pytest.raises(err.MissingInput):
        pool.add(missing, view, H, NOW)
    assert len(pool) == 0
    assert pool.status(wrong_owner.txid).reason is R.WRONG_OWNER
    assert pool.status(too_cheap.txid).reason is R.FEE_TOO_LOW
    assert pool.status(missing.txid).state is TxState.REJECTED
    stats = pool.stats()
    assert stats.rejections == {R.WRONG_OWNER: 1, R.FEE_TOO_LOW: 1, R.MISSING_INPUT: 1}


def test_double_spend_against_pending_is_rejected_first_seen_wins(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    first = _pay(ops[0], 1, 10 * TIME, fee=FEE)
    # The rival pays far more: there is no replace-by-fee.
    rival = spend([(ops[2], key(1)), (ops[0], key(1))], [(12 * TIME, pkh(8))])
    pool.add(first, view, H, NOW)
    with pytest.raises(err.DoubleSpend) as exc_info:
        pool.add(rival, view, H, NOW)
    assert exc_info.value.reason is R.DOUBLE_SPEND
    assert exc_info.value.details["conflicting_txid"] == first.txid
    assert rival.txid not in pool and first.txid in pool
    assert pool.spender(ops[2]) is None  # nothing of the rival was indexed
    rej = pool.rejection(rival.txid)
    assert rej is not None and rej.reason is R.DOUBLE_SPEND and rej.kind is DropKind.REJECTED
    status = pool.status(rival.txid)
    assert status.state is TxState.REJECTED and status.reason is R.DOUBLE_SPEND


@given(
    st.lists(
        st.tuples(
            st.integers(0, MAX_MONEY_UNITS),  # fee: up to the money supply
            st.integers(1, 10**6),  # size
            st.binary(min_size=32, max_size=32),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_order_keys_sort_by_fee_rate_then_txid(items):
    by_key = sorted(items, key=lambda i: order_key(*i))
    by_rule = sorted(items, key=lambda i: (-(i[0] * 10**9 // i[1]), i[2]))
    assert [order_key(*i) for i in by_key] == [order_key(*i) for i in by_rule]


def test_coinbase_rejected(funded):
    view, _ = funded
    pool = Mempool(PARAMS)
    with pytest.raises(err.BadCoinbase) as exc_info:
        pool.add(coinbase_tx(1, [(pkh(1), 100 * TIME)]), view, H, NOW)
    assert exc_info.value.reason is R.BAD_COINBASE


def test_oversized_rejected_before_validation(funded):
    view, ops = funded
    calls = []

    def validate(tx, view, height):
        calls.append(tx.txid)
        return FEE

    tx = _pay(ops[0], 1, 10 * TIME, fee=FEE)
    pool = Mempool(PARAMS, max_tx_bytes=tx.size - 1, validate=validate)
    with pytest.raises(err.Oversized) as exc_info:
        pool.add(tx, view, H, NOW)
    assert exc_info.value.reason is R.OVERSIZED
    assert calls == []
    assert Mempool(PARAMS, max_tx_bytes=tx.size, validate=validate).add(tx, view, H, NOW)


def test_unconfirmed_chain_rejected(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    parent = _pay(ops[0], 1, 10 * TIME, to=4)
    pool.add(parent, view, H, NOW)
    child = spend([(OutPoint(parent.txid, 0), key(4))], [(10 * TIME - 2 * FEE, pkh(5))])
    with pytest.raises(err.MissingInput, match="pending"):
        pool.add(child, view, H, NOW)


def test_bad_signature_cached_but_does_not_censor_valid_copy(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    good = _pay(ops[0], 1, 10 * TIME)
    forged = good._replace(signatures=(bytes(64),))  # same body, same txid
    assert forged.txid == good.txid
    with pytest.raises(err.BadSignature):
        pool.add(forged, view, H, NOW)
    with pytest.raises(err.AlreadyKnown) as exc_info:
        pool.add(forged, view, H, NOW)  # identical copy: not verified again
    assert exc_info.value.reason is R.ALREADY_KNOWN
    assert exc_info.value.details["prior_reason"] is R.BAD_SIGNATURE
    pool.add(good, view, H, NOW)  # different signatures: validated afresh
    assert good.txid in pool
    assert pool.status(good.txid).state is TxState.PENDING


def test_rules_hook_rejects_and_plugin_errors_are_typed(funded):
    view, ops = funded

    def hook(tx, view, height):
        if tx.body.memo == b"no":
            raise err.RulesRejected("memo says no")
        if tx.body.memo == b"bug":
            raise KeyError("plugin bug")

    pool = Mempool(PARAMS, rules_hook=hook)
    no = spend([(ops[0], key(1))], [(10 * TIME - FEE, pkh(9))], memo=b"no")
    bug = spend([(ops[1], key(2))], [(5 * TIME - FEE, pkh(9))], memo=b"bug")
    for tx in (no, bug):
        with pytest.raises(err.RulesRejected) as exc_info:
            pool.add(tx, view, H, NOW)
        assert exc_info.value.reason is R.RULES_REJECTED
    assert len(pool) == 0
    pool.add(spend([(ops[2], key(1))], [(3 * TIME - FEE, pkh(9))]), view, H, NOW)
    assert len(pool) == 1


def test_sig_ok_skips_verification_in_default_validator(funded):
    view, ops = funded
    forged = _pay(ops[0], 1, 10 * TIME)._replace(signatures=(bytes(64),))
    pool = Mempool(PARAMS)
    pool.add(forged, view, H, NOW, sig_ok=True)  # caller vouches (batch-verified elsewhere)
    assert forged.txid in pool
    other = _pay(ops[1], 2, 5 * TIME)._replace(signatures=(bytes(64),))
    with pytest.raises(err.BadSignature):
        pool.add(other, view, H, NOW, sig_ok=False)


def test_selection_builds_a_valid_block_and_commit_cleans_pool():
    chain = Chain(make_set([1]), [(1, 50 * TIME), (2, 20 * TIME), (1, 5 * TIME), (3, 7 * TIME)])
    ops = [chain.genesis_outpoint(i) for i in range(4)]
    pool = Mempool(PARAMS)
    a = _pay(ops[0], 1, 50 * TIME, fee=20_000)
    b = _pay(ops[1], 2, 20 * TIME, fee=90_000)
    c = _pay(ops[2], 1, 5 * TIME, fee=50_000)
    d = _pay(ops[3], 3, 7 * TIME, fee=FEE)
    for tx in (a, b, c, d):
        pool.add(tx, chain.view, chain.height + 1, NOW)
    chosen = pool.select_for_block(PARAMS.max_block_bytes, 3)
    assert [t.txid for t in chosen] == [b.txid, c.txid, a.txid]  # same sizes: by fee
    chain.add(chosen)  # validates the block with the real rules
    dropped = pool.remove_committed(chain.blocks[-1].txs, chain.view, chain.height, NOW + 1)
    assert dropped == []
    assert list(pool) == [d.txid]
    assert pool.status(b.txid).state is TxState.COMMITTED
    assert pool.status(b.txid).height == chain.height
    with pytest.raises(err.AlreadyKnown, match="committed"):
        pool.add(b, chain.view, chain.height + 1, NOW + 2)


def test_recheck_after_block_drops_conflicts_and_missing_inputs():
    chain = Chain(make_set([1]), [(1, 50 * TIME), (2, 20 * TIME), (3, 7 * TIME)])
    ops = [chain.genesis_outpoint(i) for i in range(3)]
    pool = Mempool(PARAMS)
    pending = _pay(ops[0], 1, 50 * TIME, to=5)
    other = _pay(ops[2], 3, 7 * TIME)
    pool.add(pending, chain.view, 1, NOW)
    pool.add(other, chain.view, 1, NOW)
    # Another proposer's block spends ops[0] with a different transaction.
    conflicting = _pay(ops[0], 1, 50 * TIME, to=6)
    chain.add([conflicting])
    dropped = pool.remove_committed(chain.blocks[-1].txs, chain.view, chain.height, NOW)
    assert dropped == [pending.txid]
    rej = pool.rejection(pending.txid)
    assert rej.reason is R.DOUBLE_SPEND and rej.kind is DropKind.CONFLICT
    assert pool.spender(ops[0]) is None
    assert list(pool) == [other.txid]
    # A conflict with a final block is permanent, whatever the signatures.
    with pytest.raises(err.AlreadyKnown):
        pool.add(pending, chain.view, 2, NOW)
    # An input that disappeared without the pool seeing the spend (a block it
    # was not told about: the next height it hears of skips one) is caught by
    # the presence re-check. With no gap the pool trusts its conflict pass.
    view = MemoryUtxoView(chain.view.snapshot())
    view.apply(
        type(chain.results[-1].changes)(spent=((ops[2], view.get_coin(ops[2])),), created=())
    )
    assert pool.remove_committed([], view, chain.height + 1, NOW) == []
    dropped = pool.remove_committed([], view, chain.height + 3, NOW)
    assert dropped == [other.txid]
    assert pool.rejection(other.txid).reason is R.MISSING_INPUT
    assert pool.rejection(other.txid).kind is DropKind.INVALIDATED
    assert len(pool) == 0 and pool.size_bytes == 0
    assert pool.stats().drops == {DropKind.CONFLICT: 1, DropKind.INVALIDATED: 1}


def test_recheck_does_not_verify_signatures_again(funded, monkeypatch):
    view, ops = funded
    pool = Mempool(PARAMS)
    tx = _pay(ops[0], 1, 10 * TIME)
    pool.add(tx, view, H, NOW)
    monkeypatch.setattr(pool, "_validate", lambda *a, **k: pytest.fail("validated again"))
    import timecoin.core.tx as txmod

    def boom(*a, **k):
        raise AssertionError("signatures checked again")

    monkeypatch.setattr(txmod, "check_signatures", boom)
    monkeypatch.setattr(txmod, "validate_transaction", boom)
    assert pool.remove_committed([], view, H, NOW + 1) == []
    assert tx.txid in pool


# --- injected validator: limits, eviction, selection -------------------------------

_COUNTER = [0]


def _fake(
    inputs: list[OutPoint], fee: int, size: int = 200, *, masternode=None, memo: bytes = b""
) -> Transaction:
    """An unsigned transaction of a chosen size; the fee rides in the memo."""
    _COUNTER[0] += 1
    body = TxBody(
        version=1,
        chain_id=PARAMS.chain_id,
        inputs=tuple(TxIn(op, b"\x02" + bytes(32)) for op in inputs),
        outputs=(TxOut(1000, bytes(20)),),
        memo=memo,
        masternode=masternode,
    )
    body_bytes = b"fake" + _COUNTER[0].to_bytes(8, "big") + fee.to_bytes(8, "big")
    return Transaction(
        body_bytes=body_bytes,
        signatures=tuple(bytes(64) for _ in inputs),
        body=body,
        txid=sha256(body_bytes),
        size=size,
    )


def _fee_validator(tx: Transaction, view: UtxoView, height: int) -> int:
    for i, txin in enumerate(tx.body.inputs):
        if view.get_coin(txin.prev_out) is None:
            raise err.MissingInput(f"input {i} missing")
    return int.from_bytes(tx.body_bytes[-8:], "big")


class _Coins:
    """A view where every outpoint exists unless spent."""

    def __init__(self) -> None:
        self.spent: set[OutPoint] = set()

    def get_coin(self, op: OutPoint) -> Coin | None:
        return None if op in self.spent else Coin(10 * TIME, bytes(20), 0)


def _op(n: int) -> OutPoint:
    return OutPoint(sha256(n.to_bytes(8, "big")), 0)


def _pool(**kw) -> Mempool:
    kw.setdefault("validate", _fee_validator)
    kw.setdefault("incremental_units_per_kb", 0)
    return Mempool(PARAMS, **kw)


def test_full_pool_evicts_lowest_fee_rate():
    view = _Coins()
    pool = _pool(max_txs=3)
    low = _fake([_op(1)], fee=1_000)
    mid = _fake([_op(2)], fee=5_000)
    high = _fake([_op(3)], fee=9_000)
    for tx in (mid, low, high):
        pool.add(tx, view, H, NOW)
    newcomer = _fake([_op(4)], fee=2_000)
    res = pool.add(newcomer, view, H, NOW)
    assert res.evicted == (low.txid,)
    assert low.txid not in pool and newcomer.txid in pool and len(pool) == 3
    assert pool.spender(_op(1)) is None
    rej = pool.rejection(low.txid)
    assert rej.reason is R.MEMPOOL_FULL and rej.kind is DropKind.EVICTED
    assert pool.status(low.txid).state is TxState.REJECTED
    assert pool.stats().drops == {DropKind.EVICTED: 1}


def test_full_pool_rejects_newcomer_that_does_not_pay_more():
    view = _Coins()
    pool = _pool(max_txs=2)
    a = _fake([_op(1)], fee=3_000)
    b = _fake([_op(2)], fee=4_000)
    pool.add(a, view, H, NOW)
    pool.add(b, view, H, NOW)
    same_rate = _fake([_op(3)], fee=6_000, size=400)  # 15 units/byte, equal to a
    lower = _fake([_op(4)], fee=1_000)
    for tx in (same_rate, lower):
        with pytest.raises(err.MempoolFull) as exc_info:
            pool.add(tx, view, H, NOW)
        assert exc_info.value.reason is R.MEMPOOL_FULL
    assert set(pool) == {a.txid, b.txid}
    assert pool.size_bytes == 400
    assert pool.status(lower.txid).reason is R.MEMPOOL_FULL
    assert pool.stats().rejections == {R.MEMPOOL_FULL: 2}


def test_incremental_fee_rate_required_to_evict():
    view = _Coins()
    pool = _pool(max_txs=1, incremental_units_per_kb=1_000)  # +1 unit per byte
    pool.add(_fake([_op(1)], fee=2_000, size=200), view, H, NOW)  # 10 units/byte
    with pytest.raises(err.MempoolFull) as exc_info:
        pool.add(_fake([_op(2)], fee=2_199, size=200), view, H, NOW)  # 10.995
    assert exc_info.value.details["min_fee_rate"] == 11_001
    res = pool.add(_fake([_op(3)], fee=2_200, size=200), view, H, NOW)  # exactly 11
    assert len(res.evicted) == 1


def test_byte_limit_evicts_several_or_rejects():
    view = _Coins()
    pool = _pool(max_bytes=1_000)
    small = [_fake([_op(i)], fee=1_000 + i, size=250) for i in range(4)]
    for tx in small:
        pool.add(tx, view, H, NOW)
    assert pool.size_bytes == 1_000
    big = _fake([_op(10)], fee=6_000, size=600)  # 10/byte beats the 4.0..4.01/byte ones
    res = pool.add(big, view, H, NOW)
    # Needs 600 bytes: the three lowest-rate smalls go, lowest first.
    assert res.evicted == (small[0].txid, small[1].txid, small[2].txid)
    assert set(pool) == {big.txid, small[3].txid}
    assert pool.size_bytes == 850
    # One tx that beats only part of what it would need to evict is refused whole.
    pricey = _fake([_op(11)], fee=5_000, size=700)  # 7.1/byte: beats small[3], not big
    with pytest.raises(err.MempoolFull):
        pool.add(pricey, view, H, NOW)
    assert set(pool) == {big.txid, small[3].txid} and pool.size_bytes == 850
    with pytest.raises(err.MempoolFull, match="exceeds"):
        pool.add(_fake([_op(12)], fee=10**9, size=1_001), view, H, NOW)


def test_dedup_in_pool_and_transient_rejection_retried_after_block():
    view = _Coins()
    pool = _pool()
    tx = _fake([_op(1)], fee=1_000)
    pool.add(tx, view, H, NOW)
    with pytest.raises(err.AlreadyKnown, match="already in the mempool"):
        pool.add(tx, view, H, NOW)

    calls = []

    def counting(tx, view, height):
        calls.append(tx.txid)
        return _fee_validator(tx, view, height)

    pool = _pool(validate=counting)
    orphan = _fake([_op(2)], fee=1_000)
    view.spent.add(_op(2))
    with pytest.raises(err.MissingInput):
        pool.add(orphan, view, H, NOW)
    with pytest.raises(err.AlreadyKnown) as exc_info:
        pool.add(orphan, view, H, NOW)  # nothing changed: not validated again
    assert exc_info.value.details["prior_reason"] is R.MISSING_INPUT
    assert calls == [orphan.txid]
    # A block arrives; the coin (say, its parent's output) now exists.
    view.spent.discard(_op(2))
    pool.remove_committed([], view, H, NOW)
    pool.add(orphan, view, H + 1, NOW)
    assert orphan.txid in pool and calls == [orphan.txid, orphan.txid]
    assert pool.rejection(orphan.txid) is None
    assert pool.stats().rejections == {R.MISSING_INPUT: 1, R.ALREADY_KNOWN: 1}


def test_double_spend_rejection_lifted_when_holder_leaves():
    view = _Coins()
    pool = _pool(max_txs=1)
    first = _fake([_op(1)], fee=1_000)
    rival = _fake([_op(1)], fee=5_000)
    pool.add(first, view, H, NOW)
    with pytest.raises(err.DoubleSpend):
        pool.add(rival, view, H, NOW)
    with pytest.raises(err.AlreadyKnown):
        pool.add(rival, view, H, NOW)
    # A higher-paying unrelated tx evicts the holder: the outpoint is free, so
    # the rival is validated again (and, paying more still, evicts in turn).
    pool.add(_fake([_op(2)], fee=3_000), view, H, NOW)
    assert first.txid not in pool and pool.spender(_op(1)) is None
    res = pool.add(rival, view, H, NOW)
    assert rival.txid in pool and len(res.evicted) == 1


def test_dedup_cache_is_bounded():
    view = _Coins()
    pool = _pool(recent_rejected=3, recent_committed=2)
    view.spent.update(_op(i) for i in range(10))
    txs = [_fake([_op(i)], fee=1_000) for i in range(10)]
    for tx in txs:
        with pytest.raises(err.MissingInput):
            pool.add(tx, view, H, NOW)
    assert [pool.rejection(t.txid) is not None for t in txs] == [False] * 7 + [True] * 3
    assert pool.status(txs[0].txid).state is TxState.UNKNOWN
    block = [_fake([_op(100 + i)], fee=1) for i in range(5)]
    pool.remove_committed(block, view, H, NOW)
    assert [pool.status(t.txid).state for t in block] == [TxState.UNKNOWN] * 3 + [
        TxState.COMMITTED
    ] * 2


def test_expiry():
    view = _Coins()
    day = 24 * 3600 * 1000
    pool = _pool(expiry_ms=14 * day)
    old = _fake([_op(1)], fee=1_000)
    young = _fake([_op(2)], fee=1_000)
    pool.add(old, view, H, NOW)
    pool.add(young, view, H, NOW + 2 * day)
    assert pool.remove_committed([], view, H, NOW + 14 * day - 1) == []
    assert pool.remove_committed([], view, H, NOW + 14 * day) == [old.txid]
    assert list(pool) == [young.txid]
    rej = pool.rejection(old.txid)
    assert rej.kind is DropKind.EXPIRED and rej.reason is R.MEMPOOL_FULL
    # An expired tx may be resubmitted at once (wallets rebroadcast).
    pool.add(old, view, H, NOW + 15 * day)
    assert old.txid in pool
    assert pool.expire(NOW + 16 * day + 1) == [young.txid]


def test_selection_order_limits_and_tie_break():
    view = _Coins()
    pool = _pool()
    txs = [
        _fake([_op(1)], fee=2_000, size=200),  # 10/byte
        _fake([_op(2)], fee=4_000, size=200),  # 20/byte
        _fake([_op(3)], fee=8_000, size=400),  # 20/byte (tie)
        _fake([_op(4)], fee=30_000, size=1_000),  # 30/byte, large
        _fake([_op(5)], fee=1_000, size=200),  # 5/byte
    ]
    for tx in txs:
        pool.add(tx, view, H, NOW)
    tie = sorted([txs[1].txid, txs[2].txid])
    everything = [t.txid for t in pool.select_for_block(10_000, 100)]
    assert everything == [txs[3].txid, *tie, txs[0].txid, txs[4].txid]
    assert list(pool) == everything
    assert [t.txid for t in pool.select_for_block(10_000, 2)] == [txs[3].txid, tie[0]]
    # 900 bytes: the 1000-byte best does not fit and is skipped, smaller ones follow.
    chosen = pool.select_for_block(900, 100)
    assert sum(t.size for t in chosen) <= 900
    assert [t.txid for t in chosen][0] == tie[0]
    assert txs[3].txid not in [t.txid for t in chosen]
    assert pool.select_for_block(0, 100) == [] and pool.select_for_block(10_000, 0) == []
    assert len(pool) == 5  # selection does not modify the pool


def test_pending_operator_registration_conflicts():
    view = _Coins()
    pool = _pool()
    op_key = b"\x02" + bytes(range(32))
    reg = MasternodeRegistration(MasternodeTier.BRONZE, 0, op_key)
    first = _fake([_op(1)], fee=1_000, masternode=reg)
    second = _fake([_op(2)], fee=9_000, masternode=reg)
    pool.add(first, view, H, NOW)
    with pytest.raises(err.BadPayload, match="pending registration"):
        pool.add(second, view, H, NOW)
    # A block registering the same operator through another tx drops the pending one.
    committed = _fake([_op(3)], fee=1_000, masternode=reg)
    assert pool.remove_committed([committed], view, H, NOW) == [first.txid]
    assert pool.rejection(first.txid).reason is R.BAD_PAYLOAD


def test_remove_by_node_and_limits_config():
    view = _Coins()
    pool = _pool()
    tx = _fake([_op(1)], fee=1_000)
    pool.add(tx, view, H, NOW)
    assert pool.remove(tx.txid, err.RulesRejected("block rule"), NOW)
    assert not pool.remove(tx.txid, err.RulesRejected("block rule"), NOW)
    assert pool.rejection(tx.txid).kind is DropKind.REMOVED
    with pytest.raises(err.ConfigError):
        Mempool(PARAMS, max_txs=0)


# --- invariants under random operations ------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "add", "block"]),
            st.lists(st.integers(0, 15), min_size=1, max_size=3, unique=True),
            st.integers(1, 50_000),
            st.integers(150, 900),
        ),
        max_size=40,
    )
)
def test_pool_invariants(ops):
    view = _Coins()
    pool = _pool(max_txs=6, max_bytes=3_000, incremental_units_per_kb=500)
    now = NOW
    for kind, inputs, fee, size in ops:
        now += 1
        if kind == "add":
            tx = _fake([_op(i) for i in inputs], fee=fee, size=size)
            try:
                pool.add(tx, view, H, now)
            except err.TimecoinError as exc:
                assert exc.reason in (R.DOUBLE_SPEND, R.MEMPOOL_FULL, R.MISSING_INPUT)
        else:
            block = pool.select_for_block(1_200, 3)
            for tx in block:
                view.spent.update(i.prev_out for i in tx.body.inputs)
            pool.remove_committed(block, view, H, now)
            assert all(t.txid not in pool for t in block)
        entries = [pool.entry(t) for t in pool]
        assert len(entries) <= 6 and pool.size_bytes == sum(e.size for e in entries) <= 3_000
        spent = [i.prev_out for e in entries for i in e.tx.body.inputs]
        assert len(spent) == len(set(spent))  # no two pending txs spend one outpoint
        assert all(view.get_coin(op) is not None for op in spent)
        assert all(pool.spender(op) is not None for op in spent)
        rates = [(-e.fee * 10**9 // e.size, e.tx.txid) for e in entries]
        assert rates == sorted(rates)
        chosen = pool.select_for_block(2_000, 4)
        picked = [i.prev_out for t in chosen for i in t.body.inputs]
        assert len(picked) == len(set(picked)) and sum(t.size for t in chosen) <= 2_000


def test_failpoint_mid_recheck_leaves_pool_consistent():
    from timecoin.node import failpoints

    view = _Coins()
    pool = _pool()
    txs = [_fake([_op(i)], fee=1_000 + i) for i in range(5)]
    for tx in txs:
        pool.add(tx, view, H, NOW)
    failpoints.configure("mempool_flush.mid=raise")
    try:
        with pytest.raises(failpoints.FailpointError):
            pool.remove_committed(txs[:2], view, H, NOW)
    finally:
        failpoints.configure("")
    # The block's txs are gone and the order index matches the entries.
    assert list(pool) == [txs[4].txid, txs[3].txid, txs[2].txid]
    assert len(pool) == 3 and pool.size_bytes == 600
    assert [t.txid for t in pool.select_for_block(10_000, 10)] == list(pool)


def test_fee_order_after_small_and_large_blocks():
    # A block taking a few of the pool removes their keys one by one; one taking
    # most of it rebuilds the order from what stays. Both leave the same order.
    view = _Coins()
    pool = _pool()
    txs = [_fake([_op(i)], fee=1_000 + 7 * i) for i in range(12)]
    for tx in txs:
        pool.add(tx, view, H, NOW)
    best_first = [tx.txid for tx in reversed(txs)]
    for block in ([txs[5]], txs[:9]):
        view.spent.update(i.prev_out for t in block for i in t.body.inputs)
        pool.remove_committed(block, view, H + 1, NOW)
        gone = {t.txid for t in block}
        best_first = [t for t in best_first if t not in gone]
        assert list(pool) == best_first
        assert [t.txid for t in pool.select_for_block(10_000, 20)] == best_first
    assert best_first == [txs[11].txid, txs[10].txid, txs[9].txid]


def test_concurrent_adds_from_threads_keep_invariants():
    import threading

    view = _Coins()
    pool = _pool(max_txs=50)
    # Threads 0 and 1 compete for outpoints 0..39, threads 2 and 3 for 2000..2039.
    batches = [
        [_fake([_op(base + i % 40)], fee=fee + i) for i in range(60)]
        for base, fee in ((0, 1_000), (0, 2_000), (2000, 1_500), (2000, 500))
    ]

    def run(batch):
        for tx in batch:
            try:
                pool.add(tx, view, H, NOW)
            except err.TimecoinError:
                pass

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = [pool.entry(t) for t in pool]
    assert len(entries) == len(pool) == 50
    spent = [i.prev_out for e in entries for i in e.tx.body.inputs]
    assert len(spent) == len(set(spent))
    assert pool.size_bytes == sum(e.size for e in entries)


def test_precheck_rejects_cheaply_and_reject_records():
    view = _Coins()
    calls = []

    def validate(tx, view, height):
        calls.append(tx.txid)
        return 1_000

    pool = _pool(validate=validate)
    first = _fake([_op(1)], fee=1_000)
    pool.precheck(first)  # passes: nothing pending yet
    pool.add(first, view, H, NOW)
    rival = _fake([_op(1)], fee=9_000)
    coinbase = _fake([], fee=0)
    raised = []
    for tx, kind in (
        (rival, err.DoubleSpend),
        (first, err.AlreadyKnown),
        (coinbase, err.BadCoinbase),
    ):
        with pytest.raises(kind) as info:
            pool.precheck(tx)
        raised.append((tx, info.value))
    assert calls == [first.txid]  # no validation spent on rejected ones
    # precheck runs off the pool's lock and records nothing; the caller reports.
    assert pool.stats().rejections == {} and pool.status(rival.txid).reason is None
    for tx, exc in raised:
        pool.reject(tx, exc, NOW)
    assert pool.status(rival.txid).reason is R.DOUBLE_SPEND
    assert pool.get(first.txid) is not None  # a pending tx's duplicate is only counted
    assert pool.stats().rejections == {R.DOUBLE_SPEND: 1, R.ALREADY_KNOWN: 1, R.BAD_COINBASE: 1}


def test_precheck_does_not_wait_for_an_admitting_thread():
    import threading

    pool = _pool(validate=lambda tx, view, height: 1_000)
    pool.add(_fake([_op(1)], fee=1_000), _Coins(), H, NOW)
    rival = _fake([_op(1)], fee=9_000)
    held, release = threading.Event(), threading.Event()

    def admitting() -> None:  # the storage thread, in the middle of a batch
        with pool._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=admitting)
    t.start()
    try:
        assert held.wait(5)
        outcome = []

        def check() -> None:
            try:
                pool.precheck(rival)
            except err.DoubleSpend as exc:
                outcome.append(exc)

        loop_side = threading.Thread(target=check)
        loop_side.start()
        loop_side.join(5)
        assert not loop_side.is_alive() and len(outcome) == 1
    finally:
        release.set()
        t.join()


def test_from_config():
    from timecoin.config import MempoolConfig

    pool = Mempool.from_config(PARAMS, MempoolConfig(max_txs=7, max_bytes=5_000, expiry_s=60))
    assert (pool.max_txs, pool.max_bytes, pool.expiry_ms) == (7, 5_000, 60_000)
    assert pool.max_tx_bytes == PARAMS.max_tx_bytes
    assert pool.stats().max_txs == 7


def test_min_fee_rate_hint_gets_a_tx_in():
    view = _Coins()
    pool = _pool(max_txs=2, incremental_units_per_kb=1_000)
    assert pool.min_fee_rate_units_per_kb() == PARAMS.min_fee_units_per_kb
    pool.add(_fake([_op(1)], fee=3_001, size=300), view, H, NOW)  # 10,003.3 units/kB
    pool.add(_fake([_op(2)], fee=9_000, size=300), view, H, NOW)
    hint = pool.min_fee_rate_units_per_kb()
    assert hint == 10_003 + 1_000 + 1
    below = _fake([_op(3)], fee=(hint - 1) * 300 // 1000, size=300)
    with pytest.raises(err.MempoolFull):
        pool.add(below, view, H, NOW)
    at = _fake([_op(4)], fee=-(-hint * 300 // 1000), size=300)
    assert len(pool.add(at, view, H, NOW).evicted) == 1


def test_reject_records_external_rejection(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    tx = _pay(ops[0], 1, 10 * TIME)._replace(signatures=(bytes(64),))
    pool.reject(tx, err.BadSignature("batch verification failed"), NOW)
    assert pool.status(tx.txid).reason is R.BAD_SIGNATURE
    assert pool.stats().rejections == {R.BAD_SIGNATURE: 1}
    with pytest.raises(err.AlreadyKnown):
        pool.add(tx, view, H, NOW)


def test_has_copy_spots_identical_pending_and_committed_txs(funded):
    view, ops = funded
    pool = Mempool(PARAMS)
    tx = _pay(ops[0], 1, 10 * TIME)
    assert not pool.has_copy(tx.txid, tx.signatures)
    pool.add(tx, view, H, NOW)
    assert pool.has_copy(tx.txid, list(tx.signatures))
    # Other signatures for the same body are not a copy: admission decides.
    assert not pool.has_copy(tx.txid, [bytes(64)])
    pool.remove_committed([tx], view, H, NOW)
    assert tx.txid not in pool and pool.has_copy(tx.txid, tx.signatures)
