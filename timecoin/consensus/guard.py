"""The double-sign guard decision, pure (CometBFT FilePV ``checkHRS``).

A validator remembers the last (height, round, step, block hash) it signed and
its signature. A new sign request is:

* **refused** (``DoubleSignRefused``) if it is for an earlier height, round or
  step, or for the same height/round/step with a different block hash (nil
  and a block conflict too): signing it could be an equivocation;
* a **re-sign** if it is the very same message: the stored signature is
  returned (signatures are RFC 6979 deterministic, so it is the same bytes a
  fresh signature would have; returning the stored one also covers a crash
  between persisting and sending);
* **allowed** otherwise (strictly later height/round/step).

The persistence (atomic, durable, before a signature leaves the process) is
``timecoin.node.privval``; ``MemorySigner`` here keeps the state in memory for
tests and the simulator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

from timecoin.core.errors import DoubleSignRefused
from timecoin.core.keys import KeyPair
from timecoin.core.signing import proposal_sign_digest, vote_sign_digest
from timecoin.core.types import Proposal, Vote, VoteType


class SignStep(IntEnum):
    """Order of messages within a round (CometBFT stepPropose/Prevote/Precommit)."""

    PROPOSAL = 1
    PREVOTE = 2
    PRECOMMIT = 3


@dataclass(frozen=True, slots=True)
class SignState:
    """The last message a validator signed."""

    height: int
    round: int
    step: SignStep
    block_hash: bytes
    signature: bytes
    pol_round: int = -1
    """For proposals: the proof-of-lock round that was signed too."""


@dataclass(frozen=True, slots=True)
class SignRequest:
    """What a validator is asked to sign."""

    height: int
    round: int
    step: SignStep
    block_hash: bytes
    pol_round: int = -1


def sign_request_for_vote(vote: Vote) -> SignRequest:
    """Return the guard's view of *vote*."""
    step = SignStep.PREVOTE if vote.type is VoteType.PREVOTE else SignStep.PRECOMMIT
    return SignRequest(vote.height, vote.round, step, vote.block_hash)


def sign_request_for_proposal(proposal: Proposal) -> SignRequest:
    """Return the guard's view of *proposal*."""
    return SignRequest(
        proposal.height, proposal.round, SignStep.PROPOSAL, proposal.block_hash, proposal.pol_round
    )


def check_sign_request(last: SignState | None, req: SignRequest) -> bytes | None:
    """Decide *req* against *last*.

    Returns the stored signature when *req* re-signs exactly the last message,
    None when a fresh signature is allowed, and raises DoubleSignRefused when
    signing could equivocate.
    """
    if last is None:
        return None
    hrs_new = (req.height, req.round, int(req.step))
    hrs_old = (last.height, last.round, int(last.step))
    if hrs_new > hrs_old:
        return None
    if hrs_new < hrs_old:
        raise DoubleSignRefused(
            f"regression: asked to sign {hrs_new}, already signed {hrs_old}",
            last=hrs_old,
            requested=hrs_new,
        )
    if req.block_hash == last.block_hash and req.pol_round == last.pol_round and last.signature:
        return last.signature
    raise DoubleSignRefused(
        f"conflict at height/round/step {hrs_new}: signed {last.block_hash.hex() or 'nil'}, "
        f"asked {req.block_hash.hex() or 'nil'}",
        last=hrs_old,
        requested=hrs_new,
    )


class MemorySigner:
    """A guarded signer that keeps its last-signed state in memory only.

    For tests and the simulator; a real validator uses
    ``timecoin.node.privval.FilePrivValidator``, which persists the state first.
    """

    def __init__(self, key: KeyPair, chain_id: str, last: SignState | None = None) -> None:
        self.key = key
        self.chain_id = chain_id
        self.address = key.address_payload
        self.last = last

    def _sign(self, req: SignRequest, digest: bytes) -> bytes:
        stored = check_sign_request(self.last, req)
        if stored is not None:
            return stored
        sig = self.key.sign(digest)
        self.last = SignState(req.height, req.round, req.step, req.block_hash, sig, req.pol_round)
        return sig

    def sign_vote(self, vote: Vote) -> Vote:
        """Return *vote* signed, or raise DoubleSignRefused."""
        sig = self._sign(sign_request_for_vote(vote), vote_sign_digest(self.chain_id, vote))
        return dataclasses.replace(vote, signature=sig)

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        """Return *proposal* signed, or raise DoubleSignRefused."""
        sig = self._sign(
            sign_request_for_proposal(proposal), proposal_sign_digest(self.chain_id, proposal)
        )
        return dataclasses.replace(proposal, signature=sig)
