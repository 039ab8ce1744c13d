"""Random event sequences: the engine only ever raises typed errors and keeps its invariants."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timecoin.consensus.engine import (
    BlockValidated,
    Decide,
    Engine,
    EngineConfig,
    Event,
    NewHeight,
    ProposalReceived,
    ProposeValue,
    Step,
    TimeoutFired,
    VoteReceived,
)
from timecoin.consensus.guard import MemorySigner
from timecoin.consensus.proposer import initial_priorities
from timecoin.consensus.timeouts import TimeoutConfig, TimeoutKind
from timecoin.core.errors import TimecoinError
from timecoin.core.types import VoteType
from timecoin.sim.fixtures import block, make_validators, signed_proposal, signed_vote

CHAIN = "timecoin-fuzz"
VS, KEYS = make_validators([1, 1, 1, 1])
ME = KEYS[3]
VALUES = [block(0), block(1), b""]
ROUNDS = range(3)

# Signing is the slow part: pre-sign every message the strategies can pick.
VOTES = [
    VoteReceived(signed_vote(k, CHAIN, t, 1, r, v))
    for k in KEYS[:3]
    for t in (VoteType.PREVOTE, VoteType.PRECOMMIT)
    for r in ROUNDS
    for v in VALUES
]
PROPOSALS = [
    ProposalReceived(signed_proposal(KEYS[r % 4], CHAIN, 1, r, v, pol), valid)
    for r in ROUNDS
    if r % 4 != 3
    for v in VALUES[:2]
    for pol in range(-1, r)
    for valid in (True, False, None)
]
OTHERS: list[Event] = [
    *(TimeoutFired(k, 1, r) for k in TimeoutKind for r in ROUNDS),
    *(BlockValidated(v, ok) for v in VALUES[:2] for ok in (True, False)),
    *(ProposeValue(1, 3, v) for v in VALUES[:2]),
]
EVENTS = st.sampled_from([*VOTES, *PROPOSALS, *OTHERS])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENTS, max_size=60))
def test_random_events_keep_the_invariants(events: list[Event]) -> None:
    engine = Engine(
        EngineConfig(CHAIN, ME.address_payload, TimeoutConfig.devnet()), MemorySigner(ME, CHAIN)
    )
    engine.step(NewHeight(1, VS, initial_priorities(VS), start_delay_ms=0))
    decisions = 0
    signed: dict[tuple[int, int], bytes] = {}
    for ev in events:
        before = engine.state
        try:
            actions = engine.step(ev)
        except TimecoinError:
            assert engine.state == before  # rejected input changes nothing
            continue
        s = engine.state
        assert s.locked_round >= before.locked_round
        assert s.round >= before.round
        assert s.step >= before.step or s.round > before.round
        for a in actions:
            if isinstance(a, Decide):
                decisions += 1
                assert s.step is Step.DECIDED and s.decision == a.block_hash
            vote = getattr(a, "vote", None)
            if vote is not None:  # the node never signs two different votes for one round/type
                key = (vote.round, int(vote.type))
                assert signed.setdefault(key, vote.block_hash) == vote.block_hash
    assert decisions <= 1
