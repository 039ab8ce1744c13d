"""Typed rejections of consensus messages (all ``InvalidVote`` subclasses with core reasons).

They live here, not in ``core/errors.py``, because only the consensus engine
raises them; the reason codes are the shared ones of ``core.errors.Reason``.
"""

from __future__ import annotations

from timecoin.core.errors import InvalidVote, Reason


class MalformedVote(InvalidVote):
    """A vote or proposal with a field of the wrong size or range."""

    reason = Reason.MALFORMED


class BadVoteSignature(InvalidVote):
    """A missing, malformed or non-verifying signature on a vote or proposal."""

    reason = Reason.BAD_SIGNATURE


class FutureRound(InvalidVote):
    """A vote for a round beyond the window the engine keeps for this height."""

    reason = Reason.FUTURE_HEIGHT


class WrongProposer(InvalidVote):
    """A proposal signed by a validator that is not the proposer of its round."""

    reason = Reason.BAD_PROPOSER


class BufferFull(InvalidVote):
    """The bounded buffer of next-height messages is full."""

    reason = Reason.RATE_LIMITED
