"""Block validation: header, commit, order, coinbase, commitment, undo."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_helpers import (
    PARAMS,
    TIME,
    Chain,
    coinbase_tx,
    encode_header,
    key,
    make_commit,
    make_set,
    make_validator,
    pkh,
    rehash,
    signed_vote,
    spend,
)

from timecoin.core import errors as err
from timecoin.core.block import build_block_template, check_block_signatures
from timecoin.core.commit import make_duplicate_vote_evidence
from timecoin.core.hashing import sha256
from timecoin.core.merkle import merkle_root
from timecoin.core.muhash import MuHash3072, coin_element
from timecoin.core.rules import DefaultLedgerRules
from timecoin.core.types import BLOCK_REWARD_UNITS, Block, BlockHeader, OutPoint

FEE = 10_000
R = err.Reason


@pytest.fixture
def chain() -> Chain:
    return Chain(make_set([1, 1, 1, 1]), [(1, 50 * TIME), (2, 20 * TIME), (1, 5 * TIME)])


def _reason(exc_info) -> R:
    return exc_info.value.reason


def test_chain_of_blocks(chain):
    tx = spend(
        [(chain.genesis_outpoint(0), key(1))], [(30 * TIME, pkh(3)), (20 * TIME - FEE, pkh(1))]
    )
    r1 = chain.add([tx])
    assert r1.fees == FEE
    assert r1.reward == BLOCK_REWARD_UNITS + FEE
    assert r1.signers == ()  # block 1 has no last commit
    r2 = chain.add()
    assert len(r2.signers) == 4
    assert r2.reward == BLOCK_REWARD_UNITS
    # Spend an output created two blocks ago, then a coinbase output.
    tx3 = spend([(_op(chain.blocks[0].txs[1], 0), key(3))], [(30 * TIME - FEE, pkh(4))])
    chain.add([tx3])
    cb_owner = chain.blocks[0].txs[0].body.outputs[0].pubkey_hash
    assert cb_owner == make_set([1, 1, 1, 1]).validators[0].address  # reward_pubkey_hash empty
    # The commitment equals a MuHash built from scratch over the whole set.
    fresh = MuHash3072.of(*(coin_element(op, c) for op, c in chain.view.items()))
    assert chain.muhash.digest() == fresh.digest()
    assert chain.results[-1].utxo_commitment == fresh.digest()


def _op(tx, i):
    return OutPoint(tx.txid, i)


# --- header -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "cls", "reason"),
    [
        ({"version": 2}, err.BadHeader, R.BAD_VERSION),
        ({"chain_id": "timecoin-testnet-1"}, err.BadHeader, R.WRONG_CHAIN),
        ({"height": 2}, err.BadHeight, R.BAD_HEIGHT),
        ({"prev_block_hash": b"\x01" * 32}, err.BadPrevHash, R.BAD_PREV_HASH),
        ({"validators_hash": b"\x01" * 32}, err.BadValidatorsHash, R.BAD_VALIDATORS_HASH),
        ({"next_validators_hash": b"\x01" * 32}, err.BadValidatorsHash, R.BAD_VALIDATORS_HASH),
        ({"proposer_address": b"\x01" * 20}, err.BadProposer, R.BAD_PROPOSER),
        ({"tx_root": b"\x01" * 32}, err.BadMerkleRoot, R.BAD_MERKLE_ROOT),
        ({"utxo_commitment": b"\x01" * 32}, err.BadUtxoCommitment, R.BAD_UTXO_COMMITMENT),
        ({"last_commit_hash": b"\x01" * 32}, err.BadCommit, R.BAD_COMMIT),
        ({"evidence_hash": b"\x01" * 32}, err.BadEvidence, R.BAD_EVIDENCE),
    ],
)
def test_header_fields(chain, changes, cls, reason):
    good = chain.build()
    chain.validate(good)
    with pytest.raises(cls) as exc:
        chain.validate(rehash(good, **changes))
    assert _reason(exc) == reason


def test_block_hash_must_cover_header_bytes(chain):
    good = chain.build()
    with pytest.raises(err.BadHeader):
        chain.validate(replace(good, hash=b"\x00" * 32))
    with pytest.raises(err.BadHeader):
        chain.validate(replace(good, header_bytes=good.header_bytes + b"\x00"))


def test_block_time(chain):
    chain.validate(chain.build(time_ms=chain.prev_time_ms + 1))
    with pytest.raises(err.BadTime):
        chain.validate(chain.build(time_ms=chain.prev_time_ms))
    ctx_max = chain.prev_time_ms + 5_000
    chain.validate(chain.build(time_ms=ctx_max), max_time_ms=ctx_max)
    with pytest.raises(err.BadTime):
        chain.validate(chain.build(time_ms=ctx_max + 1), max_time_ms=ctx_max)


def test_expected_proposer(chain):
    vs = chain.sets[1]
    block = chain.build(proposer=vs.validators[2])
    chain.validate(block)
    chain.validate(block, expected_proposer=vs.validators[2].address)
    with pytest.raises(err.BadProposer):
        chain.validate(block, expected_proposer=vs.validators[1].address)
    outsider = make_validator(77)
    with pytest.raises(err.BadProposer):
        chain.validate(chain.build(proposer=outsider))


# --- last commit ----------------------------------------------------------------


def test_last_commit_rules(chain):
    with pytest.raises(err.BadCommit):  # block 1 must not carry a commit
        chain.validate(chain.build(last_commit=make_commit(chain.sets[1], 0, b"\x00" * 32)))
    chain.add()
    with pytest.raises(err.BadCommit):  # block 2 must carry one
        chain.validate(chain.build(last_commit=None))
    vs = chain.sets[1]
    weak = make_commit(vs, 1, chain.prev_hash, signers=vs.validators[:2])
    with pytest.raises(err.BadCommit):
        chain.validate(chain.build(last_commit=weak))
    wrong_block = make_commit(vs, 1, b"\x07" * 32)
    with pytest.raises(err.BadCommit):
        chain.validate(chain.build(last_commit=wrong_block))
    three = make_commit(vs, 1, chain.prev_hash, signers=vs.validators[1:])
    result = chain.validate(chain.build(last_commit=three))
    assert result.signers == vs.validators[1:]


def test_reward_split_follows_commit_signers(chain):
    chain.add()
    vs = chain.sets[1]
    three = make_commit(vs, 1, chain.prev_hash, signers=vs.validators[1:])
    block = chain.build(last_commit=three)
    paid = {o.pubkey_hash for o in block.txs[0].body.outputs}
    assert vs.validators[0].address in paid  # the proposer
    # Claiming the reward split of the full commit while carrying three signatures fails.
    full_cb = chain.build().txs[0]
    forged = chain.build(last_commit=three, coinbase=full_cb)
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(forged)
    assert _reason(exc) == R.BAD_COINBASE


# --- transactions and order -------------------------------------------------------


def test_merkle_order_is_block_order(chain):
    """The original TimeCoin hashed txids in a non-deterministic order."""
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    b = spend([(chain.genesis_outpoint(1), key(2))], [(20 * TIME - FEE, pkh(4))])
    ab = chain.build([a, b])
    ba = chain.build([b, a])
    assert ab.header.tx_root != ba.header.tx_root
    chain.validate(ab)
    chain.validate(ba)
    swapped = replace(ab, txs=(ab.txs[0], b, a))
    with pytest.raises(err.BadMerkleRoot):
        chain.validate(swapped)
    assert ab.header.tx_root == merkle_root([t.txid for t in ab.txs])


def test_first_tx_must_be_coinbase(chain):
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    good = chain.build([a])
    no_cb = rehash(replace(good, txs=(a,)), tx_root=merkle_root([a.txid]))
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(no_cb)
    assert _reason(exc) == R.BAD_COINBASE and exc.value.index == 0
    extra_cb = coinbase_tx(1, [(pkh(9), TIME)])
    two_cb = chain.build([a, extra_cb])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(two_cb)
    assert _reason(exc) == R.BAD_COINBASE and exc.value.index == 2


def test_coinbase_paying_more_than_allowed(chain):
    vs = chain.sets[1]
    greedy = coinbase_tx(1, [(vs.validators[0].address, BLOCK_REWARD_UNITS + 1)])
    with pytest.raises(err.BadReward):
        chain.validate(chain.build(coinbase=greedy))
    stingy = coinbase_tx(1, [(vs.validators[0].address, BLOCK_REWARD_UNITS - 1)])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build(coinbase=stingy))
    assert _reason(exc) == R.BAD_COINBASE
    wrong_height = coinbase_tx(2, [(vs.validators[0].address, BLOCK_REWARD_UNITS)])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build(coinbase=wrong_height))
    assert _reason(exc) == R.BAD_COINBASE


def test_double_spend_in_block(chain):
    op = chain.genesis_outpoint(0)
    a = spend([(op, key(1))], [(50 * TIME - FEE, pkh(3))])
    b = spend([(op, key(1))], [(50 * TIME - 2 * FEE, pkh(4))])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([a, b]))
    assert _reason(exc) == R.DOUBLE_SPEND and exc.value.index == 2
    assert isinstance(exc.value.cause, err.DoubleSpend)


def test_double_spend_across_blocks(chain):
    op = chain.genesis_outpoint(0)
    chain.add([spend([(op, key(1))], [(50 * TIME - FEE, pkh(3))])])
    again = spend([(op, key(1))], [(50 * TIME - 2 * FEE, pkh(4))])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([again]))
    assert _reason(exc) == R.MISSING_INPUT


def test_intra_block_spend_only_of_earlier_txs(chain):
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    b = spend([(_op(a, 0), key(3))], [(50 * TIME - 2 * FEE, pkh(4))])
    result = chain.validate(chain.build([a, b]))
    created = {op for op, _ in result.changes.created}
    spent = {op for op, _ in result.changes.spent}
    assert _op(a, 0) not in created and _op(a, 0) not in spent  # netted out
    assert _op(b, 0) in created and chain.genesis_outpoint(0) in spent
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([b, a]))
    assert _reason(exc) == R.MISSING_INPUT and exc.value.index == 1


def test_coinbase_output_not_spendable_in_its_block(chain):
    block = chain.build()
    cb = block.txs[0]
    first = cb.body.outputs[0]
    owner = next(i for i in range(1000, 1004) if key(i).address_payload == first.pubkey_hash)
    steal = spend([(_op(cb, 0), key(owner))], [(first.amount - FEE, pkh(3))])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([steal]))
    assert _reason(exc) == R.MISSING_INPUT


def test_invalid_tx_reason_is_kept(chain):
    bad_sig = spend(
        [(chain.genesis_outpoint(0), key(1))],
        [(50 * TIME - FEE, pkh(3))],
        signatures=[b""],
    )
    block = chain.build([bad_sig])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(block)
    assert _reason(exc) == R.BAD_SIGNATURE and exc.value.index == 1
    forged = spend(
        [(chain.genesis_outpoint(0), key(1))],
        [(50 * TIME - FEE, pkh(3))],
        signatures=[b"\x01" * 64],
    )
    # With signatures verified by the caller (batch), the block is not re-verified.
    chain.validate(chain.build([forged]), signatures_checked=True)
    with pytest.raises(err.BlockTransactionInvalid):
        chain.validate(chain.build([forged]))


def test_block_bounds(chain):
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    block = chain.build([a])
    with pytest.raises(err.InvalidBlock) as exc:
        chain.validate(block, params=replace(PARAMS, max_block_txs=1))
    assert _reason(exc) == R.TOO_MANY_ITEMS
    with pytest.raises(err.InvalidBlock) as exc:
        chain.validate(block, params=replace(PARAMS, max_block_bytes=300))
    assert _reason(exc) == R.OVERSIZED
    with pytest.raises(err.InvalidBlock) as exc:
        chain.validate(replace(block, size=PARAMS.max_block_bytes + 1))
    assert _reason(exc) == R.OVERSIZED


# --- rules plugins -----------------------------------------------------------------


class _Rules(DefaultLedgerRules):
    def __init__(self, reward_bonus=0, reject_tx=False, reject_block=False):
        super().__init__()
        self.reward_bonus = reward_bonus
        self.reject_tx = reject_tx
        self.reject_block = reject_block

    def block_reward(self, height, fees, params):
        return super().block_reward(height, fees, params) + self.reward_bonus

    def validate_transaction(self, tx, view, height, params):
        if self.reject_tx:
            raise err.RulesRejected("no")

    def validate_block(self, block, validators, params):
        if self.reject_block:
            raise err.RulesRejected("no")


def test_rules_cannot_print_money():
    chain = Chain(make_set([1]), rules=_Rules(reward_bonus=1))
    with pytest.raises(err.BadReward):
        chain.build()  # the proposer side refuses too
    lower = Chain(make_set([1]), rules=_Rules(reward_bonus=-TIME))
    assert lower.add().reward == BLOCK_REWARD_UNITS - TIME


def test_rules_rejections():
    chain = Chain(make_set([1]), [(1, 10 * TIME)], rules=_Rules(reject_tx=True))
    a = spend([(chain.genesis_outpoint(0), key(1))], [(10 * TIME - FEE, pkh(3))])
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([a]))
    assert _reason(exc) == R.RULES_REJECTED
    chain.add()  # an empty block is fine
    chain.rules = _Rules(reject_block=True)
    with pytest.raises(err.RulesRejected):
        chain.validate(chain.build())


# --- evidence ---------------------------------------------------------------------


def test_evidence_in_block(chain):
    chain.add()
    vs = chain.sets[1]
    culprit = vs.validators[3]
    a = signed_vote(culprit, 1, 0, b"\x01" * 32)
    b = signed_vote(culprit, 1, 0, b"\x02" * 32)
    ev = make_duplicate_vote_evidence(a, b)
    result = chain.validate(chain.build(evidence=[ev]))
    assert result.culprits == (culprit,)
    with pytest.raises(err.BadEvidence):
        chain.validate(chain.build(evidence=[ev, ev]))
    old = make_duplicate_vote_evidence(
        signed_vote(culprit, 0, 0, b"\x01" * 32), signed_vote(culprit, 0, 0, b"\x02" * 32)
    )
    with pytest.raises(err.BadEvidence):
        chain.validate(chain.build(evidence=[old]))
    bogus = replace(ev, vote_b=replace(ev.vote_b, signature=b"\x00" * 64))
    with pytest.raises(err.BadEvidence):
        chain.validate(chain.build(evidence=[bogus]))
    # The culprit is removed from the set two heights later.
    chain.commit(chain.build(evidence=[ev]))
    assert culprit.address in chain.sets[3] and culprit.address not in chain.sets[4]


# --- undo ------------------------------------------------------------------------------


def test_undo_restores_spent_outputs(chain):
    """The original TimeCoin's undo forgot to restore the outputs a block spent."""
    before = chain.view.snapshot()
    digest_before = chain.muhash.digest()
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    chain.add([a])
    b = spend(
        [(_op(a, 0), key(3)), (chain.genesis_outpoint(1), key(2))], [(70 * TIME - 2 * FEE, pkh(4))]
    )
    chain.add([b])
    assert chain.genesis_outpoint(0) not in chain.view
    chain.undo_last()
    assert _op(a, 0) in chain.view
    chain.undo_last()
    assert chain.view.snapshot() == before
    assert chain.muhash.digest() == digest_before


def test_blocks_validate_with_the_pluggy_default_rules():
    """The ledger runs unchanged on the default rules plugin through the pluggy adapter."""
    import timecoin_rules_default
    from timecoin.rules.manager import PluggyRules, build_plugin_manager

    pm = build_plugin_manager(load_entrypoints=False, plugins=[timecoin_rules_default])
    chain = Chain(make_set([1, 10, 100]), [(1, 50 * TIME)], rules=PluggyRules(pm))
    a = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    chain.add([a])
    r2 = chain.add()
    assert len(r2.signers) == 3
    # Same coinbase as the pure default implementation.
    pure = DefaultLedgerRules()
    vs = chain.sets[2]
    for total in (1, BLOCK_REWARD_UNITS, BLOCK_REWARD_UNITS + FEE):
        for proposer in vs.validators:
            assert pure.reward_split(2, total, proposer, vs.validators, PARAMS) == PluggyRules(
                pm
            ).reward_split(2, total, proposer, vs.validators, PARAMS)


def _block_from_template(chain, t, proposer, last_commit):
    header = BlockHeader(
        version=PARAMS.block_version,
        chain_id=PARAMS.chain_id,
        height=chain.height + 1,
        time_ms=chain.prev_time_ms + 1_000,
        prev_block_hash=chain.prev_hash,
        tx_root=t.tx_root,
        last_commit_hash=t.last_commit_hash,
        validators_hash=t.validators_hash,
        next_validators_hash=t.next_validators_hash,
        utxo_commitment=t.utxo_commitment,
        proposer_address=proposer.address,
        evidence_hash=t.evidence_hash,
    )
    hb = encode_header(header)
    return Block(hb, header, t.txs, last_commit, (), sha256(hb), 0)


def test_block_template_builds_a_valid_block(chain):
    chain.add()
    proposer = chain.sets[2].validators[1]
    parent = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    child = spend([(_op(parent, 0), key(3))], [(50 * TIME - 2 * FEE, pkh(4))])
    orphan_first = spend([(_op(child, 0), key(4))], [(TIME, pkh(5))])  # parent comes later
    conflict = spend([(chain.genesis_outpoint(0), key(1))], [(49 * TIME, pkh(5))])
    forged = spend(
        [(chain.genesis_outpoint(1), key(2))],
        [(20 * TIME - FEE, pkh(5))],
        signatures=[b"\x01" * 64],
    )
    stray_cb = coinbase_tx(2, [(pkh(1), TIME)])
    t = build_block_template(
        [orphan_first, parent, child, conflict, forged, stray_cb],
        chain.context(),
        chain.view,
        chain.rules,
        chain.muhash,
        proposer=proposer,
        last_commit=chain.last_commit,
        make_coinbase=lambda h, outs: coinbase_tx(h, outs),
        signatures_checked=False,
    )
    assert t.txs[1:] == (parent, child)
    assert t.fees == 2 * FEE
    assert [tx for tx, _ in t.rejected] == [orphan_first, conflict, forged, stray_cb]
    assert [e.reason for _, e in t.rejected] == [
        R.MISSING_INPUT,
        R.DOUBLE_SPEND,
        R.BAD_SIGNATURE,
        R.BAD_COINBASE,
    ]
    block = _block_from_template(chain, t, proposer, chain.last_commit)
    result = chain.validate(block, expected_proposer=proposer.address)
    assert result.changes == t.changes and result.utxo_commitment == t.utxo_commitment
    assert result.reward == t.reward == BLOCK_REWARD_UNITS + 2 * FEE


def test_block_template_trusts_admitted_fees_but_not_spent_inputs(chain):
    # Fees found at admission are taken as they are; whether each input is
    # still unspent is not (a block since admission may have spent it).
    chain.add()
    proposer = chain.sets[2].validators[1]
    paid = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    gone = spend([(OutPoint(b"\x77" * 32, 0), key(3))], [(TIME, pkh(5))])  # no such coin
    first = spend([(chain.genesis_outpoint(1), key(2))], [(20 * TIME - 2 * FEE, pkh(4))])
    rival = spend([(chain.genesis_outpoint(1), key(2))], [(20 * TIME - 3 * FEE, pkh(5))])
    kw = dict(proposer=proposer, last_commit=chain.last_commit, make_coinbase=coinbase_tx)
    args = (chain.context(), chain.view, chain.rules, chain.muhash)
    t = build_block_template(
        [paid, gone, first, rival], *args, **kw, admitted_fees=[FEE, 1, 2 * FEE, 3 * FEE]
    )
    assert t.txs[1:] == (paid, first) and t.fees == 3 * FEE
    assert [(tx, e.reason) for tx, e in t.rejected] == [
        (gone, R.MISSING_INPUT),
        (rival, R.DOUBLE_SPEND),
    ]
    # The block is the one full validation of every candidate would have built.
    full = build_block_template([paid, gone, first, rival], *args, **kw)
    assert (full.txs, full.fees, full.utxo_commitment) == (t.txs, t.fees, t.utxo_commitment)
    block = _block_from_template(chain, t, proposer, chain.last_commit)
    assert chain.validate(block, expected_proposer=proposer.address).fees == 3 * FEE
    # Taken as given, not recomputed: the block builder's contract with the pool.
    given = build_block_template([paid, first], *args, **kw, admitted_fees=[FEE + 7, 2 * FEE])
    assert given.fees == 3 * FEE + 7
    with pytest.raises(ValueError, match="one per candidate"):
        build_block_template([paid], *args, **kw, admitted_fees=[])
    with pytest.raises(ValueError, match="signatures were checked"):
        build_block_template([paid], *args, **kw, admitted_fees=[FEE], signatures_checked=False)


def test_block_template_respects_limits(chain):
    txs = [
        spend([(chain.genesis_outpoint(i), key(k))], [(amt - FEE, pkh(3))])
        for i, (k, amt) in enumerate([(1, 50 * TIME), (2, 20 * TIME), (1, 5 * TIME)])
    ]
    proposer = chain.sets[1].validators[0]
    kw = dict(proposer=proposer, last_commit=None, make_coinbase=coinbase_tx)
    t = build_block_template(
        txs,
        chain.context(params=replace(PARAMS, max_block_txs=3)),
        chain.view,
        chain.rules,
        chain.muhash,
        **kw,
    )
    assert len(t.txs) == 3
    small = replace(PARAMS, max_block_bytes=2_048 + 200 * 5 + txs[0].size + 10)
    t = build_block_template(
        txs, chain.context(params=small), chain.view, chain.rules, chain.muhash, **kw
    )
    assert t.txs[1:] == (txs[0],)


def test_check_block_signatures_for_batching(chain):
    good = spend([(chain.genesis_outpoint(0), key(1))], [(50 * TIME - FEE, pkh(3))])
    forged = spend(
        [(chain.genesis_outpoint(1), key(2))],
        [(20 * TIME - FEE, pkh(3))],
        signatures=[b"\x01" * 64],
    )
    block = chain.build([good, forged])
    check_block_signatures(block, PARAMS.chain_id, stop=2)  # coinbase and `good`
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        check_block_signatures(block, PARAMS.chain_id, start=2)
    assert exc.value.index == 2 and exc.value.reason == R.BAD_SIGNATURE
    with pytest.raises(err.BlockTransactionInvalid):
        check_block_signatures(chain.build([good]), "timecoin-testnet-1")
