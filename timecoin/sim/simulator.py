"""N consensus engines, a seeded faulty network, byzantine validators and invariant checks.

One seed fixes everything: the network schedule, the proposed values and the
byzantine choices (a single ``random.Random(seed)``), and events are processed
in ``(time, seq)`` order, so ``run_seed(config, seed)`` twice gives the same
``trace_hash``. Blocks are opaque values: a proposer's value is
``sha256(height, round, proposer, random bytes)`` and the simulated application
knows which values were proposed and which are valid.

Invariants, checked as the run goes:

* agreement: no two honest nodes decide different values at one height;
* validity: every decided value was proposed and is valid;
* no honest double-sign: an honest validator never signs two different votes
  (or proposals) for one height/round/step;
* locks: within a height an honest node's ``locked_round`` never decreases,
  and it locks (v, r) only when 2f+1 of the power signed prevotes for v in r;
* commit certificates verify against the validator set;
* liveness: after GST every honest node reaches the target height within
  ``liveness_bound_ms`` of simulated time (a miss is reported, not raised).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    Event,
    NewHeight,
    ProposalReceived,
    ProposeValue,
    RequestValidation,
    RequestValue,
    RoundState,
    ScheduleTimeout,
    Step,
    TimeoutFired,
    VoteReceived,
)
from timecoin.consensus.guard import MemorySigner
from timecoin.consensus.proposer import ProposerPriorities
from timecoin.consensus.timeouts import TimeoutConfig
from timecoin.consensus.vote_set import is_two_thirds
from timecoin.core.errors import TimecoinError
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair, is_valid_signature
from timecoin.core.signing import proposal_sign_digest, vote_sign_digest
from timecoin.core.types import Commit, Proposal, Validator, ValidatorSet, Vote, VoteType
from timecoin.sim.fixtures import validator_key
from timecoin.sim.network import Network, NetworkConfig

BEHAVIOURS = ("equivocate", "double_vote", "silent", "random_vote")
"""Byzantine behaviours, assigned round-robin to the byzantine validators (offset by the seed)."""

SIM_TIMEOUTS = TimeoutConfig(
    propose_ms=800,
    propose_delta_ms=400,
    prevote_ms=400,
    prevote_delta_ms=200,
    precommit_ms=400,
    precommit_delta_ms=200,
    commit_ms=100,
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """One simulated network."""

    validators: int = 4
    powers: tuple[int, ...] | None = None
    """Voting power per validator (default 1 each); e.g. tiers 1/10/100."""
    byzantine: int = 0
    """How many validators misbehave (the lowest-power ones)."""
    behaviours: tuple[str, ...] = BEHAVIOURS
    allow_unsafe_byzantine: bool = False
    """Allow byzantine power >= 1/3 (to show liveness, or safety, can break)."""
    heights: int = 10
    chain_id: str = "timecoin-sim"
    timeouts: TimeoutConfig = SIM_TIMEOUTS
    network: NetworkConfig = NetworkConfig()
    gossip_interval_ms: int = 1_000
    """Honest nodes re-send their current votes (or a commit to a lagging peer) this often."""
    liveness_bound_ms: int | None = None
    """Simulated time after GST for all honest nodes to reach the target (default by heights)."""
    max_events: int = 500_000

    def __post_init__(self) -> None:
        if self.validators < 1:
            raise ValueError("need at least one validator")
        if self.powers is not None and len(self.powers) != self.validators:
            raise ValueError("powers must list one power per validator")
        if not 0 <= self.byzantine <= self.validators:
            raise ValueError("byzantine must be between 0 and validators")
        for b in self.behaviours:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown behaviour {b!r}; choose from {BEHAVIOURS}")
        if self.byzantine and not self.behaviours:
            raise ValueError("byzantine validators need at least one behaviour")
        powers = self.power_list()
        byz = sum(powers[i] for i in self.byzantine_indices())
        # BFT needs byzantine power strictly below 1/3 (n >= 3f + 1).
        if 3 * byz >= sum(powers) and not self.allow_unsafe_byzantine:
            raise ValueError(
                f"byzantine power {byz} of {sum(powers)} is >= 1/3: "
                "pass allow_unsafe_byzantine (CLI --allow-unsafe-byzantine) to simulate it"
            )

    def power_list(self) -> list[int]:
        """Power of each validator index."""
        return list(self.powers) if self.powers is not None else [1] * self.validators

    def byzantine_indices(self) -> list[int]:
        """Return the byzantine validators: the lowest power, ties broken by the highest index."""
        powers = self.power_list()
        order = sorted(range(self.validators), key=lambda i: (powers[i], -i))
        return sorted(order[: self.byzantine])

    def bound_ms(self) -> int:
        """Liveness bound after GST."""
        if self.liveness_bound_ms is not None:
            return self.liveness_bound_ms
        return 20_000 + 4_000 * self.heights


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What one seeded run did and whether it kept the invariants."""

    seed: int
    heights_decided: int
    """Heights decided by every honest node (the slowest one)."""
    rounds: tuple[int, ...]
    """Per decided height, the highest decision round + 1 among honest nodes."""
    safety_violations: tuple[str, ...]
    liveness_failure: bool
    evidence: int
    """Distinct pieces of duplicate-vote evidence honest nodes emitted."""
    sim_time_ms: int
    events: int
    messages: int
    dropped: int
    rejected: dict[str, int]
    """Messages honest engines rejected, by reason name."""
    trace_hash: str


@dataclass(frozen=True, slots=True)
class Summary:
    """Aggregate over many seeds."""

    seeds: int
    heights_decided: int
    rounds_mean: float
    rounds_max: int
    safety_violations: int
    liveness_failures: int
    evidence: int
    failing_seeds: tuple[int, ...]
    first_violation: str = ""


def sim_key(i: int) -> KeyPair:
    """Return the deterministic validator key of simulated validator *i*."""
    return validator_key(i)


class _VerifyCache:
    """Signature checks shared by all simulated nodes: each distinct message is verified once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[bytes, bytes, bytes], bool] = {}

    def __call__(self, pubkey: bytes, signature: bytes, digest: bytes) -> bool:
        key = (pubkey, signature, digest)
        r = self._cache.get(key)
        if r is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            r = self._cache[key] = is_valid_signature(pubkey, signature, digest)
        return r


@dataclass(slots=True)
class _Node:
    index: int
    key: KeyPair
    engine: Engine
    behaviour: str | None
    priorities: ProposerPriorities
    decided: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)

    @property
    def honest(self) -> bool:
        return self.behaviour is None

    @property
    def height(self) -> int:
        return self.engine.state.height


class _Sim:
    def __init__(self, config: SimConfig, seed: int) -> None:
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        powers = config.power_list()
        keys = [sim_key(i) for i in range(config.validators)]
        self.vset = ValidatorSet(
            tuple(
                Validator(address=k.address_payload, pubkey=k.pubkey, power=p)
                for k, p in zip(keys, powers, strict=True)
            )
        )
        self.total = self.vset.total_power
        byz = config.byzantine_indices()
        verify = _VerifyCache()
        self.net = Network(config.network, config.validators, self.rng)
        self.nodes: list[_Node] = []
        for i, k in enumerate(keys):
            behaviour = None
            if i in byz:
                # Rotate with the seed so that even one byzantine validator
                # exercises every behaviour over a range of seeds.
                behaviour = config.behaviours[(byz.index(i) + seed) % len(config.behaviours)]
            ecfg = EngineConfig(
                chain_id=config.chain_id,
                address=k.address_payload,
                timeouts=config.timeouts,
                verify=verify,
            )
            engine = Engine(ecfg, MemorySigner(k, config.chain_id))
            self.nodes.append(_Node(i, k, engine, behaviour, ProposerPriorities.genesis(self.vset)))
        self.power_of = {v.address: v.power for v in self.vset.validators}
        self.index_of = {k.address_payload: i for i, k in enumerate(keys)}
        # The simulated application: value -> (height, valid).
        self.values: dict[bytes, tuple[int, bool]] = {}
        self.proposed: set[bytes] = set()
        """Values some proposer (honest or not) signed a proposal for."""
        # Every prevote anyone signed: (height, round, value) -> signers (lock invariant).
        self.prevotes: dict[tuple[int, int, bytes], dict[bytes, int]] = {}
        # What honest validators signed: (address, height, round, step) -> value.
        self.signed: dict[tuple[bytes, int, int, int], bytes] = {}
        self.violations: list[str] = []
        self.evidence: set[tuple[bytes, int, int, int]] = set()
        self.rejected: dict[str, int] = {}
        self.trace = hashlib.sha256()
        self.events = 0

    # --- helpers ------------------------------------------------------------

    def _violation(self, text: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(f"seed {self.seed} t={self.net.now}ms: {text}")

    def _new_value(self, height: int, round: int, proposer: int, valid: bool = True) -> bytes:
        v = sha256(
            b"sim-value"
            + height.to_bytes(8, "big")
            + round.to_bytes(4, "big")
            + proposer.to_bytes(4, "big")
            + self.rng.getrandbits(64).to_bytes(8, "big")
        )
        self.values[v] = (height, valid)
        return v

    def _is_valid(self, height: int, value: bytes) -> bool:
        info = self.values.get(value)
        return info is not None and info[0] == height and info[1]

    def _record_prevote(self, vote: Vote) -> None:
        if vote.type is VoteType.PREVOTE:
            signers = self.prevotes.setdefault((vote.height, vote.round, vote.block_hash), {})
            signers[vote.validator_address] = self.power_of.get(vote.validator_address, 0)

    def _broadcast(self, src: int, payload: Event) -> None:
        for dst in range(len(self.nodes)):
            self.net.send(src, dst, payload)

    def _sign_vote(self, node: _Node, vote: Vote) -> Vote:
        # Byzantine validators sign with their raw key: no double-sign guard.
        sig = node.key.sign(vote_sign_digest(self.config.chain_id, vote))
        signed = dataclasses.replace(vote, signature=sig)
        self._record_prevote(signed)
        return signed

    # --- running --------------------------------------------------------------

    def run(self) -> SeedResult:
        cfg = self.config
        for node in self.nodes:
            if node.behaviour == "silent":
                continue  # a crashed or mute validator: never sends anything
            self._feed(node, NewHeight(1, self.vset, node.priorities.priorities, start_delay_ms=0))
            self.net.schedule(cfg.gossip_interval_ms + node.index, node.index, "gossip", None)
        deadline = cfg.network.gst_ms + cfg.bound_ms()
        honest = [n for n in self.nodes if n.honest]
        while self.events < cfg.max_events:
            if all(len(n.decided) >= cfg.heights for n in honest):
                break
            item = self.net.pop()
            if item is None or item.time_ms > deadline:
                break
            self.events += 1
            node = self.nodes[item.node]
            if node.behaviour == "silent":
                continue
            if item.kind == "gossip":
                self._gossip(node)
                self.net.schedule(self.net.now + cfg.gossip_interval_ms, node.index, "gossip", None)
                continue
            self.trace.update(f"{item.time_ms}|{item.node}|{_describe(item.payload)}\n".encode())
            self._feed(node, item.payload)
        decided = min((len(n.decided) for n in honest), default=0)
        liveness_failure = decided < cfg.heights
        rounds = []
        for h in range(1, decided + 1):
            rounds.append(max(n.decided[h][0] for n in honest) + 1)
        return SeedResult(
            seed=self.seed,
            heights_decided=decided,
            rounds=tuple(rounds),
            safety_violations=tuple(self.violations),
            liveness_failure=liveness_failure,
            evidence=len(self.evidence),
            sim_time_ms=self.net.now,
            events=self.events,
            messages=self.net.sent,
            dropped=self.net.dropped,
            rejected=dict(sorted(self.rejected.items())),
            trace_hash=self.trace.hexdigest(),
        )

    def _gossip(self, node: _Node) -> None:
        """Re-send what a peer may have missed (CometBFT's gossip routines, simplified).

        Peers announce their height and round (CometBFT's NewRoundStep), modelled
        by reading the peer's engine state. A node sends each peer: the commit of
        the peer's height if the peer is behind; else its own votes of its current
        round and of the peer's round, every vote it holds for the peer's round if
        the peer is in an earlier round (so a lagging node can complete that round
        and time out of it), the current proposal and its POL round's prevotes.
        """
        if not node.honest:
            return
        e = node.engine
        h, r = e.state.height, e.state.round
        me = node.key.address_payload
        types = (VoteType.PREVOTE, VoteType.PRECOMMIT)
        prop = e.proposals.get(r)
        pol: list[Vote] = []
        if prop is not None and prop.pol_round >= 0:
            # Relay the proof of lock a re-proposal refers to: without it, nodes
            # that missed that round could never accept the re-proposal (L28).
            pol = [
                v
                for v in e.votes.votes(VoteType.PREVOTE, prop.pol_round)
                if v.block_hash == prop.block_hash
            ]
        for peer in self.nodes:
            if peer is node:
                continue
            ph, pr = peer.engine.state.height, peer.engine.state.round
            if ph < h and ph in node.commits:
                self.net.send(node.index, peer.index, CommitReceived(node.commits[ph]))
                continue
            if ph != h:
                continue
            out: list[Vote | None] = [
                e.votes.get(t, rr, me) for rr in sorted({r, pr}) for t in types
            ]
            if pr < r:
                out.extend(v for t in types for v in e.votes.votes(t, pr))
            out.extend(pol)
            for v in out:
                if v is not None:
                    self.net.send(node.index, peer.index, VoteReceived(v))
            if prop is not None:
                self.net.send(node.index, peer.index, ProposalReceived(prop))

    def _feed(self, node: _Node, first: Event) -> None:
        pending: list[Event] = [first]
        while pending:
            ev = pending.pop(0)
            before = node.engine.state
            try:
                actions = node.engine.step(ev)
            except TimecoinError as exc:
                if node.honest:
                    name = exc.reason.name
                    self.rejected[name] = self.rejected.get(name, 0) + 1
                continue
            except Exception:  # an engine bug must show up as a violation, not a crash
                self._violation("engine crashed:\n" + traceback.format_exc())
                continue
            for action in actions:
                self._execute(node, action, pending)
            if node.honest:
                self._check_lock(node, before)

    def _check_lock(self, node: _Node, b: RoundState) -> None:
        s = node.engine.state
        if s.height != b.height:
            return
        if s.locked_round < b.locked_round:
            self._violation(f"node {node.index} unlocked round {b.locked_round}->{s.locked_round}")
        if s.locked_round != b.locked_round or s.locked_value != b.locked_value:
            # L36 is the only place a lock changes: 2f+1 signed prevotes for it.
            if s.locked_value is None:
                self._violation(f"node {node.index} dropped its lock within height {s.height}")
                return
            signers = self.prevotes.get((s.height, s.locked_round, s.locked_value), {})
            if not is_two_thirds(sum(signers.values()), self.total):
                self._violation(
                    f"node {node.index} locked {s.locked_value.hex()[:8]} in round "
                    f"{s.locked_round} without 2f+1 prevotes"
                )

    def _execute(self, node: _Node, action: Action, pending: list[Event]) -> None:
        cfg = self.config
        idx = node.index
        match action:
            case BroadcastVote(vote):
                self._on_own_vote(node, vote)
            case BroadcastProposal(proposal):
                self._on_own_proposal(node, proposal)
            case ScheduleTimeout(kind, height, round, after_ms):
                self.net.schedule(
                    self.net.now + after_ms, idx, "timeout", TimeoutFired(kind, height, round)
                )
            case RequestValidation(height, block_hash):
                pending.append(BlockValidated(block_hash, self._is_valid(height, block_hash)))
            case RequestValue(height, round):
                pending.append(ProposeValue(height, round, self._new_value(height, round, idx)))
            case Decide(height, round, block_hash, commit):
                self._on_decide(node, height, round, block_hash, commit)
                node.priorities = node.priorities.advance()
                pending.append(NewHeight(height + 1, self.vset, node.priorities.priorities))
            case EmitEvidence(ev):
                if node.honest:
                    a = ev.vote_a
                    self.evidence.add((a.validator_address, a.height, a.round, int(a.type)))
                    if self.nodes[self.index_of[a.validator_address]].honest:
                        self._violation(f"evidence against honest node {a.validator_address.hex()}")
        del cfg

    def _on_own_vote(self, node: _Node, vote: Vote) -> None:
        self._record_prevote(vote)
        if node.honest:
            key = (vote.validator_address, vote.height, vote.round, int(vote.type) + 1)
            prev = self.signed.setdefault(key, vote.block_hash)
            if prev != vote.block_hash:
                self._violation(f"honest node {node.index} double-signed {key[1:]}")
            self._broadcast(node.index, VoteReceived(vote))
            return
        others = [i for i in range(len(self.nodes)) if i != node.index]
        half = set(self.rng.sample(others, len(others) // 2))
        if node.behaviour == "double_vote":
            # Tell half the network one thing and the other half another.
            other_value = b"" if vote.block_hash else self._new_value(vote.height, vote.round, 99)
            twin = self._sign_vote(node, dataclasses.replace(vote, block_hash=other_value))
            for dst in others:
                self.net.send(node.index, dst, VoteReceived(twin if dst in half else vote))
        elif node.behaviour == "random_vote":
            bogus = self._new_value(vote.height, vote.round, 98, valid=False)
            forged = self._sign_vote(node, dataclasses.replace(vote, block_hash=bogus))
            self._broadcast(node.index, VoteReceived(forged))
        else:
            self._broadcast(node.index, VoteReceived(vote))

    def _on_own_proposal(self, node: _Node, proposal: Proposal) -> None:
        self.proposed.add(proposal.block_hash)
        if node.honest:
            key = (proposal.proposer_address, proposal.height, proposal.round, 0)
            prev = self.signed.setdefault(key, proposal.block_hash)
            if prev != proposal.block_hash:
                self._violation(f"honest node {node.index} signed two proposals {key[1:]}")
        if node.behaviour == "equivocate":
            twin_value = self._new_value(proposal.height, proposal.round, node.index)
            twin = dataclasses.replace(proposal, block_hash=twin_value, pol_round=-1)
            self.proposed.add(twin_value)
            twin = dataclasses.replace(
                twin, signature=node.key.sign(proposal_sign_digest(self.config.chain_id, twin))
            )
            others = [i for i in range(len(self.nodes)) if i != node.index]
            half = set(self.rng.sample(others, len(others) // 2))
            for dst in others:
                self.net.send(node.index, dst, ProposalReceived(twin if dst in half else proposal))
            return
        self._broadcast(node.index, ProposalReceived(proposal))

    def _on_decide(
        self, node: _Node, height: int, round: int, value: bytes, commit: Commit
    ) -> None:
        node.decided[height] = (round, value)
        node.commits[height] = commit
        self.trace.update(f"decide|{node.index}|{height}|{round}|{value.hex()}\n".encode())
        if not node.honest:
            return
        if not self._is_valid(height, value):
            self._violation(f"node {node.index} decided invalid value at height {height}")
        if value not in self.proposed:
            self._violation(f"node {node.index} decided a value nobody proposed at {height}")
        for other in self.nodes:
            if other.honest and other is not node and height in other.decided:
                if other.decided[height][1] != value:
                    self._violation(
                        f"disagreement at height {height}: node {node.index} "
                        f"{value.hex()[:8]} vs node {other.index} "
                        f"{other.decided[height][1].hex()[:8]}"
                    )
        self._check_commit(commit, height, value)

    def _check_commit(self, commit: Commit, height: int, value: bytes) -> None:
        seen: set[bytes] = set()
        power = 0
        for cs in commit.signatures:
            v = self.vset.get(cs.validator_address)
            if v is None or cs.validator_address in seen:
                self._violation(f"commit at height {height} has a bad signer")
                return
            seen.add(cs.validator_address)
            vote = Vote(VoteType.PRECOMMIT, height, commit.round, value, cs.validator_address)
            if not is_valid_signature(
                v.pubkey, cs.signature, vote_sign_digest(self.config.chain_id, vote)
            ):
                self._violation(f"commit at height {height} has a bad signature")
                return
            power += v.power
        if commit.block_hash != value or not is_two_thirds(power, self.total):
            self._violation(f"commit at height {height} lacks 2/3 of the power")


def _describe(payload: object) -> str:
    match payload:
        case VoteReceived(v):
            who = v.validator_address.hex()[:8]
            return f"vote {int(v.type)} {v.height}/{v.round} {v.block_hash.hex()[:16]} {who}"
        case ProposalReceived(p):
            return f"proposal {p.height}/{p.round}/{p.pol_round} {p.block_hash.hex()[:16]}"
        case CommitReceived(c):
            return f"commit {c.height}/{c.round} {c.block_hash.hex()[:16]}"
        case TimeoutFired(kind, height, round):
            return f"timeout {int(kind)} {height}/{round}"
    return repr(payload)


def run_seed(config: SimConfig, seed: int) -> SeedResult:
    """Run one seeded simulation; the same (config, seed) always gives the same result."""
    return _Sim(config, seed).run()


def run_many(config: SimConfig, seeds: Iterable[int]) -> Summary:
    """Run every seed and aggregate."""
    results = [run_seed(config, s) for s in seeds]
    return summarize(results)


def summarize(results: list[SeedResult]) -> Summary:
    """Aggregate seed results."""
    rounds = [r for res in results for r in res.rounds]
    failing = tuple(res.seed for res in results if res.safety_violations or res.liveness_failure)
    first = next((res.safety_violations[0] for res in results if res.safety_violations), "")
    return Summary(
        seeds=len(results),
        heights_decided=sum(res.heights_decided for res in results),
        rounds_mean=(sum(rounds) / len(rounds)) if rounds else 0.0,
        rounds_max=max(rounds, default=0),
        safety_violations=sum(len(res.safety_violations) for res in results),
        liveness_failures=sum(1 for res in results if res.liveness_failure),
        evidence=sum(res.evidence for res in results),
        failing_seeds=failing,
        first_violation=first,
    )


__all__ = ["SeedResult", "SimConfig", "Step", "Summary", "run_many", "run_seed", "summarize"]
