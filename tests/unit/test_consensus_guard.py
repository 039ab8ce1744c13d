"""The pure double-sign guard decision (CometBFT FilePV checkHRS)."""

from __future__ import annotations

import pytest

from timecoin.consensus.guard import (
    MemorySigner,
    SignRequest,
    SignState,
    SignStep,
    check_sign_request,
)
from timecoin.core.errors import DoubleSignRefused, Reason
from timecoin.core.types import Proposal, Vote, VoteType
from timecoin.sim.fixtures import block, validator_key

LAST = SignState(10, 2, SignStep.PREVOTE, block(1), b"s" * 64)


def test_first_signature_is_allowed() -> None:
    assert check_sign_request(None, SignRequest(1, 0, SignStep.PROPOSAL, block(1))) is None


@pytest.mark.parametrize(
    "req",
    [
        SignRequest(11, 0, SignStep.PROPOSAL, block(9)),  # later height
        SignRequest(10, 3, SignStep.PROPOSAL, block(9)),  # later round
        SignRequest(10, 2, SignStep.PRECOMMIT, b""),  # later step, nil
    ],
)
def test_later_height_round_or_step_is_allowed(req: SignRequest) -> None:
    assert check_sign_request(LAST, req) is None


def test_same_message_is_re_signed_with_the_stored_signature() -> None:
    assert check_sign_request(LAST, SignRequest(10, 2, SignStep.PREVOTE, block(1))) == b"s" * 64


@pytest.mark.parametrize(
    "req",
    [
        SignRequest(10, 2, SignStep.PREVOTE, block(2)),  # same HRS, other block
        SignRequest(10, 2, SignStep.PREVOTE, b""),  # same HRS, nil instead of a block
        SignRequest(10, 2, SignStep.PROPOSAL, block(1)),  # earlier step
        SignRequest(10, 1, SignStep.PRECOMMIT, block(1)),  # earlier round
        SignRequest(9, 5, SignStep.PRECOMMIT, block(1)),  # earlier height
    ],
)
def test_conflicts_and_regressions_are_refused(req: SignRequest) -> None:
    with pytest.raises(DoubleSignRefused) as e:
        check_sign_request(LAST, req)
    assert e.value.reason is Reason.DOUBLE_SIGN_REFUSED


def test_proposal_with_other_pol_round_is_a_conflict() -> None:
    last = SignState(3, 1, SignStep.PROPOSAL, block(1), b"s" * 64, pol_round=0)
    with pytest.raises(DoubleSignRefused):
        check_sign_request(last, SignRequest(3, 1, SignStep.PROPOSAL, block(1), pol_round=-1))


def test_memory_signer_signs_then_refuses_equivocation() -> None:
    key = validator_key(0)
    signer = MemorySigner(key, "c")
    v = Vote(VoteType.PREVOTE, 1, 0, block(1), key.address_payload)
    first = signer.sign_vote(v)
    assert len(first.signature) == 64
    assert signer.sign_vote(v) == first
    with pytest.raises(DoubleSignRefused):
        signer.sign_vote(Vote(VoteType.PREVOTE, 1, 0, block(2), key.address_payload))
    p = signer.sign_proposal(Proposal(1, 1, -1, block(3), key.address_payload))
    assert len(p.signature) == 64
