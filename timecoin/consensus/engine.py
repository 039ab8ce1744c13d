"""Tendermint consensus, Algorithm 1 of "The latest gossip on BFT consensus".

(Buchman, Kwon, Milosevic 2018, arXiv:1807.04938; the pseudocode with line
numbers is in cometbft ``spec/consensus/`` and circlefin/malachite
``specs/consensus/pseudo-code.md``.)

Bring-your-own-I/O, as h11: the node (or the simulator) feeds ``Event`` values
to ``Engine.step`` and executes the ``Action`` values it returns. The engine
never reads a clock, never sleeps, never draws random numbers and never does
I/O: timeouts are actions (``ScheduleTimeout``) that come back as events
(``TimeoutFired``), block contents and their validity come from the node
(``RequestValue``/``ProposeValue``, ``RequestValidation``/``BlockValidated``).

Module rules:

* Every upon-rule of the paper is one method named after its line (``_l22``,
  ``_l28``, ...). After each event the rules are re-evaluated until none fires,
  which is what "upon" means in the paper: a rule fires as soon as its
  condition holds, whatever event completed it.
* A value is a block hash; nil is ``b""`` in votes and ``None`` in the state.
* Invalid input (bad signature, unknown validator, wrong proposer, too far in
  the future...) raises a typed ``InvalidVote`` and leaves the state
  unchanged. An event that does not fit the current step is not an error; it
  changes nothing and returns no actions.
* The engine signs its own proposals and votes through a ``Signer`` (the
  double-sign guard: ``consensus.guard.MemorySigner`` in tests and the
  simulator, ``node.privval.FilePrivValidator`` in the node, which persists the
  last signed height/round/step before returning). A signer that refuses
  (``DoubleSignRefused``) makes the engine stay silent for that message; the
  state still moves on, as if the message had been lost. The node's own votes
  are counted like anyone's. RFC 6979 signatures are deterministic, so the
  engine stays a deterministic function of its inputs.

Two places where the engine follows CometBFT rather than the paper's letter,
both without changing safety:

* L49 decides on 2f+1 precommits for ``id(v)`` in any round once the node knows
  ``v`` is valid (``BlockValidated``), even if the proposal message of that
  round was missed: that is how a node that missed a round catches up from a
  commit certificate (``CommitReceived``). The hash binds the value.
* The propose timeout is scheduled for the proposer too (the paper schedules it
  only for others, L21), so a node that fails to produce a value still moves on.

After a decision the node applies the block and sends ``NewHeight``; round 0 of
the new height starts ``TimeoutConfig.commit_ms`` later (CometBFT's
``timeout_commit``), which sets the block interval. The paper's L52-L54
(``h_p <- h_p + 1``, reset, ``StartRound(0)``) are split that way because only
the node knows the next validator set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from timecoin.consensus.errors import (
    BadVoteSignature,
    BufferFull,
    FutureRound,
    MalformedVote,
    WrongProposer,
)
from timecoin.consensus.proposer import select_proposer
from timecoin.consensus.timeouts import TimeoutConfig, TimeoutKind
from timecoin.consensus.vote_set import (
    DEFAULT_MAX_ROUND_WINDOW,
    MAX_ROUND,
    NIL,
    HeightVoteSet,
    Verifier,
    is_two_thirds,
    validate_vote_fields,
)
from timecoin.core.commit import verify_commit
from timecoin.core.errors import (
    DoubleSignRefused,
    DuplicateVote,
    FutureHeight,
    InvalidVote,
    StaleHeight,
    UnknownValidator,
)
from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import proposal_sign_digest
from timecoin.core.types import (
    ADDRESS_PAYLOAD_LEN,
    HASH_LEN,
    SIGNATURE_LEN,
    Commit,
    DuplicateVoteEvidence,
    Proposal,
    ValidatorSet,
    Vote,
    VoteType,
)

ProposerSelector = Callable[[ValidatorSet, Sequence[int], int], int]
"""``(validators, priorities, round) -> index``; the rules hook ``timed_rules_select_proposer``."""


class Signer(Protocol):
    """Signs the node's own messages through the double-sign guard."""

    def sign_vote(self, vote: Vote) -> Vote:
        """Return *vote* with its signature, or raise DoubleSignRefused."""
        ...

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        """Return *proposal* with its signature, or raise DoubleSignRefused."""
        ...


class Step(IntEnum):
    """``step_p`` of the paper, plus the wait before round 0 and the decided state."""

    NEW_HEIGHT = 0
    """Waiting for the commit timeout before ``StartRound(0)``."""
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    DECIDED = 4
    """``decision_p[h_p] != nil``; waiting for the node's ``NewHeight``."""


# --- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewHeight:
    """Start *height* with its validator set and proposer priorities (see consensus.proposer).

    ``start_delay_ms`` None waits ``TimeoutConfig.commit_ms`` before round 0
    (the block interval); 0 starts at once (first height after boot).
    """

    height: int
    validators: ValidatorSet
    priorities: tuple[int, ...]
    start_delay_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A signed proposal; ``valid`` may carry the block's validity if already known."""

    proposal: Proposal
    valid: bool | None = None


@dataclass(frozen=True, slots=True)
class VoteReceived:
    """A signed prevote or precommit from the network."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class CommitReceived:
    """A commit certificate for the current height (catch-up); counted as precommits."""

    commit: Commit


@dataclass(frozen=True, slots=True)
class TimeoutFired:
    """A timeout the engine scheduled has expired."""

    kind: TimeoutKind
    height: int
    round: int


@dataclass(frozen=True, slots=True)
class BlockValidated:
    """The node's verdict on the block with *block_hash* (the paper's ``valid(v)``)."""

    block_hash: bytes
    valid: bool


@dataclass(frozen=True, slots=True)
class ProposeValue:
    """The block the node built for (height, round), answering ``RequestValue`` (L18)."""

    height: int
    round: int
    block_hash: bytes


Event = (
    NewHeight
    | ProposalReceived
    | VoteReceived
    | CommitReceived
    | TimeoutFired
    | BlockValidated
    | ProposeValue
)


# --- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BroadcastProposal:
    """Send this signed proposal (and the block it names) to every peer."""

    proposal: Proposal


@dataclass(frozen=True, slots=True)
class BroadcastVote:
    """Send this signed vote to every peer."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Feed ``TimeoutFired(kind, height, round)`` back after *after_ms*."""

    kind: TimeoutKind
    height: int
    round: int
    after_ms: int


@dataclass(frozen=True, slots=True)
class RequestValidation:
    """Validate the block with *block_hash* (fetch it if needed) and send ``BlockValidated``."""

    height: int
    block_hash: bytes


@dataclass(frozen=True, slots=True)
class RequestValue:
    """Build a block to propose at (height, round) and send ``ProposeValue`` (L18 getValue)."""

    height: int
    round: int


@dataclass(frozen=True, slots=True)
class Decide:
    """The block is final: commit it with this certificate, then send ``NewHeight``."""

    height: int
    round: int
    block_hash: bytes
    commit: Commit


@dataclass(frozen=True, slots=True)
class EmitEvidence:
    """Two conflicting signed votes of one validator: gossip and include in a block."""

    evidence: DuplicateVoteEvidence


Action = (
    BroadcastProposal
    | BroadcastVote
    | ScheduleTimeout
    | RequestValidation
    | RequestValue
    | Decide
    | EmitEvidence
)


# --- state --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundState:
    """The paper's per-process variables (L2-L9) plus the "for the first time" flags."""

    height: int = 0
    round: int = 0
    step: Step = Step.NEW_HEIGHT
    locked_value: bytes | None = None
    locked_round: int = -1
    valid_value: bytes | None = None
    valid_round: int = -1
    decision: bytes | None = None
    decision_round: int = -1
    prevote_timeout_scheduled: bool = False
    """L34 fired in this round."""
    polka_seen: bool = False
    """L36 fired in this round."""
    precommit_timeout_scheduled: bool = False
    """L47 fired in this round."""
    value_requested: bool = False
    """L18: asked the node for a value in this round (proposer only)."""


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """What an engine needs besides events."""

    chain_id: str
    address: bytes | None
    """This node's validator address; None (or not in the set) for a non-validator."""
    timeouts: TimeoutConfig = dataclasses.field(default_factory=TimeoutConfig.mainnet)
    select_proposer: ProposerSelector = select_proposer
    max_round_window: int = DEFAULT_MAX_ROUND_WINDOW
    verify: Verifier = is_valid_signature
    max_buffered_next_height: int = 256
    """Bound on messages kept for height + 1 while this height is still running."""


_Buffered = Vote | tuple[Proposal, bool | None]


class Engine:
    """One validator's (or observer's) Tendermint state machine.

    ``step(event) -> list[Action]``; ``state`` is the current ``RoundState``.
    """

    def __init__(self, config: EngineConfig, signer: Signer | None = None) -> None:
        self.config = config
        self.signer = signer
        self.state = RoundState()
        self.validators = ValidatorSet(())
        self.priorities: tuple[int, ...] = ()
        self.votes = HeightVoteSet(config.chain_id, 0, self.validators)
        self.proposals: dict[int, Proposal] = {}
        self.validity: dict[bytes, bool] = {}
        self._requested: set[bytes] = set()
        self._proposers: dict[int, bytes] = {}
        self._certificate: Commit | None = None
        self._next: dict[tuple[object, ...], _Buffered] = {}
        self._actions: list[Action] = []

    # --- public API --------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Process one event; return the actions to execute, in order.

        Raises a typed ``InvalidVote`` (state unchanged) for bad input.
        """
        self._actions = []
        match event:
            case NewHeight():
                self._on_new_height(event)
            case VoteReceived(vote):
                self._on_vote(vote)
            case ProposalReceived(proposal, valid):
                self._on_proposal(proposal, valid)
            case TimeoutFired(kind, height, round):
                self._on_timeout(kind, height, round)
            case BlockValidated(block_hash, valid):
                self._on_block_validated(block_hash, valid)
            case ProposeValue(height, round, block_hash):
                self._on_propose_value(height, round, block_hash)
            case CommitReceived(commit):
                self._on_commit(commit)
            case _:
                raise TypeError(f"not a consensus event: {event!r}")
        self._run_rules()
        out, self._actions = self._actions, []
        return out

    @property
    def is_validator(self) -> bool:
        """True if this node signs at the current height."""
        return self.config.address is not None and self.config.address in self.validators

    def proposer(self, round: int) -> bytes:
        """Return the address of the proposer of *round* (the paper's proposer function)."""
        p = self._proposers.get(round)
        if p is None:
            i = self.config.select_proposer(self.validators, self.priorities, round)
            p = self.validators.validators[i].address
            if len(self._proposers) < 4 * self.config.max_round_window:
                self._proposers[round] = p
        return p

    # --- events ------------------------------------------------------------

    def _on_new_height(self, ev: NewHeight) -> None:
        if ev.height <= self.state.height and self.state.height > 0:
            return  # an old or repeated NewHeight changes nothing
        if len(ev.priorities) != len(ev.validators):
            raise ValueError("priorities must align with validators")
        if not ev.validators.validators or ev.validators.total_power <= 0:
            raise ValueError("a height needs a validator set with power")
        cfg = self.config
        self.validators = ev.validators
        self.priorities = tuple(ev.priorities)
        self.votes = HeightVoteSet(
            cfg.chain_id,
            ev.height,
            ev.validators,
            max_round_window=cfg.max_round_window,
            verify=cfg.verify,
        )
        self.proposals = {}
        self.validity = {}
        self._requested = set()
        self._proposers = {}
        self._certificate = None
        # L53: reset locked/valid value and round and the message log.
        self.state = RoundState(height=ev.height)
        buffered = [m for m in self._next.values() if _buffered_height(m) == ev.height]
        self._next = {}
        for m in buffered:
            try:
                if isinstance(m, Vote):
                    self._on_vote(m)
                else:
                    self._on_proposal(m[0], m[1])
            except InvalidVote:
                continue  # verified now against the real set; junk is simply dropped
        delay = cfg.timeouts.commit_ms if ev.start_delay_ms is None else ev.start_delay_ms
        if delay > 0:
            self._emit(ScheduleTimeout(TimeoutKind.COMMIT, ev.height, 0, delay))
        else:
            self._start_round(0)

    def _check_height(self, height: int) -> bool:
        """Return True for a message of this height, False for one to buffer; raise otherwise."""
        h = self.state.height
        if height == h and h > 0:
            return True
        if height == h + 1:
            return False
        if height < h:
            raise StaleHeight(f"message for height {height} at height {h}")
        raise FutureHeight(f"message for height {height} at height {h}")

    def _buffer(self, key: tuple[object, ...], item: _Buffered, author: bytes) -> None:
        # Only members of the current set may fill the buffer: the set of the
        # next height differs only by changes decided two heights ago (H+2
        # rule), and a joiner's messages are simply gossiped again later.
        if self.state.height > 0 and author not in self.validators:
            raise UnknownValidator(f"{author.hex()} is not a validator")
        if key in self._next:
            raise DuplicateVote("already buffered for the next height")
        if len(self._next) >= self.config.max_buffered_next_height:
            raise BufferFull("next-height buffer full")
        self._next[key] = item

    def _on_vote(self, vote: Vote) -> None:
        if not self._check_height(vote.height):
            validate_vote_fields(vote)
            if vote.round > self.config.max_round_window:
                raise FutureRound(f"next-height vote for round {vote.round}")
            key = (vote.type, vote.round, vote.validator_address, vote.block_hash)
            self._buffer(key, vote, vote.validator_address)
            return
        ev = self.votes.add(vote)
        if ev is not None:
            self._emit(EmitEvidence(ev))

    def _on_proposal(self, p: Proposal, valid: bool | None) -> None:
        if len(p.block_hash) != HASH_LEN:
            raise MalformedVote(f"proposal block hash of {len(p.block_hash)} bytes")
        if not (0 <= p.round <= MAX_ROUND and -1 <= p.pol_round < p.round):
            raise MalformedVote(f"proposal round {p.round} with pol_round {p.pol_round}")
        if len(p.proposer_address) != ADDRESS_PAYLOAD_LEN or len(p.signature) != SIGNATURE_LEN:
            raise MalformedVote("proposal address or signature of the wrong size")
        if not self._check_height(p.height):
            if p.round > self.config.max_round_window:
                raise FutureRound(f"next-height proposal for round {p.round}")
            key = ("proposal", p.round, p.proposer_address, p.block_hash)
            self._buffer(key, (p, valid), p.proposer_address)
            return
        if p.round > self.state.round + self.config.max_round_window:
            raise FutureRound(f"proposal for round {p.round} at round {self.state.round}")
        validator = self.validators.get(p.proposer_address)
        if validator is None:
            raise UnknownValidator(f"proposer {p.proposer_address.hex()} is not a validator")
        if p.proposer_address != self.proposer(p.round):
            raise WrongProposer(f"{p.proposer_address.hex()} is not the proposer of {p.round}")
        have = self.proposals.get(p.round)
        if have is not None:
            # One proposal per round: the first one that verified. A different
            # one from the same proposer is an equivocating proposer; correct
            # processes simply keep the first (paper, section 3).
            raise DuplicateVote(f"already have the proposal of round {p.round}")
        digest = proposal_sign_digest(self.config.chain_id, p)
        if not self.config.verify(validator.pubkey, p.signature, digest):
            raise BadVoteSignature(f"bad proposal signature from {p.proposer_address.hex()}")
        self.proposals[p.round] = p
        if valid is not None and p.block_hash not in self.validity:
            self.validity[p.block_hash] = valid
        self._need_validity(p.block_hash)

    def _on_commit(self, commit: Commit) -> None:
        if not self._check_height(commit.height):
            raise FutureHeight(f"commit for height {commit.height} at {self.state.height}")
        # The certificate as a whole is 2f+1 signed precommits (core.commit, raises
        # BadCommit). Check it before touching the vote set so junk changes nothing.
        verify_commit(
            self.config.chain_id,
            commit,
            self.validators,
            height=commit.height,
            block_hash=commit.block_hash,
        )
        for cs in commit.signatures:
            vote = Vote(
                VoteType.PRECOMMIT,
                commit.height,
                commit.round,
                commit.block_hash,
                cs.validator_address,
                cs.signature,
            )
            try:
                ev = self.votes.add(vote, verified=True)
            except InvalidVote:
                continue  # duplicates, or a round beyond our window: the certificate suffices
            if ev is not None:
                self._emit(EmitEvidence(ev))
        # Some of its precommits may conflict with votes we counted first (an
        # equivocator told us otherwise), so our tally can stay below 2f+1 while
        # the certificate proves the decision: L49 also accepts the certificate.
        if self._certificate is None:
            self._certificate = commit
        self._need_validity(commit.block_hash)

    def _on_timeout(self, kind: TimeoutKind, height: int, round: int) -> None:
        s = self.state
        if height != s.height:
            return
        if kind is TimeoutKind.COMMIT:
            if s.step is Step.NEW_HEIGHT:
                self._start_round(0)
        elif kind is TimeoutKind.PROPOSE:
            self._l57_on_timeout_propose(round)
        elif kind is TimeoutKind.PREVOTE:
            self._l61_on_timeout_prevote(round)
        elif kind is TimeoutKind.PRECOMMIT:
            self._l65_on_timeout_precommit(round)

    def _on_block_validated(self, block_hash: bytes, valid: bool) -> None:
        # Keep only verdicts about values this height cares about (bounded memory).
        if block_hash in self._requested or any(
            p.block_hash == block_hash for p in self.proposals.values()
        ):
            self.validity[block_hash] = valid

    def _on_propose_value(self, height: int, round: int, block_hash: bytes) -> None:
        s = self.state
        if (
            height != s.height
            or round != s.round
            or s.step is not Step.PROPOSE
            or round in self.proposals
            or not self.is_validator
            or self.proposer(round) != self.config.address
        ):
            return
        if len(block_hash) != HASH_LEN:
            raise MalformedVote(f"proposed block hash of {len(block_hash)} bytes")
        self.validity[block_hash] = True  # our own block, built and checked by the node
        self._propose(block_hash, -1)

    # --- helpers -----------------------------------------------------------

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _set(self, **changes: object) -> None:
        self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]

    def _need_validity(self, block_hash: bytes) -> None:
        if block_hash and block_hash not in self.validity and block_hash not in self._requested:
            self._requested.add(block_hash)
            self._emit(RequestValidation(self.state.height, block_hash))

    def _propose(self, value: bytes, pol_round: int) -> None:
        """L19: broadcast <PROPOSAL, h_p, round_p, proposal, validRound_p>."""
        s = self.state
        assert self.signer is not None and self.config.address is not None
        p = Proposal(s.height, s.round, pol_round, value, self.config.address)
        try:
            signed = self.signer.sign_proposal(p)
        except DoubleSignRefused:
            return  # stay silent; the round times out like a lost proposal
        self.proposals[s.round] = signed
        self._emit(BroadcastProposal(signed))

    def _vote(self, vote_type: VoteType, value: bytes | None) -> None:
        """Broadcast (and count) our own vote; nil is None."""
        if not self.is_validator or self.signer is None:
            return
        s = self.state
        assert self.config.address is not None
        unsigned = Vote(vote_type, s.height, s.round, value or NIL, self.config.address)
        try:
            vote = self.signer.sign_vote(unsigned)
        except DoubleSignRefused:
            return
        try:
            self.votes.add(vote, verified=True)  # the node's own vote counts
        except DuplicateVote:
            pass  # re-signed after a restart: already counted
        self._emit(BroadcastVote(vote))

    def _valid(self, value: bytes) -> bool | None:
        return self.validity.get(value)

    # --- the algorithm ------------------------------------------------------

    def _start_round(self, round: int) -> None:
        """L11 StartRound(round)."""
        s = self.state
        self.state = dataclasses.replace(
            s,
            round=round,  # L12
            step=Step.PROPOSE,  # L13
            prevote_timeout_scheduled=False,
            polka_seen=False,
            precommit_timeout_scheduled=False,
            value_requested=False,
        )
        self.votes.set_round(round)
        s = self.state
        if self.is_validator and self.proposer(round) == self.config.address:  # L14
            if s.valid_value is not None:  # L15
                self._propose(s.valid_value, s.valid_round)  # L16, L19
            else:
                self._set(value_requested=True)
                self._emit(RequestValue(s.height, round))  # L18 getValue(), L19 on ProposeValue
        # L21 (for everyone, see the module docstring).
        self._emit(
            ScheduleTimeout(
                TimeoutKind.PROPOSE,
                s.height,
                round,
                self.config.timeouts.duration_ms(TimeoutKind.PROPOSE, round),
            )
        )

    def _run_rules(self) -> None:
        """Fire upon-rules until none applies (each firing changes the state monotonically)."""
        rules = (
            self._l49_decide,
            self._l55_round_skip,
            self._l22_prevote_on_proposal,
            self._l28_prevote_on_pol_proposal,
            self._l36_lock_on_polka,
            self._l44_precommit_nil_on_nil_polka,
            self._l34_schedule_prevote_timeout,
            self._l47_schedule_precommit_timeout,
        )
        fired = True
        while fired:
            fired = False
            for rule in rules:
                if rule():
                    fired = True
                    break

    def _l22_prevote_on_proposal(self) -> bool:
        """L22: <PROPOSAL, h, round_p, v, -1> from proposer while step = propose."""
        s = self.state
        if s.step is not Step.PROPOSE:
            return False
        p = self.proposals.get(s.round)
        if p is None or p.pol_round != -1:
            return False
        valid = self._valid(p.block_hash)
        if valid is None:
            return False  # wait for BlockValidated (or the propose timeout)
        v = p.block_hash
        if valid and (s.locked_round == -1 or s.locked_value == v):  # L23
            self._vote(VoteType.PREVOTE, v)  # L24
        else:
            self._vote(VoteType.PREVOTE, None)  # L26
        self._set(step=Step.PREVOTE)  # L27
        return True

    def _l28_prevote_on_pol_proposal(self) -> bool:
        """L28: <PROPOSAL, h, round_p, v, vr>, 2f+1 <PREVOTE, h, vr, id(v)>, 0 <= vr < round_p."""
        s = self.state
        if s.step is not Step.PROPOSE:
            return False
        p = self.proposals.get(s.round)
        if p is None or not 0 <= p.pol_round < s.round:
            return False
        v, vr = p.block_hash, p.pol_round
        if not self.votes.has_two_thirds_for(VoteType.PREVOTE, vr, v):
            return False
        valid = self._valid(v)
        if valid is None:
            return False
        if valid and (s.locked_round <= vr or s.locked_value == v):  # L29
            self._vote(VoteType.PREVOTE, v)  # L30
        else:
            self._vote(VoteType.PREVOTE, None)  # L32
        self._set(step=Step.PREVOTE)  # L33
        return True

    def _l34_schedule_prevote_timeout(self) -> bool:
        """L34: 2f+1 <PREVOTE, h, round_p, *> while step = prevote, for the first time."""
        s = self.state
        if s.step is not Step.PREVOTE or s.prevote_timeout_scheduled:
            return False
        if not self.votes.has_two_thirds_any(VoteType.PREVOTE, s.round):
            return False
        self._set(prevote_timeout_scheduled=True)
        after = self.config.timeouts.duration_ms(TimeoutKind.PREVOTE, s.round)
        self._emit(ScheduleTimeout(TimeoutKind.PREVOTE, s.height, s.round, after))  # L35
        return True

    def _l36_lock_on_polka(self) -> bool:
        """L36: proposal v, 2f+1 <PREVOTE, h, round_p, id(v)>, valid(v), step >= prevote."""
        s = self.state
        if s.polka_seen or s.step not in (Step.PREVOTE, Step.PRECOMMIT):
            return False
        p = self.proposals.get(s.round)
        if p is None:
            return False
        v = p.block_hash
        if not self.votes.has_two_thirds_for(VoteType.PREVOTE, s.round, v):
            return False
        valid = self._valid(v)
        if valid is None:
            self._need_validity(v)
            return False
        if not valid:
            return False
        if s.step is Step.PREVOTE:  # L37
            self._set(locked_value=v, locked_round=s.round)  # L38, L39
            self._vote(VoteType.PRECOMMIT, v)  # L40
            self._set(step=Step.PRECOMMIT)  # L41
        self._set(valid_value=v, valid_round=s.round, polka_seen=True)  # L42, L43
        return True

    def _l44_precommit_nil_on_nil_polka(self) -> bool:
        """L44: 2f+1 <PREVOTE, h, round_p, nil> while step = prevote."""
        s = self.state
        if s.step is not Step.PREVOTE:
            return False
        if not self.votes.has_two_thirds_for(VoteType.PREVOTE, s.round, NIL):
            return False
        self._vote(VoteType.PRECOMMIT, None)  # L45
        self._set(step=Step.PRECOMMIT)  # L46
        return True

    def _l47_schedule_precommit_timeout(self) -> bool:
        """L47: 2f+1 <PRECOMMIT, h, round_p, *> for the first time."""
        s = self.state
        if s.precommit_timeout_scheduled or s.step not in (
            Step.PROPOSE,
            Step.PREVOTE,
            Step.PRECOMMIT,
        ):
            return False
        if not self.votes.has_two_thirds_any(VoteType.PRECOMMIT, s.round):
            return False
        self._set(precommit_timeout_scheduled=True)
        after = self.config.timeouts.duration_ms(TimeoutKind.PRECOMMIT, s.round)
        self._emit(ScheduleTimeout(TimeoutKind.PRECOMMIT, s.height, s.round, after))  # L48
        return True

    def _l49_decide(self) -> bool:
        """L49: v and 2f+1 <PRECOMMIT, h, r, id(v)> for any round r while decision = nil."""
        s = self.state
        if s.decision is not None or s.height == 0:
            return False
        for r in sorted(self.votes.rounds()):
            v = self.votes.quorum_block(VoteType.PRECOMMIT, r)
            if not v:
                continue  # no quorum, or a quorum for nil
            valid = self._valid(v)  # L50
            if valid is None:
                self._need_validity(v)
                continue
            if not valid:
                continue  # 2f+1 precommitted an invalid block: impossible with f < n/3
            self._decide(r, v, self.votes.make_commit(r, v))
            return True
        cert = self._certificate
        if cert is not None and self._valid(cert.block_hash):
            self._decide(cert.round, cert.block_hash, cert)
            return True
        return False

    def _decide(self, round: int, value: bytes, commit: Commit) -> None:
        self._set(decision=value, decision_round=round, step=Step.DECIDED)  # L51
        self._emit(Decide(self.state.height, round, value, commit))  # L52-L54: NewHeight

    def _l55_round_skip(self) -> bool:
        """L55: f+1 <*, h, round, *, *> with round > round_p: StartRound(round)."""
        s = self.state
        if s.step not in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
            return False
        target = -1
        for r in self.votes.rounds():
            if r > s.round and r > target and self.votes.has_one_third_in_round(r):
                target = r
        if target < 0:
            return False
        self._start_round(target)  # L56
        return True

    def _l57_on_timeout_propose(self, round: int) -> None:
        """L57 OnTimeoutPropose: prevote nil if still proposing in that round."""
        s = self.state
        if round == s.round and s.step is Step.PROPOSE:  # L58
            self._vote(VoteType.PREVOTE, None)  # L59
            self._set(step=Step.PREVOTE)  # L60

    def _l61_on_timeout_prevote(self, round: int) -> None:
        """L61 OnTimeoutPrevote: precommit nil if still prevoting in that round."""
        s = self.state
        if round == s.round and s.step is Step.PREVOTE:  # L62
            self._vote(VoteType.PRECOMMIT, None)  # L63
            self._set(step=Step.PRECOMMIT)  # L64

    def _l65_on_timeout_precommit(self, round: int) -> None:
        """L65 OnTimeoutPrecommit: go to the next round."""
        s = self.state
        if (
            round == s.round
            and s.step in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT)
            and s.round < MAX_ROUND
        ):  # L66
            self._start_round(s.round + 1)  # L67


def _buffered_height(m: _Buffered) -> int:
    return m.height if isinstance(m, Vote) else m[0].height


def is_quorum(power: int, total: int) -> bool:
    """Re-export of the 2f+1 test for callers that hold only powers."""
    return is_two_thirds(power, total)
