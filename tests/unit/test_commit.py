"""Commit verification, header hashes and duplicate-vote evidence."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ledger_helpers import PARAMS, make_commit, make_set, make_validator, signed_vote

from timecoin.core import errors as err
from timecoin.core.commit import (
    EMPTY_HASH,
    commit_hash,
    commit_signers,
    evidence_hash,
    has_two_thirds,
    make_duplicate_vote_evidence,
    validators_hash,
    verify_commit,
    verify_duplicate_vote_evidence,
)
from timecoin.core.types import (
    CommitSig,
    DuplicateVoteEvidence,
    MasternodeTier,
    ValidatorSet,
    VoteType,
)

H = b"\xab" * 32
CHAIN = PARAMS.chain_id


def test_two_thirds_is_strict():
    assert not has_two_thirds(2, 3)
    assert has_two_thirds(3, 4)
    assert not has_two_thirds(66, 99)
    assert has_two_thirds(67, 99)
    assert has_two_thirds(1, 1)
    assert not has_two_thirds(0, 0)


def test_full_commit_verifies():
    vs = make_set([1, 10, 100])
    c = make_commit(vs, 5, H)
    assert verify_commit(CHAIN, c, vs, height=5, block_hash=H) == 111


def test_exactly_two_thirds_is_not_enough():
    vs = make_set([1, 1, 1])
    two = make_commit(vs, 5, H, signers=vs.validators[:2])
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, two, vs, height=5, block_hash=H)
    vs4 = make_set([1, 1, 1, 1])
    three = make_commit(vs4, 5, H, signers=vs4.validators[:3])
    assert verify_commit(CHAIN, three, vs4, height=5, block_hash=H) == 3


def test_weighted_power_counts():
    vs = make_set([100, 10, 10, 1])  # total 121; 100 alone is 82%
    gold = [v for v in vs.validators if v.power == 100]
    assert verify_commit(CHAIN, make_commit(vs, 5, H, signers=gold), vs, height=5, block_hash=H)
    small = [v for v in vs.validators if v.power < 100]
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, make_commit(vs, 5, H, signers=small), vs, height=5, block_hash=H)


def test_unknown_and_duplicate_signers_rejected():
    vs = make_set([1, 1, 1])
    stranger = make_validator(9)
    c = make_commit(vs, 5, H)
    bad = make_commit(vs, 5, H, signers=[*vs.validators[:2], stranger])
    with pytest.raises(err.BadCommit, match="unknown"):
        verify_commit(CHAIN, bad, vs, height=5, block_hash=H)
    dup = replace(c, signatures=(*c.signatures[:2], c.signatures[0]))
    with pytest.raises(err.BadCommit, match="twice"):
        verify_commit(CHAIN, dup, vs, height=5, block_hash=H)


def test_every_signature_is_checked_even_beyond_two_thirds():
    vs = make_set([1, 1, 1, 1])
    c = make_commit(vs, 5, H)
    forged = replace(
        c, signatures=(*c.signatures[:3], CommitSig(c.signatures[3].validator_address, b""))
    )
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, forged, vs, height=5, block_hash=H)


def test_commit_bound_to_height_hash_round_and_chain():
    vs = make_set([1, 1, 1])
    c = make_commit(vs, 5, H)
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, c, vs, height=6, block_hash=H)
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, c, vs, height=5, block_hash=b"\xac" * 32)
    with pytest.raises(err.BadCommit):  # signatures were for round 0
        verify_commit(CHAIN, replace(c, round=1), vs, height=5, block_hash=H)
    with pytest.raises(err.BadCommit):  # signed for another chain
        verify_commit("timecoin-testnet-1", c, vs, height=5, block_hash=H)
    other_chain = make_commit(vs, 5, H, chain_id="timecoin-testnet-1")
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, other_chain, vs, height=5, block_hash=H)


def test_nil_commit_rejected():
    vs = make_set([1])
    c = make_commit(vs, 5, b"")
    with pytest.raises(err.BadCommit):
        verify_commit(CHAIN, c, vs, height=5, block_hash=b"")


def test_commit_signers_in_set_order():
    vs = make_set([1, 2, 3, 4])
    chosen = list(reversed(vs.validators[1:]))
    c = make_commit(vs, 5, H, signers=chosen)
    assert commit_signers(c, vs) == list(vs.validators[1:])
    assert commit_signers(None, vs) == []


def test_hashes_are_deterministic_and_sensitive():
    vs = make_set([1, 2])
    assert validators_hash(vs) == validators_hash(ValidatorSet(vs.validators[::-1]))
    bumped = ValidatorSet((replace(vs.validators[0], power=5), vs.validators[1]))
    assert validators_hash(bumped) != validators_hash(vs)
    tiered = ValidatorSet((replace(vs.validators[0], tier=MasternodeTier.GOLD), vs.validators[1]))
    assert validators_hash(tiered) != validators_hash(vs)
    c = make_commit(vs, 5, H)
    assert commit_hash(c) == commit_hash(make_commit(vs, 5, H))
    assert commit_hash(c) != commit_hash(replace(c, signatures=c.signatures[:1]))
    assert commit_hash(None) == EMPTY_HASH
    assert evidence_hash(()) == EMPTY_HASH


# --- evidence ---------------------------------------------------------------


def _equivocation(v, **kw):
    a = signed_vote(v, 7, 1, b"\x01" * 32, **kw)
    b = signed_vote(v, 7, 1, b"\x02" * 32, **kw)
    return a, b


def test_duplicate_vote_evidence_valid():
    vs = make_set([1, 1, 1])
    v = vs.validators[0]
    a, b = _equivocation(v)
    ev = make_duplicate_vote_evidence(b, a)
    assert ev.vote_a == a
    assert verify_duplicate_vote_evidence(CHAIN, ev, vs) == v
    # A nil vote conflicts with a block vote too.
    nil = signed_vote(v, 7, 1, b"")
    assert verify_duplicate_vote_evidence(CHAIN, make_duplicate_vote_evidence(a, nil), vs) == v


def test_evidence_must_conflict():
    vs = make_set([1, 1])
    v, w = vs.validators
    a, b = _equivocation(v)
    cases = [
        DuplicateVoteEvidence(a, a),  # same vote
        DuplicateVoteEvidence(b, a),  # non-canonical order
        DuplicateVoteEvidence(a, signed_vote(w, 7, 1, b"\x02" * 32)),  # two validators
        DuplicateVoteEvidence(a, signed_vote(v, 7, 2, b"\x02" * 32)),  # other round
        DuplicateVoteEvidence(a, signed_vote(v, 8, 1, b"\x02" * 32)),  # other height
        DuplicateVoteEvidence(
            a, signed_vote(v, 7, 1, b"\x02" * 32, vote_type=VoteType.PREVOTE)
        ),  # other type
        DuplicateVoteEvidence(a, replace(b, signature=b"\x00" * 64)),  # bad signature
        DuplicateVoteEvidence(a, replace(b, signature=b"")),  # empty signature
        DuplicateVoteEvidence(a, replace(b, height=2**64)),  # out of range
    ]
    for ev in cases:
        with pytest.raises(err.BadEvidence):
            verify_duplicate_vote_evidence(CHAIN, ev, vs)


def test_evidence_unknown_validator_or_chain():
    vs = make_set([1, 1])
    outsider = make_validator(7)
    a, b = _equivocation(outsider)
    with pytest.raises(err.BadEvidence):
        verify_duplicate_vote_evidence(CHAIN, DuplicateVoteEvidence(a, b), vs)
    a, b = _equivocation(vs.validators[0], chain_id="timecoin-testnet-1")
    with pytest.raises(err.BadEvidence):
        verify_duplicate_vote_evidence(CHAIN, DuplicateVoteEvidence(a, b), vs)
