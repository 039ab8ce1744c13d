"""Vote bookkeeping: weighted quorums, typed rejections, evidence, bounded memory."""

from __future__ import annotations

import dataclasses

import pytest

from timecoin.consensus.errors import BadVoteSignature, FutureRound, MalformedVote
from timecoin.consensus.vote_set import (
    MAX_CONFLICTING_VOTES,
    NIL,
    HeightVoteSet,
    is_one_third,
    is_two_thirds,
)
from timecoin.core.commit import verify_commit, verify_duplicate_vote_evidence
from timecoin.core.errors import (
    ConflictingVote,
    DuplicateVote,
    FutureHeight,
    InvalidVote,
    Reason,
    StaleHeight,
    UnknownValidator,
)
from timecoin.core.keys import KeyPair
from timecoin.core.types import VoteType
from timecoin.sim.fixtures import block, make_validators, signed_vote, validator_key

CHAIN = "timecoin-test"
PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT


def _set(*powers: int, height: int = 5) -> tuple[HeightVoteSet, list[KeyPair]]:
    vs, keys = make_validators(powers)
    return HeightVoteSet(CHAIN, height, vs, max_round_window=4), keys


def test_quorum_thresholds_are_strict() -> None:
    assert not is_two_thirds(2, 3)
    assert is_two_thirds(3, 4)
    assert not is_two_thirds(8, 12)
    assert is_two_thirds(9, 12)
    assert not is_one_third(1, 3)
    assert is_one_third(2, 4)


def test_exactly_two_thirds_of_power_is_not_a_quorum() -> None:
    s, keys = _set(1, 1, 1)
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 0, block(1)))
    s.add(signed_vote(keys[1], CHAIN, PV, 5, 0, block(1)))
    assert s.power_for(PV, 0, block(1)) == 2
    assert not s.has_two_thirds_for(PV, 0, block(1))
    s.add(signed_vote(keys[2], CHAIN, PV, 5, 0, block(1)))
    assert s.has_two_thirds_for(PV, 0, block(1))
    assert s.quorum_block(PV, 0) == block(1)


def test_weighted_tiers_need_more_than_two_thirds_of_power() -> None:
    s, keys = _set(100, 100, 10, 1)  # total 211; a quorum needs > 140.67
    by_power: dict[int, list[KeyPair]] = {}
    for k, v in zip(keys, s.validators.validators, strict=True):
        by_power.setdefault(v.power, []).append(k)
    gold, silver, bronze = by_power[100], by_power[10][0], by_power[1][0]
    s.add(signed_vote(gold[0], CHAIN, PC, 5, 0, block(1)))
    assert s.has_one_third_in_round(0)  # 100 > 70.3: f+1 for the round skip
    s.add(signed_vote(silver, CHAIN, PC, 5, 0, block(1)))
    s.add(signed_vote(bronze, CHAIN, PC, 5, 0, block(1)))
    assert s.power_for(PC, 0, block(1)) == 111
    assert not s.has_two_thirds_for(PC, 0, block(1))  # three of four validators, 111 power
    s.add(signed_vote(gold[1], CHAIN, PC, 5, 0, block(1)))
    assert s.has_two_thirds_for(PC, 0, block(1))


def test_duplicate_vote_is_rejected_and_not_double_counted() -> None:
    s, keys = _set(1, 1, 1, 1)
    v = signed_vote(keys[0], CHAIN, PV, 5, 0, block(1))
    s.add(v)
    for _ in range(1000):  # a flood costs a lookup each and stores nothing
        with pytest.raises(DuplicateVote) as e:
            s.add(v)
        assert e.value.reason is Reason.DUPLICATE_VOTE
    assert s.power_for(PV, 0, block(1)) == 1
    assert s.power_any(PV, 0) == 1
    assert s.size() == 1


def test_nil_votes_count_toward_nil() -> None:
    s, keys = _set(1, 1, 1, 1)
    for k in keys[:3]:
        s.add(signed_vote(k, CHAIN, PV, 5, 0, NIL))
    assert s.has_two_thirds_for(PV, 0, NIL)
    assert s.quorum_block(PV, 0) == NIL


@pytest.mark.parametrize(
    ("mutate", "error", "reason"),
    [
        (
            lambda v, k: dataclasses.replace(v, signature=b""),
            BadVoteSignature,
            Reason.BAD_SIGNATURE,
        ),
        (
            lambda v, k: dataclasses.replace(v, signature=bytes(64)),
            BadVoteSignature,
            Reason.BAD_SIGNATURE,
        ),
        (
            lambda v, k: dataclasses.replace(
                v, block_hash=block(2)
            ),  # signature no longer covers it
            BadVoteSignature,
            Reason.BAD_SIGNATURE,
        ),
        (
            lambda v, k: signed_vote(
                k, "other-chain", PV, 5, 0, block(1)
            ),  # replay from another chain
            BadVoteSignature,
            Reason.BAD_SIGNATURE,
        ),
        (
            lambda v, k: signed_vote(validator_key(99), CHAIN, PV, 5, 0, block(1)),
            UnknownValidator,
            Reason.UNKNOWN_VALIDATOR,
        ),
        (lambda v, k: signed_vote(k, CHAIN, PV, 4, 0, block(1)), StaleHeight, Reason.STALE_HEIGHT),
        (
            lambda v, k: signed_vote(k, CHAIN, PV, 6, 0, block(1)),
            FutureHeight,
            Reason.FUTURE_HEIGHT,
        ),
        (
            lambda v, k: dataclasses.replace(v, block_hash=bytes(33)),  # oversized hash
            MalformedVote,
            Reason.MALFORMED,
        ),
        (
            lambda v, k: dataclasses.replace(v, validator_address=bytes(300)),
            MalformedVote,
            Reason.MALFORMED,
        ),
        (lambda v, k: dataclasses.replace(v, round=-1), MalformedVote, Reason.MALFORMED),
        (
            lambda v, k: signed_vote(k, CHAIN, PV, 5, 50, block(1)),  # far-future round
            FutureRound,
            Reason.FUTURE_HEIGHT,
        ),
    ],
)
def test_bad_votes_are_rejected_with_typed_reasons(mutate, error, reason) -> None:  # type: ignore[no-untyped-def]
    s, keys = _set(1, 1, 1, 1)
    good = signed_vote(keys[0], CHAIN, PV, 5, 0, block(1))
    with pytest.raises(error) as e:
        s.add(mutate(good, keys[0]))
    assert isinstance(e.value, InvalidVote)
    assert e.value.reason is reason
    assert s.size() == 0


def test_conflicting_votes_become_evidence_counted_once_in_totals() -> None:
    s, keys = _set(1, 1, 1, 1)
    a = signed_vote(keys[0], CHAIN, PV, 5, 0, block(1))
    b = signed_vote(keys[0], CHAIN, PV, 5, 0, block(2))
    assert s.add(a) is None
    ev = s.add(b)
    assert ev is not None
    assert {ev.vote_a.block_hash, ev.vote_b.block_hash} == {block(1), block(2)}
    assert ev.vote_a.block_hash < ev.vote_b.block_hash  # canonical order
    assert (
        verify_duplicate_vote_evidence(CHAIN, ev, s.validators).address == keys[0].address_payload
    )
    assert s.evidence == [ev]
    # Each value saw the message; the "any" total counts the validator once.
    assert s.power_for(PV, 0, block(1)) == 1
    assert s.power_for(PV, 0, block(2)) == 1
    assert s.power_any(PV, 0) == 1
    assert s.round_voter_power(0) == 1
    # The same conflicting vote again is a duplicate, not new evidence.
    with pytest.raises(DuplicateVote):
        s.add(b)


def test_equivocation_memory_is_bounded() -> None:
    s, keys = _set(1, 1, 1, 1)
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 0, block(0)))
    for i in range(1, MAX_CONFLICTING_VOTES + 1):
        s.add(signed_vote(keys[0], CHAIN, PV, 5, 0, block(i)))
    with pytest.raises(ConflictingVote) as e:
        s.add(signed_vote(keys[0], CHAIN, PV, 5, 0, block(100)))
    assert e.value.reason is Reason.CONFLICTING_VOTE
    assert len(s.evidence) == 1


def test_a_conflicting_vote_with_a_bad_signature_is_not_evidence() -> None:
    s, keys = _set(1, 1, 1, 1)
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 0, block(1)))
    forged = dataclasses.replace(
        signed_vote(keys[1], CHAIN, PV, 5, 0, block(2)), validator_address=keys[0].address_payload
    )
    with pytest.raises(BadVoteSignature):
        s.add(forged)
    assert s.evidence == []


def test_each_validator_may_use_one_future_round_only() -> None:
    s, keys = _set(1, 1, 1, 1)
    s.set_round(0)
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 3, block(1)))
    s.add(signed_vote(keys[0], CHAIN, PC, 5, 3, block(1)))  # same future round: fine
    with pytest.raises(FutureRound):
        s.add(signed_vote(keys[0], CHAIN, PV, 5, 4, block(1)))
    s.add(signed_vote(keys[1], CHAIN, PV, 5, 4, block(1)))  # others have their own
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 1, block(1)))  # next round is not "future"
    s.set_round(3)  # once round 3 is current, round 4 is just the next one
    s.add(signed_vote(keys[0], CHAIN, PV, 5, 4, block(1)))
    assert s.size() == 5


def test_make_commit_builds_a_verifiable_certificate() -> None:
    s, keys = _set(1, 1, 1, 1)
    for k in keys[:3]:
        s.add(signed_vote(k, CHAIN, PC, 5, 2, block(7)))
    s.add(signed_vote(keys[3], CHAIN, PC, 5, 2, NIL))
    commit = s.make_commit(2, block(7))
    assert (commit.height, commit.round, commit.block_hash) == (5, 2, block(7))
    assert len(commit.signatures) == 3
    assert [c.validator_address for c in commit.signatures] == sorted(
        c.validator_address for c in commit.signatures
    )
    assert verify_commit(CHAIN, commit, s.validators, height=5, block_hash=block(7)) == 3
    with pytest.raises(ValueError):
        s.make_commit(2, NIL)


def test_own_vote_can_skip_verification() -> None:
    s, keys = _set(1, 1, 1, 1)
    v = signed_vote(keys[0], CHAIN, PV, 5, 0, block(1))
    assert s.add(v, verified=True) is None
    assert s.get(PV, 0, keys[0].address_payload) == v
