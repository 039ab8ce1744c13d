"""Transaction validation: every rule, and the original TimeCoin bugs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_helpers import PARAMS, TIME, coinbase_tx, finish_tx, funded_view, key, pkh, spend

import timecoin.core.tx as txmod
from timecoin.core import errors as err
from timecoin.core.hashing import sha256
from timecoin.core.keys import _CURVE_ORDER, is_valid_signature
from timecoin.core.params import ChainParams
from timecoin.core.tx import (
    check_signatures,
    effective_size,
    signatures_valid,
    validate_coinbase,
    validate_transaction,
    validate_transaction_stateless,
)
from timecoin.core.types import (
    MAX_MONEY_UNITS,
    Coin,
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    Transaction,
)
from timecoin.core.utxo import MemoryUtxoView

FEE = 10_000


@pytest.fixture
def funded():
    return funded_view([(1, 10 * TIME), (2, 5 * TIME), (1, 3 * TIME)])


def _simple(ops, **kw):
    return spend([(ops[0], key(1))], [(10 * TIME - FEE, pkh(3))], **kw)


def test_valid_transaction_returns_fee(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1)), (ops[1], key(2))], [(14 * TIME, pkh(3)), (TIME - FEE, pkh(1))])
    assert validate_transaction(tx, view, 1, PARAMS) == FEE


def test_coinbase_never_valid_alone(funded):
    view, _ = funded
    cb = coinbase_tx(1, [(pkh(1), 100 * TIME)])
    with pytest.raises(err.BadCoinbase):
        validate_transaction(cb, view, 1, PARAMS)


def test_wrong_version_and_chain(funded):
    view, ops = funded
    tx = _simple(ops)
    with pytest.raises(err.BadVersion):
        validate_transaction_stateless(finish_tx(tx.body._replace(version=2), [key(1)]), PARAMS)
    other = ChainParams.for_network("devnet", chain_id="timecoin-devnet-2")
    with pytest.raises(err.WrongChain):
        validate_transaction(tx, view, 1, other)


# --- signatures: the original bypass and replay bugs ----------------------


@pytest.mark.parametrize("sigs", [(), (b"",), (b"\x00" * 63,), (b"\x00" * 65,)])
def test_empty_or_short_signatures_rejected(funded, sigs):
    view, ops = funded
    tx = _simple(ops, signatures=sigs)
    with pytest.raises(err.BadSignature):
        validate_transaction(tx, view, 1, PARAMS)
    assert not signatures_valid(tx, PARAMS.chain_id)


def test_zero_signature_rejected(funded):
    view, ops = funded
    tx = _simple(ops, signatures=[b"\x00" * 64])
    with pytest.raises(err.BadSignature):
        validate_transaction(tx, view, 1, PARAMS)


def test_signature_for_other_chain_rejected(funded):
    """Same body signed for chain A does not verify on chain B (cross-chain replay)."""
    view, ops = funded
    chain_b = ChainParams.for_network("devnet", chain_id="timecoin-devnet-b")
    # Body names chain B (so it passes the chain check) but was signed for chain A.
    tx = _simple(ops, chain_id=chain_b.chain_id, sign_chain_id=PARAMS.chain_id)
    with pytest.raises(err.BadSignature):
        validate_transaction(tx, view, 1, chain_b)
    # Properly signed for B it is fine on B, and rejected on A.
    tx_b = _simple(ops, chain_id=chain_b.chain_id)
    assert validate_transaction(tx_b, view, 1, chain_b) == FEE
    with pytest.raises(err.WrongChain):
        validate_transaction(tx_b, view, 1, PARAMS)


def test_signature_by_wrong_key_rejected(funded):
    view, ops = funded
    good = _simple(ops)
    forged = _simple(ops, signatures=[key(9).sign(b"\x11" * 32)])
    assert validate_transaction(good, view, 1, PARAMS) == FEE
    with pytest.raises(err.BadSignature):
        validate_transaction(forged, view, 1, PARAMS)


def test_signatures_in_wrong_order_rejected(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1)), (ops[1], key(2))], [(15 * TIME - FEE, pkh(3))])
    swapped = Transaction(tx.body_bytes, tx.signatures[::-1], tx.body, tx.txid, tx.size)
    with pytest.raises(err.BadSignature):
        validate_transaction(swapped, view, 1, PARAMS)


def test_high_s_signature_rejected(funded):
    view, ops = funded
    tx = _simple(ops)
    sig = tx.signatures[0]
    s = int.from_bytes(sig[32:], "big")
    high = sig[:32] + (_CURVE_ORDER - s).to_bytes(32, "big")
    malleated = Transaction(tx.body_bytes, (high,), tx.body, tx.txid, tx.size)
    with pytest.raises(err.BadSignature):
        validate_transaction(malleated, view, 1, PARAMS)


def test_signature_scalars_out_of_range_never_verify():
    # The rule is libsecp256k1's: r and s in [1, n), s in the lower half (no malleated twin).
    k = key(1)
    digest = sha256(b"digest")
    sig = k.sign(digest)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    assert is_valid_signature(k.pubkey, sig, digest)
    n, be = _CURVE_ORDER, lambda x: x.to_bytes(32, "big")  # noqa: E731
    for bad in (
        be(0) + be(s),
        be(r) + be(0),
        be(n) + be(s),
        be(r) + be(n),
        be(r) + be(n - s),  # the high-S twin of a valid signature
        b"\xff" * 64,
    ):
        assert not is_valid_signature(k.pubkey, bad, digest)
    assert not is_valid_signature(k.pubkey, sig, sha256(b"other"))
    assert not is_valid_signature(k.pubkey[:32], sig, digest)
    assert not is_valid_signature(k.pubkey, sig[:63], digest)


def test_signatures_cover_the_exact_body_bytes(funded):
    view, ops = funded
    tx = _simple(ops)
    tampered_bytes = tx.body_bytes + b"\x00"
    tampered = Transaction(tampered_bytes, tx.signatures, tx.body, tx.txid, tx.size)
    with pytest.raises(err.BadSignature):
        check_signatures(tampered, PARAMS.chain_id)


def test_each_signature_verified_once_and_last(funded, monkeypatch):
    view, ops = funded
    calls = []
    real = txmod.is_valid_signature

    def counting(pub, sig, digest):
        calls.append(pub)
        return real(pub, sig, digest)

    monkeypatch.setattr(txmod, "is_valid_signature", counting)
    tx = spend([(ops[0], key(1)), (ops[2], key(1))], [(13 * TIME - FEE, pkh(3))])
    validate_transaction(tx, view, 1, PARAMS)
    assert len(calls) == 2
    # A cheap failure (missing input) never reaches signature verification.
    calls.clear()
    bad = spend([(OutPoint(b"\x01" * 32, 0), key(1))], [(TIME, pkh(3))])
    with pytest.raises(err.MissingInput):
        validate_transaction(bad, view, 1, PARAMS)
    assert calls == []


def test_precomputed_signature_flag(funded):
    view, ops = funded
    forged = _simple(ops, signatures=[b"\x01" * 64])
    # sig_ok=True is the caller's promise that signatures were verified elsewhere.
    assert validate_transaction(forged, view, 1, PARAMS, sig_ok=True) == FEE
    with pytest.raises(err.BadSignature):
        validate_transaction(_simple(ops), view, 1, PARAMS, sig_ok=False)
    assert signatures_valid(_simple(ops), PARAMS.chain_id)
    assert not signatures_valid(forged, PARAMS.chain_id)


def test_prechecked_flag_skips_only_the_stateless_checks(funded):
    view, ops = funded
    tx = _simple(ops)
    # The chain id is a stateless check only: with params of another chain the
    # transaction is refused unless the caller says it ran those checks itself.
    other = replace(PARAMS, chain_id="timecoin-other-1")
    with pytest.raises(err.WrongChain):
        validate_transaction(tx, view, 1, other, sig_ok=True)
    assert validate_transaction(tx, view, 1, other, prechecked=True, sig_ok=True) == FEE
    assert validate_transaction(tx, view, 1, PARAMS, prechecked=True) == FEE
    # The stateful checks still run: a spent input is refused either way.
    gone = MemoryUtxoView(())
    with pytest.raises(err.MissingInput):
        validate_transaction(tx, gone, 1, PARAMS, prechecked=True, sig_ok=True)


# --- inputs -----------------------------------------------------------------


def test_duplicate_input(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1)), (ops[0], key(1))], [(20 * TIME - FEE, pkh(3))])
    with pytest.raises(err.DuplicateInput):
        validate_transaction_stateless(tx, PARAMS)


def test_missing_input(funded):
    view, ops = funded
    tx = spend([(OutPoint(ops[0].txid, 7), key(1))], [(TIME, pkh(3))])
    with pytest.raises(err.MissingInput):
        validate_transaction(tx, view, 1, PARAMS)


def test_wrong_owner(funded):
    view, ops = funded
    # Key 2 signs correctly, but the coin belongs to key 1.
    tx = spend([(ops[0], key(2))], [(TIME, pkh(3))])
    with pytest.raises(err.WrongOwner):
        validate_transaction(tx, view, 1, PARAMS)


def test_bad_pubkey_length(funded):
    view, ops = funded
    tx = _simple(ops)
    body = tx.body._replace(
        inputs=(tx.body.inputs[0]._replace(pubkey=tx.body.inputs[0].pubkey[:32]),)
    )
    with pytest.raises(err.BadPubkey):
        validate_transaction_stateless(finish_tx(body, signatures=tx.signatures), PARAMS)


def test_coinbase_maturity_when_configured():
    view = MemoryUtxoView(
        {OutPoint(b"\x02" * 32, 0): Coin(10 * TIME, pkh(1), height=5, is_coinbase=True)}
    )
    tx = spend([(OutPoint(b"\x02" * 32, 0), key(1))], [(10 * TIME - FEE, pkh(3))])
    assert validate_transaction(tx, view, 6, PARAMS) == FEE  # maturity 0 (BFT finality)
    strict = replace(PARAMS, coinbase_maturity=10)
    with pytest.raises(err.MissingInput):
        validate_transaction(tx, view, 6, strict)
    assert validate_transaction(tx, view, 15, strict) == FEE


# --- amounts ----------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, -1, 1, PARAMS.dust_limit_units - 1])
def test_zero_and_dust_outputs_rejected(funded, amount):
    """Zero-value padding outputs (original bug) and dust are refused."""
    view, ops = funded
    tx = spend([(ops[0], key(1))], [(9 * TIME, pkh(3)), (amount, pkh(4))])
    with pytest.raises(err.DustOutput):
        validate_transaction(tx, view, 1, PARAMS)


def test_dust_limit_itself_is_allowed(funded):
    view, ops = funded
    d = PARAMS.dust_limit_units
    tx = spend([(ops[0], key(1))], [(10 * TIME - FEE - d, pkh(3)), (d, pkh(4))])
    assert validate_transaction(tx, view, 1, PARAMS) == FEE


def test_output_overflow(funded):
    view, ops = funded
    with pytest.raises(err.ValueOverflow):
        validate_transaction(
            spend([(ops[0], key(1))], [(MAX_MONEY_UNITS + 1, pkh(3))]), view, 1, PARAMS
        )
    half = MAX_MONEY_UNITS // 2 + 1
    with pytest.raises(err.ValueOverflow):
        validate_transaction(
            spend([(ops[0], key(1))], [(half, pkh(3)), (half, pkh(4))]), view, 1, PARAMS
        )


def test_input_sum_overflow():
    big = MAX_MONEY_UNITS
    view = MemoryUtxoView(
        {
            OutPoint(b"\x03" * 32, 0): Coin(big, pkh(1), 0),
            OutPoint(b"\x03" * 32, 1): Coin(big, pkh(1), 0),
        }
    )
    tx = spend(
        [(OutPoint(b"\x03" * 32, 0), key(1)), (OutPoint(b"\x03" * 32, 1), key(1))],
        [(TIME, pkh(3))],
    )
    with pytest.raises(err.ValueOverflow):
        validate_transaction(tx, view, 1, PARAMS)


def test_insufficient_funds(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1))], [(10 * TIME + 1, pkh(3))])
    with pytest.raises(err.InsufficientFunds):
        validate_transaction(tx, view, 1, PARAMS)


def test_fee_rate(funded):
    view, ops = funded
    # The output amount's varint length changes the size, so probe with a close amount.
    probe = spend([(ops[0], key(1))], [(10 * TIME - 300, pkh(3))])
    need = PARAMS.min_fee(effective_size(probe))
    assert 0 < need < 300
    exact = spend([(ops[0], key(1))], [(10 * TIME - need, pkh(3))])
    assert validate_transaction(exact, view, 1, PARAMS) == need
    short = spend([(ops[0], key(1))], [(10 * TIME - need + 1, pkh(3))])
    with pytest.raises(err.FeeTooLow):
        validate_transaction(short, view, 1, PARAMS)


def test_fee_rate_cannot_be_dodged_by_understating_size(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1))], [(10 * TIME, pkh(3))])  # zero fee
    liar = Transaction(tx.body_bytes, tx.signatures, tx.body, tx.txid, size=0)
    assert effective_size(liar) >= len(tx.body_bytes) + 64
    with pytest.raises(err.FeeTooLow):
        validate_transaction(liar, view, 1, PARAMS)


def test_min_fee_rounds_up():
    p = replace(PARAMS, min_fee_units_per_kb=1000)
    assert p.min_fee(1) == 1
    assert p.min_fee(1000) == 1000
    assert p.min_fee(1001) == 1001
    assert replace(PARAMS, min_fee_units_per_kb=1).min_fee(1) == 1


# --- bounds -----------------------------------------------------------------


def test_memo_bound(funded):
    view, ops = funded
    ok = _simple(ops, memo=b"m" * PARAMS.max_memo_bytes)
    assert validate_transaction(ok, view, 1, PARAMS) == FEE
    with pytest.raises(err.MemoTooLarge):
        validate_transaction(_simple(ops, memo=b"m" * (PARAMS.max_memo_bytes + 1)), view, 1, PARAMS)


def test_count_and_size_bounds(funded):
    view, ops = funded
    tight = replace(PARAMS, max_inputs=1, max_outputs=1)
    two_in = spend([(ops[0], key(1)), (ops[2], key(1))], [(TIME, pkh(3))])
    two_out = spend([(ops[0], key(1))], [(TIME, pkh(3)), (TIME, pkh(4))])
    with pytest.raises(err.TooManyItems):
        validate_transaction_stateless(two_in, tight)
    with pytest.raises(err.TooManyItems):
        validate_transaction_stateless(two_out, tight)
    with pytest.raises(err.InvalidTransaction) as exc:
        validate_transaction_stateless(two_in, replace(PARAMS, max_tx_bytes=50))
    assert exc.value.reason == err.Reason.OVERSIZED
    with pytest.raises(err.InvalidTransaction):
        validate_transaction_stateless(spend([(ops[0], key(1))], []), PARAMS)


def test_signature_count_must_match_inputs(funded):
    view, ops = funded
    tx = spend([(ops[0], key(1)), (ops[2], key(1))], [(TIME, pkh(3))])
    one = Transaction(tx.body_bytes, tx.signatures[:1], tx.body, tx.txid, tx.size)
    with pytest.raises(err.BadSignature):
        validate_transaction(one, view, 1, PARAMS)


# --- masternode payloads ----------------------------------------------------


def _register(ops, tier=MasternodeTier.BRONZE, amount=None, index=0, operator=None):
    amount = tier.collateral_units if amount is None else amount
    reg = MasternodeRegistration(
        tier=tier, collateral_index=index, operator_pubkey=operator or key(50).pubkey
    )
    return spend([(ops[0], key(1))], [(amount, pkh(1)), (TIME, pkh(1))], masternode=reg)


@pytest.fixture
def rich():
    return funded_view([(1, 2_000 * TIME)])


def test_registration_valid(rich):
    view, ops = rich
    tx = _register(ops)
    fee = 2_000 * TIME - MasternodeTier.BRONZE.collateral_units - TIME
    assert validate_transaction(tx, view, 1, PARAMS) == fee


def test_registration_wrong_collateral(rich):
    view, ops = rich
    with pytest.raises(err.BadCollateral):
        validate_transaction(_register(ops, amount=1_000 * TIME + 1), view, 1, PARAMS)
    with pytest.raises(err.BadCollateral):
        validate_transaction(_register(ops, amount=999 * TIME), view, 1, PARAMS)
    with pytest.raises(err.BadCollateral):
        validate_transaction(_register(ops, index=2), view, 1, PARAMS)
    with pytest.raises(err.BadCollateral):  # Silver needs 10,000 TIME
        validate_transaction(
            _register(ops, tier=MasternodeTier.SILVER, amount=1_000 * TIME), view, 1, PARAMS
        )


@pytest.mark.parametrize("operator", [b"\x02" + b"\x00" * 32, b"\x05" * 33, b"\x02" * 10])
def test_registration_bad_operator_key(rich, operator):
    view, ops = rich
    with pytest.raises(err.BadPayload):
        validate_transaction(_register(ops, operator=operator), view, 1, PARAMS)


def test_deregistration_must_spend_collateral(funded):
    view, ops = funded
    ok = spend(
        [(ops[0], key(1))],
        [(10 * TIME - FEE, pkh(1))],
        masternode=MasternodeDeregistration(ops[0]),
    )
    assert validate_transaction(ok, view, 1, PARAMS) == FEE
    bad = spend(
        [(ops[0], key(1))],
        [(10 * TIME - FEE, pkh(1))],
        masternode=MasternodeDeregistration(ops[1]),
    )
    with pytest.raises(err.BadCollateral):
        validate_transaction(bad, view, 1, PARAMS)


# --- coinbase -----------------------------------------------------------------


def test_coinbase_valid():
    expected = [(pkh(1), 90 * TIME), (pkh(2), 10 * TIME)]
    cb = coinbase_tx(7, expected)
    assert validate_coinbase(cb, 7, expected, 100 * TIME, PARAMS) == 100 * TIME


def test_coinbase_paying_more_than_allowed_rejected():
    """The original TimeCoin accepted a coinbase that paid more than the reward."""
    greedy = [(pkh(1), 100 * TIME + 1)]
    with pytest.raises(err.BadReward):
        validate_coinbase(coinbase_tx(7, greedy), 7, greedy, 100 * TIME, PARAMS)


def test_coinbase_must_match_split_exactly():
    expected = [(pkh(1), 90 * TIME), (pkh(2), 10 * TIME)]
    for outs in (
        [(pkh(1), 100 * TIME)],
        [(pkh(2), 10 * TIME), (pkh(1), 90 * TIME)],
        [(pkh(1), 90 * TIME), (pkh(2), 10 * TIME - 1)],
        [(pkh(1), 90 * TIME), (pkh(3), 10 * TIME)],
    ):
        with pytest.raises(err.BadCoinbase):
            validate_coinbase(coinbase_tx(7, outs), 7, expected, 100 * TIME, PARAMS)


def test_coinbase_zero_output_and_height():
    with pytest.raises(err.DustOutput):
        validate_coinbase(coinbase_tx(7, [(pkh(1), 0)]), 7, [(pkh(1), 0)], 100 * TIME, PARAMS)
    expected = [(pkh(1), TIME)]
    with pytest.raises(err.BadCoinbase):
        validate_coinbase(coinbase_tx(6, expected), 7, expected, 100 * TIME, PARAMS)


def test_coinbase_with_inputs_or_signatures_rejected(funded):
    _, ops = funded
    expected = [(pkh(1), TIME)]
    withsig = coinbase_tx(7, expected)
    withsig = Transaction(
        withsig.body_bytes, (b"\x01" * 64,), withsig.body, withsig.txid, withsig.size
    )
    with pytest.raises(err.BadCoinbase):
        validate_coinbase(withsig, 7, expected, 100 * TIME, PARAMS)
    normal = spend([(ops[0], key(1))], [(TIME, pkh(1))])
    with pytest.raises(err.BadCoinbase):
        validate_coinbase(normal, 0, expected, 100 * TIME, PARAMS)


@pytest.mark.parametrize("index", [-1, 2**32])
def test_outpoint_index_range(funded, index):
    view, ops = funded
    tx = spend([(OutPoint(ops[0].txid, index), key(1))], [(TIME, pkh(3))])
    with pytest.raises(err.InvalidTransaction):
        validate_transaction_stateless(tx, PARAMS)


def test_coinbase_bounded_by_block_size_not_tx_size():
    expected = [(pkh(i), TIME) for i in range(1, 40)]
    cb = coinbase_tx(7, expected)
    tight = replace(PARAMS, max_tx_bytes=100)
    assert validate_coinbase(cb, 7, expected, 100 * TIME, tight) == 39 * TIME
    with pytest.raises(err.InvalidTransaction) as exc:
        validate_coinbase(cb, 7, expected, 100 * TIME, replace(tight, max_block_bytes=100))
    assert exc.value.reason == err.Reason.OVERSIZED
