"""Votes of one height: weighted tallies, quorums, commit certificates and evidence.

Rules of this module:

* A vote is counted at most once: one vote per validator per (round, type).
  The same vote again raises ``DuplicateVote`` *before* any signature check,
  so a flood of duplicates costs a dictionary lookup each.
* A second, different vote of one validator for the same (round, type) is
  ``DuplicateVoteEvidence`` once its signature verifies (returned to the caller,
  kept once per validator/round/type). It counts toward its own value's quorum
  only, never twice toward "any" totals (see ``_add_conflict``); at most
  ``MAX_CONFLICTING_VOTES`` such values per validator are kept.
* Everything else that cannot be counted raises a typed ``InvalidVote``:
  wrong height (``StaleHeight``/``FutureHeight``), unknown validator,
  malformed fields, missing or bad signature (the chain id is inside the signed
  digest, so a vote from another chain fails here), rounds too far ahead.
* Memory is bounded by the validator set, not by what peers send: rounds above
  ``current_round + max_round_window`` are refused, and beyond
  ``current_round + 1`` each validator may occupy a single future round (as
  CometBFT's ``peerCatchupRounds``), so a byzantine validator cannot spread
  votes over many rounds.
* Quorums are by voting power: "2f+1" is strictly more than 2/3 of the total
  (3 * power > 2 * total), "f+1" strictly more than 1/3 (3 * power > total).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from timecoin.consensus.errors import BadVoteSignature, FutureRound, MalformedVote
from timecoin.core.commit import make_duplicate_vote_evidence
from timecoin.core.errors import (
    ConflictingVote,
    DuplicateVote,
    FutureHeight,
    StaleHeight,
    UnknownValidator,
)
from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import (
    ADDRESS_PAYLOAD_LEN,
    HASH_LEN,
    SIGNATURE_LEN,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    ValidatorSet,
    Vote,
    VoteType,
)

Verifier = Callable[[bytes, bytes, bytes], bool]
"""``verify(pubkey, signature, digest) -> bool``; default ``core.keys.is_valid_signature``."""

NIL = b""
"""The block hash of a vote for nil."""

MAX_ROUND = (1 << 31) - 1
MAX_CONFLICTING_VOTES = 2
"""Extra (conflicting) values counted per validator per round and type; more are refused."""
DEFAULT_MAX_ROUND_WINDOW = 10
"""Rounds accepted ahead of the current one (a validator may still use only one of them)."""


def is_two_thirds(power: int, total: int) -> bool:
    """2f+1: strictly more than two thirds of *total* voting power."""
    return 3 * power > 2 * total


def is_one_third(power: int, total: int) -> bool:
    """f+1: strictly more than one third, so at least one correct validator is included."""
    return 3 * power > total


@dataclass(slots=True)
class _Tally:
    """Votes of one (round, type)."""

    votes: dict[bytes, Vote] = field(default_factory=dict)
    power_by_block: dict[bytes, int] = field(default_factory=dict)
    total: int = 0
    quorum_block: bytes | None = None
    """The block hash (or NIL) that has 2f+1, once one has."""
    conflicts: dict[bytes, dict[bytes, Vote]] = field(default_factory=dict)
    """Address -> block hash -> a signed vote conflicting with ``votes[address]``."""


@dataclass(slots=True)
class _RoundVotes:
    prevotes: _Tally = field(default_factory=_Tally)
    precommits: _Tally = field(default_factory=_Tally)
    voters: dict[bytes, int] = field(default_factory=dict)
    """Distinct validators with any vote in this round -> power (for the f+1 round skip)."""
    voter_power: int = 0

    def tally(self, vote_type: VoteType) -> _Tally:
        return self.prevotes if vote_type is VoteType.PREVOTE else self.precommits


def validate_vote_fields(vote: Vote) -> None:
    """Raise MalformedVote/BadVoteSignature for fields of the wrong size or range."""
    if not isinstance(vote.type, VoteType):
        raise MalformedVote(f"unknown vote type {vote.type!r}")
    if not 0 <= vote.round <= MAX_ROUND or vote.height < 0:
        raise MalformedVote(f"height/round out of range: {vote.height}/{vote.round}")
    if len(vote.block_hash) not in (0, HASH_LEN):
        raise MalformedVote(f"block hash of {len(vote.block_hash)} bytes")
    if len(vote.validator_address) != ADDRESS_PAYLOAD_LEN:
        raise MalformedVote(f"validator address of {len(vote.validator_address)} bytes")
    if len(vote.signature) != SIGNATURE_LEN:
        raise BadVoteSignature(f"signature of {len(vote.signature)} bytes (unsigned vote?)")


class HeightVoteSet:
    """All counted votes of one height, for one validator set."""

    def __init__(
        self,
        chain_id: str,
        height: int,
        validators: ValidatorSet,
        *,
        max_round_window: int = DEFAULT_MAX_ROUND_WINDOW,
        verify: Verifier = is_valid_signature,
    ) -> None:
        self.chain_id = chain_id
        self.height = height
        self.validators = validators
        self.total_power = validators.total_power
        self.max_round_window = max_round_window
        self._verify = verify
        self._rounds: dict[int, _RoundVotes] = {}
        self._future_round: dict[bytes, int] = {}
        self._evidence: dict[tuple[bytes, int, VoteType], DuplicateVoteEvidence] = {}
        self.current_round = 0

    # --- adding ---------------------------------------------------------

    def set_round(self, round: int) -> None:
        """Tell the set the engine's current round (moves the future-round window)."""
        self.current_round = round

    def add(self, vote: Vote, *, verified: bool = False) -> DuplicateVoteEvidence | None:
        """Count *vote*; return evidence (and do not count) if it conflicts with a counted one.

        Raises a typed ``InvalidVote`` for anything that cannot be counted.
        ``verified=True`` skips the signature check (the node's own votes).
        """
        validate_vote_fields(vote)
        if vote.height < self.height:
            raise StaleHeight(f"vote for height {vote.height} at height {self.height}")
        if vote.height > self.height:
            raise FutureHeight(f"vote for height {vote.height} at height {self.height}")
        validator = self.validators.get(vote.validator_address)
        if validator is None:
            raise UnknownValidator(
                f"{vote.validator_address.hex()} is not a validator at height {self.height}"
            )
        if vote.round > self.current_round + self.max_round_window:
            raise FutureRound(f"round {vote.round} too far ahead of {self.current_round}")
        rv = self._rounds.get(vote.round)
        tally = rv.tally(vote.type) if rv is not None else None
        existing = tally.votes.get(vote.validator_address) if tally is not None else None
        if existing is not None:
            assert tally is not None
            return self._add_conflict(tally, existing, vote, validator.pubkey, verified)
        future = vote.round > self.current_round + 1
        if future:
            other = self._future_round.get(vote.validator_address)
            if other is not None and other != vote.round and other > self.current_round + 1:
                raise FutureRound(
                    f"{vote.validator_address.hex()} already has votes in future round {other}"
                )
        self._check_signature(vote, validator.pubkey, verified)
        if future:
            self._future_round[vote.validator_address] = vote.round
        if rv is None:
            rv = self._rounds[vote.round] = _RoundVotes()
            tally = rv.tally(vote.type)
        assert tally is not None
        tally.votes[vote.validator_address] = vote
        power = validator.power
        tally.total += power
        self._count_for_block(tally, vote.block_hash, power)
        if vote.validator_address not in rv.voters:
            rv.voters[vote.validator_address] = power
            rv.voter_power += power
        return None

    def _count_for_block(self, tally: _Tally, block_hash: bytes, power: int) -> None:
        block_power = tally.power_by_block.get(block_hash, 0) + power
        tally.power_by_block[block_hash] = block_power
        if tally.quorum_block is None and is_two_thirds(block_power, self.total_power):
            tally.quorum_block = block_hash

    def _add_conflict(
        self, tally: _Tally, existing: Vote, vote: Vote, pubkey: bytes, verified: bool
    ) -> DuplicateVoteEvidence | None:
        """Handle a second, different vote of one validator in one (round, type).

        It is evidence. It also counts toward the quorum *of its own value*
        (never toward the "any" totals, where each validator counts once): the
        paper counts messages per value, and a correct process that saw only
        this vote may have locked on it, so the others must be able to see
        the same polka when it is relayed to them (as CometBFT does for a
        block a peer claims 2/3 for). Two such extra values per validator are
        kept; more are refused, which bounds memory.
        """
        address = vote.validator_address
        extra = tally.conflicts.get(address, {})
        if existing.block_hash == vote.block_hash or vote.block_hash in extra:
            raise DuplicateVote(
                f"already have this {vote.type.name.lower()} of {address.hex()} "
                f"for round {vote.round}"
            )
        if len(extra) >= MAX_CONFLICTING_VOTES:
            raise ConflictingVote(f"{address.hex()} equivocates beyond the kept bound")
        self._check_signature(vote, pubkey, verified)
        extra[vote.block_hash] = vote
        tally.conflicts[address] = extra
        validator = self.validators.get(address)
        assert validator is not None
        self._count_for_block(tally, vote.block_hash, validator.power)
        key = (address, vote.round, vote.type)
        if key in self._evidence:
            return None
        ev = make_duplicate_vote_evidence(existing, vote)
        self._evidence[key] = ev
        return ev

    def _check_signature(self, vote: Vote, pubkey: bytes, verified: bool) -> None:
        if verified:
            return
        if not self._verify(pubkey, vote.signature, vote_sign_digest(self.chain_id, vote)):
            raise BadVoteSignature(
                f"bad {vote.type.name.lower()} signature from {vote.validator_address.hex()}"
            )

    # --- queries --------------------------------------------------------

    def rounds(self) -> Iterator[int]:
        """Iterate over the rounds that have at least one vote."""
        return iter(self._rounds)

    def power_for(self, vote_type: VoteType, round: int, block_hash: bytes) -> int:
        """Power of the *vote_type* votes for *block_hash* (NIL for nil) in *round*."""
        rv = self._rounds.get(round)
        return 0 if rv is None else rv.tally(vote_type).power_by_block.get(block_hash, 0)

    def power_any(self, vote_type: VoteType, round: int) -> int:
        """Power of all *vote_type* votes in *round*, whatever they vote for."""
        rv = self._rounds.get(round)
        return 0 if rv is None else rv.tally(vote_type).total

    def has_two_thirds_for(self, vote_type: VoteType, round: int, block_hash: bytes) -> bool:
        """2f+1 *vote_type* votes for *block_hash* in *round*."""
        return is_two_thirds(self.power_for(vote_type, round, block_hash), self.total_power)

    def has_two_thirds_any(self, vote_type: VoteType, round: int) -> bool:
        """2f+1 *vote_type* votes in *round* for anything (the paper's ``*``)."""
        return is_two_thirds(self.power_any(vote_type, round), self.total_power)

    def quorum_block(self, vote_type: VoteType, round: int) -> bytes | None:
        """Return the block hash (or NIL) with 2f+1 *vote_type* votes in *round*, if any."""
        rv = self._rounds.get(round)
        return None if rv is None else rv.tally(vote_type).quorum_block

    def round_voter_power(self, round: int) -> int:
        """Power of the distinct validators with any vote in *round*."""
        rv = self._rounds.get(round)
        return 0 if rv is None else rv.voter_power

    def has_one_third_in_round(self, round: int) -> bool:
        """f+1 validators (by power) sent messages in *round*."""
        return is_one_third(self.round_voter_power(round), self.total_power)

    def votes(self, vote_type: VoteType, round: int) -> list[Vote]:
        """Return the counted *vote_type* votes of *round*, by validator address."""
        rv = self._rounds.get(round)
        if rv is None:
            return []
        t = rv.tally(vote_type)
        return [t.votes[a] for a in sorted(t.votes)]

    def get(self, vote_type: VoteType, round: int, address: bytes) -> Vote | None:
        """Return the counted vote of *address*, if any."""
        rv = self._rounds.get(round)
        return None if rv is None else rv.tally(vote_type).votes.get(address)

    def make_commit(self, round: int, block_hash: bytes) -> Commit:
        """Build the commit certificate: every counted precommit for *block_hash* in *round*.

        Raises ValueError if they do not reach 2f+1 (a caller bug, not bad input).
        """
        if not block_hash or not self.has_two_thirds_for(VoteType.PRECOMMIT, round, block_hash):
            raise ValueError(f"no 2/3 precommits for {block_hash.hex()} in round {round}")
        t = self._rounds[round].precommits
        signed: dict[bytes, bytes] = {}
        for address, v in t.votes.items():
            if v.block_hash == block_hash:
                signed[address] = v.signature
        for address, extra in t.conflicts.items():
            if block_hash in extra:
                signed[address] = extra[block_hash].signature
        sigs = tuple(CommitSig(a, signed[a]) for a in sorted(signed))
        return Commit(height=self.height, round=round, block_hash=block_hash, signatures=sigs)

    @property
    def evidence(self) -> list[DuplicateVoteEvidence]:
        """Evidence collected at this height, in the order it was found."""
        return list(self._evidence.values())

    def size(self) -> int:
        """Return the number of stored votes (for tests of the memory bound)."""
        rounds = self._rounds.values()
        return sum(len(rv.prevotes.votes) + len(rv.precommits.votes) for rv in rounds)
