"""The Tendermint engine, rule by rule (paper line numbers in the test names).

Four validators of power 1 (unless a test says otherwise), genesis priorities:
the proposer of round r is ``keys[r % 4]`` (address order). The node under
test is ``keys[3]`` unless a test needs it to propose.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from timecoin.consensus.engine import (
    Action,
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
    CommitReceived,
    Decide,
    EmitEvidence,
    Engine,
    EngineConfig,
    NewHeight,
    ProposalReceived,
    ProposeValue,
    RequestValidation,
    RequestValue,
    ScheduleTimeout,
    Step,
    TimeoutFired,
    VoteReceived,
)
from timecoin.consensus.errors import BadVoteSignature, BufferFull, WrongProposer
from timecoin.consensus.guard import MemorySigner, SignState, SignStep
from timecoin.consensus.proposer import initial_priorities
from timecoin.consensus.timeouts import TimeoutConfig, TimeoutKind
from timecoin.core.commit import verify_commit
from timecoin.core.errors import (
    BadCommit,
    FutureHeight,
    InvalidVote,
    StaleHeight,
    UnknownValidator,
)
from timecoin.core.types import Commit, CommitSig, VoteType
from timecoin.sim.fixtures import (
    block,
    make_validators,
    signed_proposal,
    signed_vote,
    validator_key,
)

CHAIN = "timecoin-test"
PV, PC = VoteType.PREVOTE, VoteType.PRECOMMIT
A, B = block("A"), block("B")
TIMEOUTS = TimeoutConfig(
    propose_ms=1000,
    propose_delta_ms=100,
    prevote_ms=500,
    prevote_delta_ms=50,
    precommit_ms=400,
    precommit_delta_ms=40,
    commit_ms=2000,
)


class Net:
    """One engine under test plus the keys of everyone else."""

    def __init__(
        self,
        powers: Sequence[int] = (1, 1, 1, 1),
        me: int | None = 3,
        signer_state: SignState | None = None,
        **config: object,
    ) -> None:
        self.vs, self.keys = make_validators(powers)
        self.me = me
        key = self.keys[me] if me is not None else validator_key(999)
        self.engine = Engine(
            EngineConfig(CHAIN, None if me is None else key.address_payload, TIMEOUTS, **config),  # type: ignore[arg-type]
            MemorySigner(key, CHAIN, signer_state),
        )
        self.height = 1

    def start(self, height: int = 1, delay: int | None = 0) -> list[Action]:
        self.height = height
        return self.engine.step(NewHeight(height, self.vs, initial_priorities(self.vs), delay))

    def propose(
        self, round: int, value: bytes, pol: int = -1, valid: bool | None = True
    ) -> list[Action]:
        key = self.keys[round % len(self.keys)]
        p = signed_proposal(key, CHAIN, self.height, round, value, pol)
        return self.engine.step(ProposalReceived(p, valid))

    def vote(self, t: VoteType, round: int, value: bytes, who: Sequence[int]) -> list[Action]:
        out: list[Action] = []
        for i in who:
            v = signed_vote(self.keys[i], CHAIN, t, self.height, round, value)
            out += self.engine.step(VoteReceived(v))
        return out

    def timeout(self, kind: TimeoutKind, round: int) -> list[Action]:
        return self.engine.step(TimeoutFired(kind, self.height, round))

    @property
    def state(self):  # type: ignore[no-untyped-def]
        return self.engine.state


def own_votes(actions: Sequence[Action]) -> list[tuple[VoteType, int, bytes]]:
    return [
        (a.vote.type, a.vote.round, a.vote.block_hash)
        for a in actions
        if isinstance(a, BroadcastVote)
    ]


def of(kind: type, actions: Sequence[Action]) -> list[Action]:
    return [a for a in actions if isinstance(a, kind)]


def lock_on(net: Net, round: int, value: bytes) -> list[Action]:
    """Drive round *round* until the node locks *value* (L36), return those actions."""
    acts = net.propose(round, value)
    helpers = [i for i in range(4) if i != net.me][:2]
    acts += net.vote(PV, round, value, helpers)
    assert net.state.locked_value == value and net.state.locked_round == round
    return acts


# --- L11 StartRound ------------------------------------------------------------


def test_l11_start_round_non_proposer_schedules_propose_timeout_l21() -> None:
    net = Net(me=3)
    acts = net.start()
    assert net.state.step is Step.PROPOSE and net.state.round == 0
    assert acts == [ScheduleTimeout(TimeoutKind.PROPOSE, 1, 0, 1000)]


def test_l11_l18_proposer_asks_the_node_for_a_value_then_proposes_l19() -> None:
    net = Net(me=0)
    acts = net.start()
    assert RequestValue(1, 0) in acts
    acts = net.engine.step(ProposeValue(1, 0, A))
    props = of(BroadcastProposal, acts)
    assert len(props) == 1
    p = props[0].proposal  # type: ignore[attr-defined]
    assert (p.height, p.round, p.pol_round, p.block_hash) == (1, 0, -1, A)
    # L22 on its own proposal: the proposer prevotes its block.
    assert own_votes(acts) == [(PV, 0, A)]


def test_l11_l16_proposer_reproposes_its_valid_value_with_valid_round() -> None:
    net = Net(me=1)
    net.start()
    lock_on(net, 0, A)
    acts = net.timeout(TimeoutKind.PRECOMMIT, 0)  # L65 -> StartRound(1), me proposes
    assert not of(RequestValue, acts)
    p = of(BroadcastProposal, acts)[0].proposal  # type: ignore[attr-defined]
    assert (p.round, p.block_hash, p.pol_round) == (1, A, 0)
    assert own_votes(acts) == [(PV, 1, A)]  # L28 on its own POL proposal


def test_propose_value_for_another_round_is_ignored() -> None:
    net = Net(me=0)
    net.start()
    assert net.engine.step(ProposeValue(1, 5, A)) == []
    assert net.engine.step(ProposeValue(2, 0, A)) == []


# --- L22 -----------------------------------------------------------------------


def test_l22_prevote_for_valid_proposal_when_unlocked() -> None:
    net = Net()
    net.start()
    acts = net.propose(0, A)
    assert own_votes(acts) == [(PV, 0, A)]
    assert net.state.step is Step.PREVOTE


def test_l22_prevote_nil_for_invalid_proposal() -> None:
    net = Net()
    net.start()
    assert own_votes(net.propose(0, A, valid=False)) == [(PV, 0, b"")]


def test_l22_waits_for_validation_when_validity_is_unknown() -> None:
    net = Net()
    net.start()
    acts = net.propose(0, A, valid=None)
    assert acts == [RequestValidation(1, A)]
    assert net.state.step is Step.PROPOSE
    assert own_votes(net.engine.step(BlockValidated(A, True))) == [(PV, 0, A)]


def test_l22_prevote_nil_when_locked_on_another_value() -> None:
    net = Net()
    net.start()
    lock_on(net, 0, A)
    net.timeout(TimeoutKind.PRECOMMIT, 0)
    assert own_votes(net.propose(1, B)) == [(PV, 1, b"")]


def test_l22_prevote_locked_value_when_it_is_proposed_again() -> None:
    net = Net()
    net.start()
    lock_on(net, 0, A)
    net.timeout(TimeoutKind.PRECOMMIT, 0)
    assert own_votes(net.propose(1, A)) == [(PV, 1, A)]


# --- L28 -----------------------------------------------------------------------


def _polka_without_proposal(net: Net, round: int, value: bytes) -> None:
    """Round *round*: no proposal reaches us, but the others form a polka for *value*."""
    net.timeout(TimeoutKind.PROPOSE, round)  # L57: prevote nil
    net.vote(PV, round, value, [0, 1, 2])
    net.timeout(TimeoutKind.PREVOTE, round)  # L61: precommit nil
    net.timeout(TimeoutKind.PRECOMMIT, round)  # L65: next round


def test_l28_prevote_for_pol_proposal_backed_by_polka() -> None:
    net = Net()
    net.start()
    _polka_without_proposal(net, 0, A)
    assert net.state.round == 1 and net.state.locked_round == -1
    assert own_votes(net.propose(1, A, pol=0)) == [(PV, 1, A)]


def test_l28_waits_for_the_polka_of_the_pol_round() -> None:
    net = Net()
    net.start()
    net.timeout(TimeoutKind.PROPOSE, 0)
    net.timeout(TimeoutKind.PREVOTE, 0)
    net.timeout(TimeoutKind.PRECOMMIT, 0)
    assert own_votes(net.propose(1, A, pol=0)) == []  # no 2f+1 prevotes for A in round 0 yet
    assert own_votes(net.vote(PV, 0, A, [0, 1, 2])) == [(PV, 1, A)]


def test_l28_prevote_nil_when_locked_in_a_later_round_than_vr() -> None:
    net = Net()
    net.start()
    _polka_without_proposal(net, 0, A)
    lock_on(net, 1, B)
    net.timeout(TimeoutKind.PRECOMMIT, 1)
    assert own_votes(net.propose(2, A, pol=0)) == [(PV, 2, b"")]


def test_l28_prevote_nil_for_invalid_pol_proposal() -> None:
    net = Net()
    net.start()
    _polka_without_proposal(net, 0, A)
    assert own_votes(net.propose(1, A, pol=0, valid=False)) == [(PV, 1, b"")]


# --- L34, L36, L44, L47 ---------------------------------------------------------


def test_l34_schedule_prevote_timeout_on_any_two_thirds_prevotes() -> None:
    net = Net()
    net.start()
    net.timeout(TimeoutKind.PROPOSE, 0)  # our nil prevote
    acts = net.vote(PV, 0, A, [0]) + net.vote(PV, 0, b"", [1])
    assert of(ScheduleTimeout, acts) == [ScheduleTimeout(TimeoutKind.PREVOTE, 1, 0, 500)]
    assert net.state.step is Step.PREVOTE  # mixed votes: no L36 or L44
    # "for the first time": a fourth prevote does not schedule it again.
    assert of(ScheduleTimeout, net.vote(PV, 0, A, [2])) == []


def test_l36_lock_and_precommit_on_polka() -> None:
    net = Net()
    net.start()
    acts = lock_on(net, 0, A)
    assert (PC, 0, A) in own_votes(acts)
    s = net.state
    assert s.step is Step.PRECOMMIT
    assert (s.valid_value, s.valid_round) == (A, 0)


def test_l36_in_precommit_step_sets_valid_value_but_not_the_lock() -> None:
    net = Net()
    net.start()
    net.timeout(TimeoutKind.PROPOSE, 0)
    net.timeout(TimeoutKind.PREVOTE, 0)  # precommitted nil already
    assert net.state.step is Step.PRECOMMIT
    acts = net.propose(0, A) + net.vote(PV, 0, A, [0, 1, 2])
    assert own_votes(acts) == []
    s = net.state
    assert (s.valid_value, s.valid_round) == (A, 0)
    assert (s.locked_value, s.locked_round) == (None, -1)


def test_l36_needs_a_valid_value() -> None:
    net = Net()
    net.start()
    net.propose(0, A, valid=False)  # we prevote nil
    net.vote(PV, 0, A, [0, 1, 2])
    assert net.state.locked_round == -1 and net.state.valid_round == -1


def test_l44_precommit_nil_on_nil_polka() -> None:
    net = Net()
    net.start()
    net.timeout(TimeoutKind.PROPOSE, 0)
    acts = net.vote(PV, 0, b"", [0, 1])
    assert (PC, 0, b"") in own_votes(acts)
    assert net.state.step is Step.PRECOMMIT


def test_l47_schedule_precommit_timeout_on_any_two_thirds_precommits() -> None:
    net = Net()
    net.start()
    assert of(ScheduleTimeout, net.vote(PC, 0, A, [0]) + net.vote(PC, 0, b"", [1])) == []
    acts = net.vote(PC, 0, b"", [2])  # 3 of 4, for different values: L47, not L49
    assert of(ScheduleTimeout, acts) == [ScheduleTimeout(TimeoutKind.PRECOMMIT, 1, 0, 400)]
    assert net.state.precommit_timeout_scheduled
    # "for the first time": our own nil precommit (4 of 4) schedules nothing more.
    acts = net.timeout(TimeoutKind.PROPOSE, 0) + net.timeout(TimeoutKind.PREVOTE, 0)
    assert own_votes(acts) == [(PV, 0, b""), (PC, 0, b"")]
    assert of(ScheduleTimeout, acts) == []


# --- L49 -----------------------------------------------------------------------


def test_l49_decide_with_a_verifiable_commit_certificate() -> None:
    net = Net()
    net.start()
    net.propose(0, A)
    acts = net.vote(PC, 0, A, [0, 1, 2])
    decides = of(Decide, acts)
    assert len(decides) == 1
    d = decides[0]
    assert (d.height, d.round, d.block_hash) == (1, 0, A)  # type: ignore[attr-defined]
    assert verify_commit(CHAIN, d.commit, net.vs, height=1, block_hash=A) == 3  # type: ignore[attr-defined]
    assert net.state.step is Step.DECIDED and net.state.decision == A
    # Later messages of the height change nothing.
    assert of(Decide, net.vote(PC, 0, A, [])) == []
    assert net.timeout(TimeoutKind.PRECOMMIT, 0) == []


def test_l49_own_precommit_counts_toward_the_decision() -> None:
    net = Net()
    net.start()
    lock_on(net, 0, A)  # our own prevote + 2 others, then our precommit
    acts = net.vote(PC, 0, A, [0, 1])  # 2 others + our own = 3 of 4
    d = of(Decide, acts)
    assert d, "the node's own precommit must be counted"
    signers = {c.validator_address for c in d[0].commit.signatures}  # type: ignore[attr-defined]
    assert net.keys[3].address_payload in signers


def test_l49_decides_in_an_earlier_round_while_in_a_later_one() -> None:
    net = Net()
    net.start()
    net.propose(0, A)
    net.timeout(TimeoutKind.PREVOTE, 0)
    net.timeout(TimeoutKind.PRECOMMIT, 0)
    assert net.state.round == 1
    d = of(Decide, net.vote(PC, 0, A, [0, 1, 2]))
    assert d and d[0].round == 0  # type: ignore[attr-defined]


def test_l49_requests_validation_of_an_unknown_decided_value() -> None:
    net = Net()
    net.start()
    acts = net.vote(PC, 0, A, [0, 1, 2])
    assert RequestValidation(1, A) in acts and not of(Decide, acts)
    assert of(Decide, net.engine.step(BlockValidated(A, True)))


def test_single_validator_decides_alone() -> None:
    net = Net(powers=(1,), me=0)
    net.start()
    acts = net.engine.step(ProposeValue(1, 0, A))
    assert own_votes(acts) == [(PV, 0, A), (PC, 0, A)]
    d = of(Decide, acts)
    assert d and len(d[0].commit.signatures) == 1  # type: ignore[attr-defined]


# --- L55 -----------------------------------------------------------------------


def test_l55_round_skip_on_f_plus_one_messages_of_a_higher_round() -> None:
    net = Net()
    net.start()
    acts = net.vote(PV, 3, b"", [0])  # 1 of 4: not more than 1/3
    assert net.state.round == 0 and acts == []
    acts = net.vote(PC, 3, b"", [1])  # 2 of 4 > 1/3
    assert net.state.round == 3 and net.state.step is Step.PROPOSE
    assert ScheduleTimeout(TimeoutKind.PROPOSE, 1, 3, 1300) in acts


def test_l55_round_skip_is_weighted_by_power() -> None:
    net = Net(powers=(10, 1, 1, 1), me=3)
    net.start()
    gold = [i for i, v in enumerate(net.vs.validators) if v.power == 10][0]
    net.vote(PV, 2, b"", [gold])  # 10 of 13 power
    assert net.state.round == 2


# --- L57, L61, L65 -----------------------------------------------------------------


def test_l57_timeout_propose_prevotes_nil() -> None:
    net = Net()
    net.start()
    assert own_votes(net.timeout(TimeoutKind.PROPOSE, 0)) == [(PV, 0, b"")]
    assert net.state.step is Step.PREVOTE
    assert net.timeout(TimeoutKind.PROPOSE, 0) == []  # no longer in propose


def test_l61_timeout_prevote_precommits_nil() -> None:
    net = Net()
    net.start()
    net.timeout(TimeoutKind.PROPOSE, 0)
    assert own_votes(net.timeout(TimeoutKind.PREVOTE, 0)) == [(PC, 0, b"")]
    assert net.state.step is Step.PRECOMMIT


def test_l65_timeout_precommit_starts_next_round_with_longer_timeouts() -> None:
    net = Net()
    net.start()
    acts = net.timeout(TimeoutKind.PRECOMMIT, 0)
    assert net.state.round == 1 and net.state.step is Step.PROPOSE
    assert ScheduleTimeout(TimeoutKind.PROPOSE, 1, 1, 1100) in acts


def test_stale_timeouts_are_ignored() -> None:
    net = Net()
    net.start()
    assert net.timeout(TimeoutKind.PREVOTE, 0) == []  # not in prevote step
    assert net.timeout(TimeoutKind.PROPOSE, 4) == []  # other round
    assert net.engine.step(TimeoutFired(TimeoutKind.PROPOSE, 9, 0)) == []  # other height
    assert net.state.round == 0 and net.state.step is Step.PROPOSE


# --- heights, commit wait ----------------------------------------------------------


def test_new_height_waits_commit_timeout_before_round_zero() -> None:
    net = Net()
    acts = net.start(delay=None)
    assert acts == [ScheduleTimeout(TimeoutKind.COMMIT, 1, 0, 2000)]
    assert net.state.step is Step.NEW_HEIGHT
    acts = net.timeout(TimeoutKind.COMMIT, 0)
    assert net.state.step is Step.PROPOSE
    assert ScheduleTimeout(TimeoutKind.PROPOSE, 1, 0, 1000) in acts


def test_new_height_resets_lock_and_valid_value_l53() -> None:
    net = Net()
    net.start()
    lock_on(net, 0, A)
    net.vote(PC, 0, A, [0, 1])
    net.start(height=2)
    s = net.state
    assert (s.height, s.round, s.locked_round, s.valid_round, s.decision) == (2, 0, -1, -1, None)


# --- evidence and bad input --------------------------------------------------------


def test_equivocating_validator_is_caught() -> None:
    net = Net()
    net.start()
    net.vote(PV, 0, A, [0])
    acts = net.vote(PV, 0, B, [0])
    ev = of(EmitEvidence, acts)
    assert len(ev) == 1
    e = ev[0].evidence  # type: ignore[attr-defined]
    assert e.vote_a.validator_address == e.vote_b.validator_address == net.keys[0].address_payload


def test_proposal_from_the_wrong_proposer_is_rejected() -> None:
    net = Net()
    net.start()
    p = signed_proposal(net.keys[2], CHAIN, 1, 0, A)
    with pytest.raises(WrongProposer):
        net.engine.step(ProposalReceived(p, True))
    assert net.engine.proposals == {}


def test_proposal_with_bad_signature_is_rejected() -> None:
    net = Net()
    net.start()
    p = dataclasses.replace(signed_proposal(net.keys[0], CHAIN, 1, 0, A), block_hash=B)
    with pytest.raises(BadVoteSignature):
        net.engine.step(ProposalReceived(p, True))
    assert net.state.step is Step.PROPOSE


def test_unknown_validator_vote_is_rejected() -> None:
    net = Net()
    net.start()
    with pytest.raises(UnknownValidator):
        net.engine.step(VoteReceived(signed_vote(validator_key(77), CHAIN, PV, 1, 0, A)))


def test_far_future_and_stale_heights_are_rejected() -> None:
    net = Net()
    net.start(height=5)
    with pytest.raises(FutureHeight):
        net.engine.step(VoteReceived(signed_vote(net.keys[0], CHAIN, PV, 7, 0, A)))
    with pytest.raises(StaleHeight):
        net.engine.step(VoteReceived(signed_vote(net.keys[0], CHAIN, PV, 4, 0, A)))


def test_next_height_messages_are_buffered_bounded_and_replayed() -> None:
    net = Net(max_buffered_next_height=3)
    net.start()
    for i in range(3):
        net.engine.step(VoteReceived(signed_vote(net.keys[i], CHAIN, PV, 2, 0, A)))
    with pytest.raises(BufferFull):
        net.engine.step(VoteReceived(signed_vote(net.keys[0], CHAIN, PC, 2, 0, A)))
    with pytest.raises(UnknownValidator):  # strangers cannot fill the buffer
        net.engine.step(VoteReceived(signed_vote(validator_key(50), CHAIN, PV, 2, 0, A)))
    net.start(height=2)
    assert net.engine.votes.power_for(PV, 0, A) == 3


def test_commit_received_lets_a_lagging_node_decide() -> None:
    net = Net()
    net.start()
    sigs = tuple(
        CommitSig(
            net.keys[i].address_payload, signed_vote(net.keys[i], CHAIN, PC, 1, 4, A).signature
        )
        for i in (0, 1, 2)
    )
    acts = net.engine.step(CommitReceived(Commit(1, 4, A, sigs)))
    assert RequestValidation(1, A) in acts
    d = of(Decide, net.engine.step(BlockValidated(A, True)))
    assert d and d[0].round == 4  # type: ignore[attr-defined]


def test_commit_with_too_little_power_is_rejected_and_changes_nothing() -> None:
    net = Net()
    net.start()
    sigs = tuple(
        CommitSig(
            net.keys[i].address_payload, signed_vote(net.keys[i], CHAIN, PC, 1, 0, A).signature
        )
        for i in (0, 1)
    )
    with pytest.raises(BadCommit):
        net.engine.step(CommitReceived(Commit(1, 0, A, sigs)))
    assert net.engine.votes.size() == 0


def test_refused_signature_keeps_the_node_silent_but_moving() -> None:
    # The guard remembers signing round 5 of height 1 (e.g. before a crash).
    last = SignState(1, 5, SignStep.PRECOMMIT, b"", b"x" * 64)
    net = Net(signer_state=last)
    net.start()
    acts = net.timeout(TimeoutKind.PROPOSE, 0)
    assert own_votes(acts) == []
    assert net.state.step is Step.PREVOTE


def test_non_validator_follows_without_voting() -> None:
    net = Net(me=None)
    net.start()
    acts = net.propose(0, A) + net.vote(PV, 0, A, [0, 1, 2]) + net.vote(PC, 0, A, [0, 1, 2])
    assert own_votes(acts) == []
    assert of(Decide, acts)


# --- timeouts ----------------------------------------------------------------------


def test_timeouts_grow_per_round_and_presets() -> None:
    t = TimeoutConfig()
    assert [t.duration_ms(TimeoutKind.PROPOSE, r) for r in range(3)] == [3000, 3500, 4000]
    assert t.duration_ms(TimeoutKind.PRECOMMIT, 2) == 2000
    assert TimeoutConfig.mainnet().commit_ms == 30_000
    assert TimeoutConfig.for_network("testnet").commit_ms == 30_000
    assert TimeoutConfig.devnet().commit_ms == 1_000
    with pytest.raises(ValueError):
        TimeoutConfig(prevote_ms=-1)
    with pytest.raises(ValueError):
        TimeoutConfig.for_network("moon")


def test_flood_of_rounds_and_duplicates_keeps_memory_bounded() -> None:
    net = Net()
    net.start()
    reasons: dict[str, int] = {}
    # One validator (1/4 of the power: no round skip) signs votes for 200 rounds,
    # far future first, and sends every message three times.
    for r in range(199, -1, -1):
        for t in (PV, PC):
            v = signed_vote(net.keys[0], CHAIN, t, 1, r, block(r))
            for _ in range(3):
                try:
                    net.engine.step(VoteReceived(v))
                except InvalidVote as exc:
                    reasons[exc.reason.name] = reasons.get(exc.reason.name, 0) + 1
    # Kept: rounds 0 and 1 (current and next) plus a single future round.
    assert net.state.round == 0
    assert net.engine.votes.size() == 2 * 3
    assert reasons["FUTURE_HEIGHT"] == 3 * 2 * (200 - 3)  # FutureRound, typed
    assert reasons["DUPLICATE_VOTE"] == 2 * 2 * 3
    assert set(reasons) == {"DUPLICATE_VOTE", "FUTURE_HEIGHT"}
