"""Hypothesis invariants of the ledger, and fuzzing of the validators.

- value is conserved: every block mints exactly the block reward (coinbase minus fees);
- apply then undo restores the UTXO set and its MuHash digest;
- no double spend is ever accepted, whatever the blocks try;
- adversarial dataclass inputs only ever raise TimecoinError subclasses.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ledger_helpers import (
    PARAMS,
    TIME,
    Chain,
    finish_tx,
    key,
    key_for_pkh,
    make_set,
    rehash,
    spend,
)

from timecoin.core.block import validate_block
from timecoin.core.commit import verify_commit, verify_duplicate_vote_evidence
from timecoin.core.errors import BlockTransactionInvalid, Reason, TimecoinError
from timecoin.core.muhash import MuHash3072, coin_element
from timecoin.core.rules import split_by_power
from timecoin.core.tx import validate_coinbase, validate_transaction
from timecoin.core.types import (
    BLOCK_REWARD_UNITS,
    MAX_MONEY_UNITS,
    Coin,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
    Vote,
    VoteType,
)
from timecoin.core.utxo import MemoryUtxoView
from timecoin.core.validators import validator_updates

SLOW = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

OWNERS = 5
ALLOCATION = [(k, 1_000 * TIME) for k in range(1, OWNERS + 1)]
_ = [key(k) for k in range(1, OWNERS + 1)]  # register the keys for key_for_pkh

# One planned transaction: (input picks, output owner picks, fee extra).
tx_plan = st.tuples(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=3),
    st.lists(st.integers(1, OWNERS), min_size=1, max_size=3),
    st.integers(0, 5_000),
)
block_plan = st.lists(tx_plan, max_size=4)


def _spendable(chain: Chain, pending: dict[OutPoint, Coin]) -> list[tuple[OutPoint, Coin]]:
    """Coins a plan may spend: the chain's set plus this block's new outputs, in a fixed order."""
    coins = dict(chain.view.items())
    coins.update(pending)
    return sorted(
        ((op, c) for op, c in coins.items() if key_for_pkh(c.pubkey_hash) is not None),
        key=lambda item: (item[0].txid, item[0].index),
    )


def _make_tx(inputs, owners, extra) -> Transaction | None:
    total = sum(c.amount for _, c in inputs)
    fee = 300 * (len(inputs) + len(owners)) + 500 + extra
    avail = total - fee
    if avail < PARAMS.dust_limit_units * len(owners):
        return None
    share = avail // len(owners)
    amounts = [share] * len(owners)
    amounts[0] += avail - share * len(owners)
    return spend(
        [(op, key_for_pkh(c.pubkey_hash)) for op, c in inputs],
        [(a, key(o).address_payload) for a, o in zip(amounts, owners, strict=True)],
    )


def _valid_block_txs(chain: Chain, plan) -> list[Transaction]:
    """Turn a plan into valid transactions (distinct inputs, earlier outputs only)."""
    pending: dict[OutPoint, Coin] = {}
    used: set[OutPoint] = set()
    txs = []
    for picks, owners, extra in plan:
        pool = [(op, c) for op, c in _spendable(chain, pending) if op not in used]
        if not pool:
            break
        chosen = {}
        for p in picks:
            op, c = pool[p % len(pool)]
            chosen[op] = c
        tx = _make_tx(list(chosen.items()), owners, extra)
        if tx is None:
            continue
        used.update(chosen)
        for i, out in enumerate(tx.body.outputs):
            pending[OutPoint(tx.txid, i)] = Coin(out.amount, out.pubkey_hash, chain.height + 1)
        txs.append(tx)
    return txs


@SLOW
@given(st.lists(block_plan, min_size=1, max_size=4), st.integers(1, 4))
def test_value_conserved_and_undo_restores(plans, n_validators):
    chain = Chain(make_set([1] * n_validators), ALLOCATION)
    snapshot0 = chain.view.snapshot()
    digest0 = chain.muhash.digest()
    for plan in plans:
        before_total = chain.view.total()
        txs = _valid_block_txs(chain, plan)
        result = chain.add(txs)
        created = sum(c.amount for _, c in result.changes.created)
        spent = sum(c.amount for _, c in result.changes.spent)
        assert created - spent == result.reward - result.fees == BLOCK_REWARD_UNITS
        assert chain.view.total() - before_total == BLOCK_REWARD_UNITS
    fresh = MuHash3072.of(*(coin_element(op, c) for op, c in chain.view.items()))
    assert fresh.digest() == chain.muhash.digest()
    while chain.results:
        chain.undo_last()
    assert chain.view.snapshot() == snapshot0
    assert chain.muhash.digest() == digest0


# Adversarial plan: inputs drawn with replacement from every outpoint ever seen.
adv_tx_plan = st.tuples(
    st.lists(st.integers(0, 10_000), min_size=1, max_size=3),
    st.integers(1, OWNERS),
)


@SLOW
@given(st.lists(st.lists(adv_tx_plan, max_size=4), min_size=1, max_size=4))
def test_no_double_spend_is_ever_accepted(plans):
    chain = Chain(make_set([1]), ALLOCATION)
    ever: dict[OutPoint, Coin] = dict(chain.view.items())
    spent_ever: set[OutPoint] = set()
    for plan in plans:
        txs = []
        for picks, owner in plan:
            ordered = sorted(ever.items(), key=lambda item: (item[0].txid, item[0].index))
            inputs = [ordered[p % len(ordered)] for p in picks]
            tx = _make_tx(inputs, [owner], 0)
            if tx is None:
                continue
            for i, out in enumerate(tx.body.outputs):
                ever[OutPoint(tx.txid, i)] = Coin(out.amount, out.pubkey_hash, chain.height + 1)
            txs.append(tx)
        block = chain.build(txs)
        try:
            result = chain.validate(block)
        except BlockTransactionInvalid as exc:
            assert exc.reason in (
                Reason.DOUBLE_SPEND,
                Reason.DUPLICATE_INPUT,
                Reason.MISSING_INPUT,
            )
            block = chain.build()  # move on with an empty block
            result = chain.validate(block)
        inputs = [i.prev_out for tx in block.txs for i in tx.body.inputs]
        assert len(inputs) == len(set(inputs))
        assert not spent_ever & set(inputs)
        spent_ever.update(inputs)
        chain.commit(block, result)
        assert not spent_ever & {op for op, _ in chain.view.items()}


# --- fuzzing: adversarial dataclasses only ever raise TimecoinError ---------------

small_bytes = st.binary(max_size=40)
hashes = st.one_of(st.binary(min_size=32, max_size=32), small_bytes)
big_ints = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, MAX_MONEY_UNITS, MAX_MONEY_UNITS + 1, 2**63, 2**64]),
)
outpoints = st.builds(OutPoint, txid=hashes, index=big_ints)
pubkeys = st.one_of(st.sampled_from([key(1).pubkey, key(2).pubkey]), small_bytes)
txins = st.builds(TxIn, prev_out=outpoints, pubkey=pubkeys)
txouts = st.builds(
    TxOut,
    amount=big_ints,
    pubkey_hash=st.one_of(st.sampled_from([key(1).address_payload]), small_bytes),
)
payloads = st.one_of(
    st.none(),
    st.builds(
        MasternodeRegistration,
        tier=st.one_of(st.sampled_from(list(MasternodeTier)), st.integers(-1, 5)),
        collateral_index=big_ints,
        operator_pubkey=pubkeys,
    ),
    st.builds(MasternodeDeregistration, collateral=outpoints),
)
bodies = st.builds(
    TxBody,
    version=st.one_of(st.just(1), big_ints),
    chain_id=st.sampled_from([PARAMS.chain_id, "", "timecoin-mainnet-1", "x" * 300]),
    inputs=st.lists(txins, max_size=4).map(tuple),
    outputs=st.lists(txouts, max_size=4).map(tuple),
    memo=st.binary(max_size=300),
    coinbase_height=big_ints,
    masternode=payloads,
)


@st.composite
def adversarial_txs(draw):
    body = draw(bodies)
    if draw(st.booleans()):
        # Real signatures over the real body by key 1, sometimes.
        return finish_tx(body, [key(1)] * len(body.inputs), sign_chain_id=PARAMS.chain_id)
    return Transaction(
        body_bytes=draw(st.binary(max_size=64)),
        signatures=tuple(draw(st.lists(st.binary(max_size=66), max_size=4))),
        body=body,
        txid=draw(hashes),
        size=draw(st.integers(-5, 200_000)),
    )


@FUZZ
@given(adversarial_txs(), st.lists(st.tuples(outpoints, big_ints)), st.integers(0, 100))
def test_fuzz_transaction_validation(tx, coins, height):
    view = MemoryUtxoView(
        {op: Coin(abs(a) % (MAX_MONEY_UNITS + 2), key(1).address_payload, 0) for op, a in coins}
    )
    for op in [i.prev_out for i in tx.body.inputs][:2]:
        view = MemoryUtxoView({**view.snapshot(), op: Coin(10 * TIME, key(1).address_payload, 0)})
    try:
        validate_transaction(tx, view, height, PARAMS)
    except TimecoinError:
        pass
    try:
        validate_coinbase(tx, height, [(key(1).address_payload, TIME)], 100 * TIME, PARAMS)
    except TimecoinError:
        pass


votes = st.builds(
    Vote,
    type=st.one_of(st.sampled_from(list(VoteType)), st.integers(-1, 300)),
    height=big_ints,
    round=big_ints,
    block_hash=hashes,
    validator_address=st.one_of(
        st.sampled_from([v.address for v in make_set([1, 1]).validators]), small_bytes
    ),
    signature=st.binary(max_size=70),
)
commits = st.builds(
    Commit,
    height=big_ints,
    round=big_ints,
    block_hash=hashes,
    signatures=st.lists(
        st.builds(
            CommitSig,
            validator_address=st.one_of(
                st.sampled_from([v.address for v in make_set([1, 1]).validators]),
                st.binary(max_size=300),
            ),
            signature=st.binary(max_size=300),
        ),
        max_size=4,
    ).map(tuple),
)


@FUZZ
@given(commits, votes, votes)
def test_fuzz_commit_and_evidence(commit, a, b):
    vs = make_set([1, 1])
    try:
        verify_commit(PARAMS.chain_id, commit, vs, height=5, block_hash=b"\x01" * 32)
    except TimecoinError:
        pass
    try:
        verify_duplicate_vote_evidence(PARAMS.chain_id, DuplicateVoteEvidence(a, b), vs)
    except TimecoinError:
        pass


_HEADER_FIELDS = {
    "version": big_ints,
    "chain_id": st.sampled_from([PARAMS.chain_id, "other"]),
    "height": big_ints,
    "time_ms": big_ints,
    "prev_block_hash": hashes,
    "tx_root": hashes,
    "last_commit_hash": hashes,
    "validators_hash": hashes,
    "next_validators_hash": hashes,
    "utxo_commitment": hashes,
    "proposer_address": small_bytes,
    "evidence_hash": hashes,
}


@FUZZ
@given(
    st.dictionaries(st.sampled_from(sorted(_HEADER_FIELDS)), st.none(), max_size=3).flatmap(
        lambda d: st.fixed_dictionaries({k: _HEADER_FIELDS[k] for k in d})
    ),
    st.one_of(st.none(), commits),
    st.lists(st.builds(DuplicateVoteEvidence, votes, votes), max_size=2),
    st.lists(adversarial_txs(), max_size=2),
    st.booleans(),
)
def test_fuzz_block_validation(header_changes, commit, evidence, extra_txs, keep_commit):
    chain = Chain(make_set([1, 1]), ALLOCATION)
    chain.add()
    block = chain.build(list(extra_txs))
    if not keep_commit:
        block = replace(block, last_commit=commit)
    block = rehash(replace(block, evidence=tuple(evidence)), **header_changes)
    try:
        validate_block(block, chain.context(), chain.view, chain.rules, chain.muhash)
    except TimecoinError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10**12),
    st.lists(st.sampled_from([1, 10, 100]), min_size=1, max_size=6),
    st.integers(0, 5),
    st.integers(0, 6),
)
def test_reward_split_pays_exactly_the_total(total, powers, proposer_idx, n_signers):
    vs = make_set(powers)
    proposer = vs.validators[proposer_idx % len(vs)]
    signers = list(vs.validators[:n_signers])
    outs = split_by_power(
        total, proposer, signers, proposer_share_percent=20, dust_limit_units=1_000
    )
    assert sum(a for _, a in outs) == total
    assert all(a > 0 for _, a in outs)
    assert [p for p, _ in outs] == sorted({p for p, _ in outs})
    if total and not signers:
        assert outs == [(proposer.address, total)]


@FUZZ
@given(st.lists(adversarial_txs(), max_size=3), st.booleans())
def test_fuzz_validator_updates(txs, strict):
    try:
        validator_updates(txs, make_set([1, 1]), strict=strict)
    except TimecoinError:
        pass
