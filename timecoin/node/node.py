"""The node: the asyncio shell that feeds the pure parts and executes what they decide.

Threads and ownership (STYLE.md, Async):

* the event loop runs gRPC servicers, timers and this driver; it never blocks;
* ``db`` (one thread) owns the chain state, the store and the mempool: every
  read-modify-write of the ledger is serialized there, so no locks are needed;
* ``consensus`` (one thread) runs ``Engine.step``, which may verify vote
  signatures and persists the double-sign guard (an fsync) before signing;
* ``verify`` (one thread per core) checks transaction signatures before a
  transaction reaches the mempool; libsecp256k1 runs without the GIL, so these
  checks use every core.

``Node.run()`` owns one TaskGroup; shutdown cancels it, stops the servers with
a grace period, waits for an in-flight block write to finish and closes the
store, so a block is either fully written or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from timecoin._proto.consensus.v1 import consensus_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.api.backend import LOOP_SLICE, BlockBroadcaster, BlockInfo, BlockSubscription
from timecoin.consensus.engine import (
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
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
    ScheduleTimeout,
    TimeoutFired,
    VoteReceived,
)
from timecoin.core.commit import (
    evidence_element_hash,
    verify_commit,
    verify_duplicate_vote_evidence,
)
from timecoin.core.errors import (
    BadHeader,
    BadHeight,
    BadSignature,
    InvalidVote,
    RateLimited,
    Reason,
    TimecoinError,
)
from timecoin.core.muhash import Num
from timecoin.core.signing import vote_sign_digest
from timecoin.core.tx import check_signatures, signatures_valid, validate_transaction_stateless
from timecoin.core.types import (
    Block,
    Commit,
    DuplicateVoteEvidence,
    Proposal,
    Transaction,
    Vote,
    VoteType,
)
from timecoin.core.validators import validator_updates
from timecoin.node.chainstate import EVIDENCE_MAX_AGE, BlockInProgress, ChainState, ProposedBlock
from timecoin.node.executor import BACKGROUND, NORMAL, URGENT, PriorityExecutor
from timecoin.node.logs import event
from timecoin.node.workers import WorkerProcesses, item_of
from timecoin.telemetry.tracing import current_carrier
from timecoin.wire.codec import (
    decode_block,
    decode_commit,
    decode_transaction,
    evidence_from_pb,
    evidence_to_pb,
    proposal_from_pb,
    proposal_to_pb,
    transaction_to_pb,
    vote_from_pb,
    vote_to_pb,
)

log = logging.getLogger("timed.node")
T = TypeVar("T")


def _trace_pb(carrier: dict[str, str]) -> types_pb2.TraceContext:
    """Return the W3C trace context of *carrier* as the wire message."""
    return types_pb2.TraceContext(
        traceparent=carrier.get("traceparent", ""), tracestate=carrier.get("tracestate", "")
    )


_PUNISHABLE = frozenset({Reason.BAD_SIGNATURE, Reason.UNKNOWN_VALIDATOR, Reason.MALFORMED})
"""Consensus rejections that prove a peer sent garbage (others are ordinary races)."""
_MAX_BLOCKS_PER_HEIGHT = 8
"""Distinct proposed blocks kept per height (one per round, a few rounds)."""
_MAX_VOTES_PER_ANSWER = 1_000
_MAX_OWN_VOTES = 64
_PROPOSAL_RESEND_TICKS = 4
"""A proposal (with its block, up to 2 MB) is re-sent every 4th gossip tick only."""
_MAX_TRACED_TXS = 100_000
_MAX_TRACEPARENT = 128
"""A W3C traceparent is 55 characters (version 00); longer ones from peers are skipped."""
_MAX_TRACESTATE = 512
"""The W3C limit on tracestate."""
_RELAY_BATCH = 200
"""Transactions per gossip message (below the peer layer's per-batch cap)."""
_RELAY_DELAY_S = 0.02
"""Accepted transactions wait this long to be relayed together (fewer, larger messages)."""
_MAX_COMMITTED_EVIDENCE = 4_096
"""Bound on the element hashes of recently committed evidence the node remembers."""


@dataclass(frozen=True, slots=True)
class _Revalidate:
    """Node-local: a block we were asked to validate has arrived."""

    height: int
    block_hash: bytes


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One TimeCoin node: chain state, mempool and the consensus driver."""

    def __init__(
        self,
        *,
        chain: ChainState,
        mempool: Any,
        engine_config: EngineConfig,
        signer: Any,
        verify_workers: int | None = None,
        workers: WorkerProcesses | None = None,
        max_subscribers: int = 256,
        max_inbox: int = 20_000,
    ) -> None:
        self.chain = chain
        self.params = chain.params
        self.mempool = mempool
        self.engine = Engine(engine_config, signer)
        self.address = engine_config.address
        self._db = PriorityExecutor("timed-db")
        self._consensus = ThreadPoolExecutor(1, thread_name_prefix="timed-consensus")
        self._verify_workers = verify_workers or max(2, os.cpu_count() or 2)
        self._verify = ThreadPoolExecutor(self._verify_workers, thread_name_prefix="timed-verify")
        self._workers = workers
        """Worker processes for signature checks and block hashing (None: the verify threads
        and the storage thread); the container that made them stops them."""
        # Two inboxes for the engine: our own events (timers, built blocks) are
        # never dropped; events from peers are bounded and dropped when full.
        self._internal: deque[tuple[Event, bytes | None]] = deque()
        self._inbox: deque[tuple[Event | _Revalidate, bytes | None]] = deque()
        self._wake = asyncio.Event()
        self.max_inbox = max_inbox
        self.network: Any = None
        self._received: dict[bytes, tuple[int, Block, bytes]] = {}
        """Blocks carried by proposals: hash -> (height, block, bytes); bounded per height."""
        self._pending_validation: set[bytes] = set()
        self.sync_target = 0
        self.tracing: Any = None
        """A ``telemetry.tracing.NodeTracing`` when traces are exported."""
        self._tx_traces: OrderedDict[bytes, dict[str, str]] = OrderedDict()
        self._block_traces: dict[bytes, dict[str, str]] = {}
        """Trace carriers of proposed blocks received from peers (pruned with them)."""
        """Trace carriers of pending transactions (bounded) so their commit joins the trace."""
        self._metrics_set: Any = None
        self._seen_round: tuple[int, int] = (0, -1)
        self._seen_step: Any = None
        self._round_started = self._step_started = 0.0
        self._round_span: Any = None
        self._submitted_at: OrderedDict[bytes, float] = OrderedDict()
        """When transactions submitted to this node's API arrived (submit->final latency)."""
        self.metrics: Any = None
        """A ``telemetry.metrics.NodeMetrics`` when the Prometheus endpoint is on."""
        self.byzantine_key: Any = None
        """Test-only (``TIMED_TEST_BYZANTINE=double-vote``): the key used to equivocate."""
        self._last_proposal: Proposal | None = None
        self._proposal_msg: tuple[Proposal, Any] | None = None
        self._own_votes: list[Vote] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._round0_at = time.monotonic()
        """When round 0 of the current height started (or is due to start)."""
        self._relay_pending: dict[bytes | None, list[Any]] = {}
        self._relay_timer: asyncio.TimerHandle | None = None
        self._candidates: dict[bytes, ProposedBlock] = {}
        self._last_commit: Commit | None = None
        self._evidence: list[DuplicateVoteEvidence] = []
        self._committed_evidence: OrderedDict[bytes, int] = OrderedDict()
        """Element hash -> height of evidence in recent blocks (bounded)."""
        self.broadcaster = BlockBroadcaster()
        self._max_subs = max_subscribers
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.blocks_committed = 0

    # --- executors ------------------------------------------------------------

    async def in_db(self, fn: Callable[..., T], *args: Any, priority: int = NORMAL) -> T:
        """Run *fn* on the single storage thread (the one writer of chain and mempool).

        *priority* orders the queue (``node.executor``): consensus work is
        ``URGENT``, queries ``NORMAL``, admissions ``BACKGROUND``.
        """
        return await asyncio.wrap_future(self._db.submit_at(priority, fn, *args))

    def submit_to_db(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue *fn* on the storage thread without waiting (fire and forget; errors logged)."""

        def run() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("background storage write failed")

        with contextlib.suppress(RuntimeError):  # executor already shut down
            self._db.submit_at(BACKGROUND, run)

    async def _on_verify_threads(
        self, items: Sequence[Any], fn: Callable[[Any], T], *, min_chunk: int = 1
    ) -> list[T]:
        """Apply *fn* to every item on the verify threads, in chunks, results in order."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        size = max(min_chunk, len(items) // self._verify_workers + 1)
        parts = [items[i : i + size] for i in range(0, len(items), size)]

        def run(part: Sequence[Any]) -> list[T]:
            return [fn(x) for x in part]

        results = await asyncio.gather(*(loop.run_in_executor(self._verify, run, p) for p in parts))
        return [r for part in results for r in part]

    async def _in_consensus(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._consensus, fn, *args)

    # --- lifecycle ------------------------------------------------------------

    async def run(
        self, servers: Sequence[Any] = (), on_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run until ``stop()``; then shut down in order and return."""
        self._last_commit = await self.in_db(self.chain.seen_commit, self.chain.height)
        for s in servers:
            await s.start()
        try:
            async with asyncio.TaskGroup() as tg:
                consensus = tg.create_task(self._consensus_loop(), name="consensus")
                gossip = tg.create_task(self._gossip_loop(), name="gossip")
                self.ready.set()
                if on_ready is not None:
                    await on_ready()
                await self._stopping.wait()
                consensus.cancel()
                gossip.cancel()
        finally:
            for t in self._timers:
                t.cancel()
            if self._relay_timer is not None:
                self._relay_timer.cancel()
            for s in servers:
                with contextlib.suppress(Exception):
                    await s.stop(2.0)
            self.broadcaster.close_all()
            if self._round_span is not None:
                self._round_span.end()
            # Waits for an in-flight block write; nothing new is queued after cancel.
            self._db.shutdown(wait=True)
            self._consensus.shutdown(wait=True)
            self._verify.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Ask ``run()`` to shut down."""
        self._stopping.set()

    # --- consensus driver ---------------------------------------------------------

    def _feed(self, ev: Event) -> None:
        self._internal.append((ev, None))
        self._wake.set()

    def feed_from_peer(self, ev: Event | _Revalidate, peer_id: bytes) -> bool:
        """Queue an event that came from *peer_id*; False (dropped) when the inbox is full."""
        if len(self._inbox) >= self.max_inbox:
            return False
        self._inbox.append((ev, peer_id))
        self._wake.set()
        return True

    def _pop(self) -> tuple[Any, bytes | None] | None:
        if self._internal:
            return self._internal.popleft()
        if self._inbox:
            return self._inbox.popleft()
        return None

    async def _consensus_loop(self) -> None:
        chain = self.chain
        height = chain.height + 1
        self._round0_at = time.monotonic()
        self._feed(
            NewHeight(
                height, chain.validators(height), chain.priorities.priorities, start_delay_ms=0
            )
        )
        role = "validator" if self.address in chain.validators(height) else "observer"
        event(
            log,
            "Consensus activated",
            height=height,
            role=role,
            validators=len(chain.validators(height)),
            power=chain.validators(height).total_power,
        )
        while True:
            if self._behind():
                await self._sync()
                continue
            item = self._pop()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            ev, peer_id = item
            if isinstance(ev, _Revalidate):
                if ev.height == self.engine.state.height:
                    await self._validate_received(ev.height, ev.block_hash)
                continue
            try:
                actions = await self._in_consensus(self.engine.step, ev)
            except InvalidVote as exc:
                if peer_id is not None and exc.reason in _PUNISHABLE and self.network is not None:
                    self.network.report_misbehaviour(peer_id, exc.reason, str(exc))
                log.debug("consensus input rejected: %s", exc)
                continue
            except TimecoinError as exc:
                log.debug("consensus input rejected: %s", exc)
                continue
            self._observe_engine()
            for action in actions:
                await self._execute(action)

    async def _execute(self, action: Any) -> None:
        match action:
            case ScheduleTimeout(kind, height, round_, after_ms):
                loop = asyncio.get_running_loop()
                handle: asyncio.TimerHandle

                def fire() -> None:
                    self._timers.discard(handle)
                    self._feed(TimeoutFired(kind, height, round_))

                handle = loop.call_later(after_ms / 1000, fire)
                self._timers.add(handle)
            case RequestValue(height, round_):
                with self._span("block.propose", height=height, round=round_):
                    proposed = await self._propose(height)
                if proposed is not None:
                    self._trace_txs(proposed.block, "tx.propose", round=round_)
                    self._candidates[proposed.block.hash] = proposed
                    self._feed(ProposeValue(height, round_, proposed.block.hash))
            case RequestValidation(height, block_hash):
                await self._validate_received(height, block_hash)
            case Decide(height, _, block_hash, commit):
                await self._decide(height, block_hash, commit)
            case EmitEvidence(evidence):
                if (
                    not self._has_evidence(evidence)
                    and len(self._evidence) < self.params.max_evidence
                ):
                    self._evidence.append(evidence)
                    if self.network is not None:
                        self.network.broadcast_evidence(evidence_to_pb(evidence))
            case BroadcastProposal(proposal):
                self._last_proposal = proposal
                self._send_proposal(proposal)
            case BroadcastVote(vote):
                self._own_votes.append(vote)
                if self.network is not None:
                    self._broadcast(consensus_pb2.ConsensusMessage(vote=vote_to_pb(vote)))
                    if self.byzantine_key is not None:
                        self._equivocate(vote)

    async def _propose(self, height: int) -> ProposedBlock | None:
        """Build this node's block for *height* (None if the chain moved past it).

        In three steps, so that the storage thread is not held while the block's
        coins are hashed for the UTXO commitment (its most expensive part, about
        20 us per transaction): draft it on the storage thread, hash the coins
        in the worker processes (the storage thread admits transactions
        meanwhile), finish it on the storage thread. Without workers the
        commitment is computed in the last step.
        """
        pending = await self.in_db(self._draft, height, priority=URGENT)
        if pending is None:
            return None
        products = None
        if self._workers is not None:
            products = await self._workers.products(
                (pending.spent_elements, pending.created_elements)
            )
        return await self.in_db(self._finish, pending, products, priority=URGENT)

    def _draft(self, height: int) -> BlockInProgress | None:
        if height != self.chain.height + 1 or self.address is None:
            return None
        candidates, fees = self.mempool.select_with_fees(
            self.params.max_block_bytes, self.params.max_block_txs - 1
        )
        evidence = tuple({evidence_element_hash(e): e for e in self._evidence}.values())
        try:
            return self.chain.draft_block(
                self.address,
                now_ms(),
                self._last_commit,
                candidates,
                evidence,
                admitted_fees=fees,
            )
        except TimecoinError as exc:
            self._log_empty(height, len(candidates), exc)
            return self.chain.draft_block(self.address, now_ms(), self._last_commit, [], ())

    def _finish(
        self, pending: BlockInProgress, products: Sequence[Num] | None
    ) -> ProposedBlock | None:
        address = self.address
        if pending.height != self.chain.height + 1 or address is None:
            return None  # committed meanwhile (a peer's block arrived through sync)
        try:
            return self.chain.finish_block(pending, products)
        except TimecoinError as exc:
            self._log_empty(pending.height, len(pending.draft.txs) - 1, exc)
            return self.chain.build_block(address, now_ms(), self._last_commit, [], ())

    @staticmethod
    def _log_empty(height: int, candidates: int, exc: TimecoinError) -> None:
        # Never stall the chain on a bad candidate: propose an empty block instead
        # and say why, so the operator can see it.
        log.error(
            "block %d with %d candidates failed (%s); proposing it empty", height, candidates, exc
        )

    async def _decide(self, height: int, block_hash: bytes, commit: Commit) -> None:
        proposed = self._candidates.get(block_hash)
        if proposed is None:
            received = self._received.get(block_hash)
            if received is not None:
                try:
                    proposed = await self.in_db(
                        self._validate_block, received[1], received[2], priority=URGENT
                    )
                except TimecoinError as exc:
                    log.error("decided block %s is invalid here: %s", block_hash.hex()[:16], exc)
        if proposed is None:
            # Decided by >2/3 but we never got (or could not use) the block: fetch it
            # with its commit from peers, as any node that fell behind does.
            log.warning("decided block %s unknown here; syncing it", block_hash.hex()[:16])
            self.sync_target = max(self.sync_target, height)
            return
        # Decided: more than 2/3 of the power precommitted this block in commit.round.
        self._trace_txs(
            proposed.block, "tx.decided", round=commit.round, precommits=len(commit.signatures)
        )
        started = time.perf_counter()
        with self._span("block.commit", height=height, txs=len(proposed.block.txs)):
            await self.in_db(self._commit, proposed, commit, priority=URGENT)
        self._after_commit(proposed.block, commit)
        block = proposed.block
        event(
            log,
            "Block produced",
            height=height,
            hash=block.hash.hex()[:16],
            txs=len(block.txs),
            proposer=block.header.proposer_address.hex()[:8],
            round=commit.round,
            commit_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        self._publish(BlockInfo(block, commit, proposed.block_bytes))
        self._observe_commit(block, time.perf_counter() - started)
        nh = height + 1
        # Every validator's precommit is in: none can arrive late (CometBFT's
        # skip_timeout_commit), so the next height need not keep the pause.
        everyone = len({s.validator_address for s in commit.signatures}) >= len(
            self.chain.validators(height)
        )
        delay_ms = self._next_start_delay_ms(keep_pause=not everyone)
        self._feed(
            NewHeight(
                nh,
                self.chain.validators(nh),
                self.chain.priorities.priorities,
                start_delay_ms=delay_ms,
            )
        )

    def _next_start_delay_ms(self, *, keep_pause: bool = True) -> int:
        """Wait before the next height so blocks come once per block interval.

        The interval counts from the start of the height just decided, so the
        time spent building, voting and committing a block is not added on top
        of it (a busy devnet keeps ~1 block/s instead of 1 s + processing). A
        tenth of the interval is kept even when the height took longer
        (*keep_pause*), CometBFT's ``timeout_commit`` in small: late precommits
        still reach the next block's last commit. Without late precommits to
        wait for (every validator signed), a slow height goes straight on.
        """
        interval = self.engine.config.timeouts.commit_ms
        now = time.monotonic()
        spent_ms = (now - self._round0_at) * 1000
        delay_ms = int(max(interval // 10 if keep_pause else 0, interval - spent_ms))
        self._round0_at = now + delay_ms / 1000
        return delay_ms

    def _observe_engine(self) -> None:
        """Report round and step changes of the engine (metrics, and a span per round)."""
        s = self.engine.state
        now = time.perf_counter()
        key = (s.height, s.round)
        if key != self._seen_round:
            if self._round_span is not None:
                self._round_span.end()
                self._round_span = None
            self._seen_round = key
            self._round_started = now
            if self.metrics is not None and s.height > 0:
                self.metrics.round_started(s.height, s.round)
            if self.tracing is not None and s.height > 0:
                self._round_span = self.tracing.tracer.start_span(
                    "consensus.round", attributes={"height": s.height, "round": s.round}
                )
        if s.step != self._seen_step:
            prev, self._seen_step = self._seen_step, s.step
            if self.metrics is not None and prev is not None:
                self.metrics.step_finished(prev.name, now - self._step_started)
                # Leaving PREVOTE/PRECOMMIT means 2f+1 of that vote (or a timeout) arrived.
                if prev.name in ("PREVOTE", "PRECOMMIT"):
                    self.metrics.quorum_reached(prev.name, now - self._round_started)
            if self._round_span is not None:
                self._round_span.add_event("step", {"step": s.step.name})
            self._step_started = now

    def _trace_txs(self, block: Block, name: str, **attributes: Any) -> None:
        """Add a span named *name* to the trace of each traced transaction of *block*."""
        if self.tracing is None or not self._tx_traces:
            return
        attrs = {"height": block.header.height, "block": block.hash.hex(), **attributes}
        for tx in block.txs:
            carrier = self._tx_traces.get(tx.txid)
            if carrier is not None:
                with self.tracing.span(name, carrier=carrier, attributes=attrs):
                    pass

    def _trace_commit(self, block: Block) -> None:
        """Close the trace of every traced transaction of *block* with a span on this node."""
        if self.tracing is None:
            return
        h = block.header.height
        for tx in block.txs:
            carrier = self._tx_traces.pop(tx.txid, None)
            if carrier is not None:
                with self.tracing.span(
                    "tx.final",
                    carrier=carrier,
                    attributes={"height": h, "block": block.hash.hex(), "txid": tx.txid.hex()},
                ):
                    pass

    def _observe_commit(self, block: Block, seconds: float) -> None:
        self._trace_commit(block)
        m = self.metrics
        if m is None:
            return
        m.block_committed(block.header.height, len(block.txs) - 1, seconds)
        now = time.perf_counter()
        pop = self._submitted_at.pop
        m.txs_final([now - t0 for tx in block.txs if (t0 := pop(tx.txid, None)) is not None])
        if block.last_commit is not None and block.header.height > 1:
            signers = {cs.validator_address for cs in block.last_commit.signatures}
            for v in self.chain.validators(block.header.height - 1).validators:
                if v.address not in signers:
                    m.missed_block(v.address.hex())
        m.mempool_changed(len(self.mempool), self.mempool.size_bytes)
        nxt = self.chain.validators(block.header.height + 1)
        if nxt is not self._metrics_set:
            self._metrics_set = nxt
            m.set_validators(
                [v.address.hex() for v in nxt.validators],
                {v.address.hex(): v.power for v in nxt.validators},
            )
        if self.network is not None:
            peers = self.network.peers()
            for direction in ("inbound", "outbound"):
                m.peer_count(direction, sum(1 for p in peers if p.direction == direction))

    def _after_commit(self, block: Block, commit: Commit) -> None:
        height = block.header.height
        self._candidates.clear()
        self._received = {h: v for h, v in self._received.items() if v[0] > height}
        self._block_traces = {h: c for h, c in self._block_traces.items() if h in self._received}
        self._pending_validation.clear()
        done = {evidence_element_hash(e) for e in block.evidence}
        oldest = height - EVIDENCE_MAX_AGE + 1
        self._evidence = [
            e
            for e in self._evidence
            if evidence_element_hash(e) not in done and e.vote_a.height >= oldest
        ]
        # Remembered while it could still be offered again (a late copy from a peer
        # or from our own vote set): a block carrying it twice is invalid.
        for key in done:
            self._committed_evidence[key] = height
        while self._committed_evidence and (
            next(iter(self._committed_evidence.values())) < oldest
            or len(self._committed_evidence) > _MAX_COMMITTED_EVIDENCE
        ):
            self._committed_evidence.popitem(last=False)
        self._last_commit = commit
        self._last_proposal = None
        self._proposal_msg = None
        self._own_votes = []
        self.blocks_committed += 1

    def _broadcast(self, msg: consensus_pb2.ConsensusMessage) -> int:
        """Send a consensus message to every peer, counting its bytes per message type."""
        n = int(self.network.broadcast_consensus(msg))
        if self.metrics is not None and n:
            self.metrics.message_bytes("out", str(msg.WhichOneof("kind")), msg.ByteSize() * n)
        return n

    def _send_to(self, peer_id: bytes, msg: consensus_pb2.ConsensusMessage) -> bool:
        ok = bool(self.network.send_consensus(peer_id, msg))
        if self.metrics is not None and ok:
            self.metrics.message_bytes("out", str(msg.WhichOneof("kind")), msg.ByteSize())
        return ok

    def _has_evidence(self, evidence: DuplicateVoteEvidence) -> bool:
        """Tell whether *evidence* is pending here or was committed in a recent block."""
        key = evidence_element_hash(evidence)
        if key in self._committed_evidence:
            return True
        return any(evidence_element_hash(e) == key for e in self._evidence)

    def _equivocate(self, vote: Vote) -> None:
        """Test-only byzantine mode: also sign and send a conflicting vote (no guard)."""
        assert self.byzantine_key is not None
        twin = Vote(
            vote.type,
            vote.height,
            vote.round,
            b"" if vote.block_hash else b"\x66" * 32,
            vote.validator_address,
        )
        sig = self.byzantine_key.sign(vote_sign_digest(self.params.chain_id, twin))
        twin = Vote(
            twin.type, twin.height, twin.round, twin.block_hash, twin.validator_address, sig
        )
        self._broadcast(consensus_pb2.ConsensusMessage(vote=vote_to_pb(twin)))

    # --- blocks from peers ----------------------------------------------------------

    def _validate_block(
        self, block: Block, block_bytes: bytes, signatures_checked: bool = False
    ) -> ProposedBlock:
        """Fully validate a block received from a peer."""
        result = self.chain.validate(block, now_ms(), signatures_checked=signatures_checked)
        return ProposedBlock(block, block_bytes, result)

    async def _check_block_signatures(self, block: Block) -> bool:
        """Verify the signatures of *block*'s transactions on the verify threads, in parallel.

        A transaction already in our mempool had its signatures verified at
        admission (same txid, and the pool keys its entries by the exact
        signatures: see Mempool), so only the others are checked here; the
        block is then validated on the storage thread without re-verifying.
        """
        todo = [tx for tx in block.txs[1:] if not self.mempool.has_verified(tx)]
        chain_id = self.params.chain_id
        ok = await self._on_verify_threads(
            todo, lambda tx: signatures_valid(tx, chain_id), min_chunk=64
        )
        return all(ok)

    async def _validate_received(self, height: int, block_hash: bytes) -> None:
        if block_hash in self._candidates:
            self._feed(BlockValidated(block_hash, True))
            return
        received = self._received.get(block_hash)
        if received is None or height != self.chain.height + 1:
            self._pending_validation.add(block_hash)  # answered when the block arrives
            return
        try:
            carrier = self._block_traces.pop(block_hash, None)
            if self.tracing is not None and carrier is not None:
                span = self.tracing.span(
                    "block.validate", carrier=carrier, attributes={"height": height}
                )
            else:
                span = self._span("block.validate", height=height)
            with span:
                proposed = await self._validate_checked(received)
        except TimecoinError as exc:
            log.warning("proposed block %s is invalid: %s", block_hash.hex()[:16], exc)
            self._feed(BlockValidated(block_hash, False))
            return
        self._trace_txs(proposed.block, "tx.validate")
        self._candidates[block_hash] = proposed
        self._feed(BlockValidated(block_hash, True))

    async def _validate_checked(self, received: tuple[int, Block, bytes]) -> ProposedBlock:
        if not await self._check_block_signatures(received[1]):
            raise BadSignature("a transaction of the block has a bad signature")
        return await self.in_db(
            self._validate_block, received[1], received[2], True, priority=URGENT
        )

    def _span(self, name: str, **attributes: Any) -> Any:
        """Return a tracing span for the node's own work, or a no-op when tracing is off."""
        if self.tracing is None:
            return contextlib.nullcontext()
        return self.tracing.span(name, attributes=attributes)

    def _decode_proposed(self, msg: Any) -> tuple[Block, bytes]:
        # Transactions already pending here are reused, not decoded again.
        block = decode_block(msg, self.params.network, known=self.mempool.get)
        return block, msg.SerializeToString()

    def _send_proposal(self, proposal: Proposal, peer_id: bytes | None = None) -> None:
        if self.network is None or (peer_id is None and not self.network.peers()):
            return  # nobody to send it to (a one-validator devnet): the message is not built
        cached = self._proposal_msg
        if cached is None or cached[0] != proposal:
            cand = self._candidates.get(proposal.block_hash)
            if cand is None:
                return
            # Built once per proposal: converting a full block is the costly part.
            # The block is parsed straight into the message (assigning a parsed
            # block would copy every transaction again).
            msg = consensus_pb2.ConsensusMessage()
            msg.proposal.proposal.CopyFrom(proposal_to_pb(proposal))
            msg.proposal.block.MergeFromString(cand.block_bytes)
            with self._span("block.proposal", height=proposal.height, round=proposal.round):
                carrier = current_carrier()
            if carrier:
                # Validators continue this trace when they validate the block.
                msg.trace.CopyFrom(_trace_pb(carrier))
            if self._tx_traces:
                # The block may reach a validator before a transaction's gossip does.
                add = msg.proposal.tx_traces.add
                for tx in cand.block.txs:
                    c = self._tx_traces.get(tx.txid)
                    if c is not None:
                        add(txid=tx.txid, trace=_trace_pb(c))
            cached = self._proposal_msg = (proposal, msg)
        if peer_id is None:
            self._broadcast(cached[1])
        else:
            self._send_to(peer_id, cached[1])

    # --- sync -------------------------------------------------------------------------

    def _behind(self) -> bool:
        if self.network is None:
            return False
        target: int = max(self.sync_target, self.network.best_height())
        return target > self.chain.height

    def _apply_synced(self, block_bytes: bytes, commit_bytes: bytes) -> tuple[Block, Commit]:
        """Verify a fetched block's commit against our own validator set, then apply it.

        The serial form of what ``_sync`` does in steps (signatures checked here).
        """
        block = decode_block(block_bytes, self.params.network)
        commit = self._synced_commit(block, commit_bytes)
        self._commit_synced(block, block_bytes, commit, signatures_checked=False)
        return block, commit

    def _synced_commit(self, block: Block, commit_bytes: bytes) -> Commit:
        """Decode and verify the commit of a fetched block: >2/3 of *our* set signed it."""
        chain = self.chain
        height = chain.height + 1
        commit = decode_commit(commit_bytes)
        if block.header.height != height:
            raise BadHeight(f"peer sent block {block.header.height}, expected {height}")
        verify_commit(
            self.params.chain_id,
            commit,
            chain.validators(height),
            height=height,
            block_hash=block.hash,
        )
        return commit

    def _commit_synced(
        self, block: Block, block_bytes: bytes, commit: Commit, *, signatures_checked: bool
    ) -> None:
        chain = self.chain
        result = chain.validate(block, now_ms() + 3_600_000, signatures_checked=signatures_checked)
        chain.commit(block, block_bytes, result, commit)
        self.mempool.remove_committed(block.txs, chain.store, chain.height, now_ms())

    async def _fetch_synced(self, block_bytes: bytes, commit_bytes: bytes) -> tuple[Block, Commit]:
        """Check and apply one fetched block, cheapest check first.

        Decoding runs on a verify thread (reusing pending transactions), the
        commit is verified against our own set before any transaction signature
        is (a forged block costs a few signature checks, not thousands), the
        signatures of transactions not already pending are verified in
        parallel, and only then does the storage thread validate and apply it.
        """
        network, known = self.params.network, self.mempool.get
        block = await asyncio.get_running_loop().run_in_executor(
            self._verify, lambda: decode_block(block_bytes, network, known=known)
        )
        commit = await self.in_db(self._synced_commit, block, commit_bytes, priority=URGENT)
        if not await self._check_block_signatures(block):
            raise BadSignature("a transaction of the block has a bad signature")
        await self.in_db(
            lambda: self._commit_synced(block, block_bytes, commit, signatures_checked=True),
            priority=URGENT,
        )
        return block, commit

    async def _sync(self) -> None:
        """Fetch and apply blocks up to the best height peers report, then rejoin consensus."""
        net = self.network
        start_height = self.chain.height
        target = max(self.sync_target, net.best_height())
        started = time.monotonic()
        event(log, "Sync started", height=start_height, target=target)
        applied = 0
        try:
            async for fb in net.fetch_blocks(start_height + 1, target, wait_for_peers_s=10):
                try:
                    block, commit = await self._fetch_synced(fb.block, fb.commit)
                except TimecoinError as exc:
                    net.report_misbehaviour(fb.peer_id, exc.reason, f"sync: {exc}")
                    log.warning("block %d from sync rejected: %s", fb.height, exc)
                    break
                applied += 1
                self._after_commit(block, commit)
                self._publish(BlockInfo(block, commit, fb.block))
                if self.metrics is not None:
                    self.metrics.sync_progress(fb.height, target)
                self._observe_commit(block, 0.0)
                if applied % 100 == 0 or fb.height == target:
                    elapsed = max(time.monotonic() - started, 1e-6)
                    rate = applied / elapsed
                    event(
                        log,
                        "Sync progress",
                        height=fb.height,
                        target=target,
                        blocks_per_s=round(rate, 1),
                        eta_s=round((target - fb.height) / rate, 1) if rate else None,
                    )
        except TimecoinError as exc:
            log.warning("sync stopped at %d: %s", self.chain.height, exc)
            await asyncio.sleep(1.0)
        if self.sync_target <= self.chain.height:
            self.sync_target = 0
        height = self.chain.height + 1
        if applied:
            event(log, "Sync finished", height=self.chain.height, blocks=applied)
        # Rejoin consensus at the new height at once (no commit wait: we are late).
        self._internal.clear()
        self._round0_at = time.monotonic()
        self._feed(
            NewHeight(
                height,
                self.chain.validators(height),
                self.chain.priorities.priorities,
                start_delay_ms=0,
            )
        )

    # --- P2PHandler: what the network delivers ----------------------------------------

    async def on_consensus(self, peer: Any, msg: consensus_pb2.ConsensusMessage) -> None:
        """Route one consensus message from *peer* to the engine (decoded and bounded)."""
        kind = msg.WhichOneof("kind")
        pid = peer.node_id
        if self.metrics is not None:
            self.metrics.message_bytes("in", str(kind), msg.ByteSize())
        if kind == "vote":
            vote = vote_from_pb(msg.vote)
            self._note_height(pid, vote.height - 1)
            self.feed_from_peer(VoteReceived(vote), pid)
        elif kind == "proposal":
            proposal = proposal_from_pb(msg.proposal.proposal)
            self._note_height(pid, proposal.height - 1)
            if not (self.chain.height < proposal.height <= self.chain.height + 2):
                return  # old or far ahead: nothing to keep
            known = proposal.block_hash in self._received or proposal.block_hash in self._candidates
            if not known:
                per_height = sum(1 for v in self._received.values() if v[0] == proposal.height)
                if per_height >= _MAX_BLOCKS_PER_HEIGHT:
                    return
                # Decoding a full block is heavy: do it off the event loop, once per block.
                block, raw = await asyncio.get_running_loop().run_in_executor(
                    self._verify, self._decode_proposed, msg.proposal.block
                )
                if block.hash != proposal.block_hash or block.header.height != proposal.height:
                    raise BadHeader("proposal names another block than the one it carries")
                self._received[block.hash] = (proposal.height, block, raw)
                if msg.HasField("trace") and msg.trace.traceparent:
                    self._block_traces[block.hash] = {
                        "traceparent": msg.trace.traceparent,
                        "tracestate": msg.trace.tracestate,
                    }
                if self.tracing is not None and msg.proposal.tx_traces:
                    self._adopt_tx_traces(block, msg.proposal.tx_traces)
            self.feed_from_peer(ProposalReceived(proposal), pid)
            if proposal.block_hash in self._pending_validation:
                self._pending_validation.discard(proposal.block_hash)
                self.feed_from_peer(_Revalidate(proposal.height, proposal.block_hash), pid)
        elif kind == "round_step":
            self._note_height(pid, msg.round_step.height - 1)
        elif kind == "vote_set_request":
            self._answer_vote_request(pid, msg.vote_set_request.height, msg.vote_set_request.round)
        elif kind == "evidence":
            await self.on_evidence(peer, msg.evidence)

    def _adopt_tx_traces(self, block: Block, traces: Sequence[Any]) -> None:
        """Take the trace contexts a proposal carries for transactions of its *block*.

        Bounded before it is trusted: at most one entry per transaction of the
        block, only for its own txids, W3C-sized strings (else skipped), and
        the table of traced transactions keeps its bound. A context this node
        already has (from the transaction's gossip or its API) is kept.
        """
        txids = {tx.txid for tx in block.txs}
        table = self._tx_traces
        for t in traces[: len(block.txs)]:
            parent, state = t.trace.traceparent, t.trace.tracestate
            if t.txid not in txids or t.txid in table:
                continue
            if not parent or len(parent) > _MAX_TRACEPARENT or len(state) > _MAX_TRACESTATE:
                continue
            table[t.txid] = {"traceparent": parent, "tracestate": state}
        while len(table) > _MAX_TRACED_TXS:
            table.popitem(last=False)

    def _note_height(self, peer_id: bytes, committed: int) -> None:
        if self.network is not None and committed > 0:
            self.network.update_peer_height(peer_id, committed)

    def _answer_vote_request(self, peer_id: bytes, height: int, round_: int) -> None:
        if self.network is None:
            return
        last = self._last_commit
        if last is not None and height == last.height == self.engine.state.height - 1:
            # The peer is still deciding the height we just committed: send the
            # precommits of its certificate (CometBFT's catch-up commit), so it can
            # decide at once instead of falling back to block sync.
            for cs in last.signatures[:_MAX_VOTES_PER_ANSWER]:
                vote = Vote(
                    VoteType.PRECOMMIT,
                    last.height,
                    last.round,
                    last.block_hash,
                    cs.validator_address,
                    cs.signature,
                )
                self._send_to(peer_id, consensus_pb2.ConsensusMessage(vote=vote_to_pb(vote)))
            return
        if height != self.engine.state.height:
            return
        votes = self.engine.votes
        for vt in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            for r in {round_, self.engine.state.round}:
                for v in votes.votes(vt, r)[:_MAX_VOTES_PER_ANSWER]:
                    self._send_to(peer_id, consensus_pb2.ConsensusMessage(vote=vote_to_pb(v)))

    async def on_transactions(self, peer: Any, txs: list[Any]) -> None:
        """Admit gossiped transactions and pass the accepted ones on."""
        if self.metrics is not None:
            self.metrics.message_bytes("in", "transactions", sum(m.ByteSize() for m in txs))
        decoded = []
        has_copy = self.mempool.has_copy
        for m in txs:
            if not has_copy(hashlib.sha256(m.body_bytes).digest(), m.signatures):
                decoded.append(decode_transaction(m, self.params.network))
        if decoded:
            await self.submit(decoded, from_peer=peer.node_id)

    async def on_traced_transactions(self, peer: Any, txs: list[Any], trace: Any) -> None:
        """Admit gossiped transactions, continuing the sender's trace when it sent one."""
        if self.tracing is None or trace is None or not trace.traceparent:
            await self.on_transactions(peer, txs)
            return
        carrier = {"traceparent": trace.traceparent, "tracestate": trace.tracestate}
        with self.tracing.span("tx.gossip", carrier=carrier, attributes={"txs": len(txs)}):
            await self.on_transactions(peer, txs)

    async def on_evidence(self, peer: Any, ev: Any) -> None:
        """Keep verified evidence for the next block we propose."""
        evidence = evidence_from_pb(ev)
        if self._has_evidence(evidence) or len(self._evidence) >= self.params.max_evidence:
            return
        if evidence.vote_a.height < self.chain.height - EVIDENCE_MAX_AGE + 1:
            return  # too old to be included anywhere
        h = evidence.vote_a.height
        vs = await self.in_db(self.chain.validators, h)
        verify_duplicate_vote_evidence(self.params.chain_id, evidence, vs)
        # Checked again: the same evidence may have arrived from another peer (or
        # from our own vote set) while this one waited for the storage thread.
        if self._has_evidence(evidence) or len(self._evidence) >= self.params.max_evidence:
            return
        self._evidence.append(evidence)
        if self.network is not None:
            self.network.broadcast_evidence(ev, exclude=[peer.node_id])

    def local_status(self) -> tuple[int, bytes]:
        """Return (committed height, tip hash) for the handshake and pings."""
        return self.chain.height, self.chain.tip_hash

    def _blocks_from(self, from_height: int, count: int) -> list[tuple[bytes, bytes]]:
        out = []
        store = self.chain.store
        for h in range(max(1, from_height), min(self.chain.height, from_height + count - 1) + 1):
            raw = store.get_block_bytes(h)
            commit = store.get_seen_commit(h)
            if raw is None or commit is None:
                break
            out.append((raw, commit))
        return out

    async def get_blocks(self, from_height: int, count: int) -> list[tuple[bytes, bytes]]:
        """Serve stored blocks with the commits that finalized them."""
        return await self.in_db(self._blocks_from, from_height, count)

    async def on_peer_connected(self, peer: Any) -> None:
        """Tell a new peer where we are, so it can send what we lack (or sync from us)."""
        self._send_round_step(peer.node_id)

    def _send_round_step(self, peer_id: bytes | None = None) -> None:
        if self.network is None:
            return
        s = self.engine.state
        msg = consensus_pb2.ConsensusMessage(
            round_step=consensus_pb2.RoundStep(height=s.height, round=s.round, step=int(s.step))
        )
        if peer_id is None:
            self._broadcast(msg)
        else:
            self._send_to(peer_id, msg)

    async def _gossip_loop(self) -> None:
        """Re-send what peers may have missed (CometBFT's gossip routines, simplified).

        Messages can be lost (a peer connects late, a stream breaks); the paper
        assumes every honest message eventually arrives, so our own proposal
        and votes of the current height are re-sent every few hundred ms with
        our round step, and a node that lags asks for the votes it lacks.
        """
        interval = max(0.2, min(2.0, self.params.block_interval_ms / 2000))
        ticks = 0
        while True:
            await asyncio.sleep(interval)
            if self.network is None or not self.network.peers():
                continue
            self._send_round_step()
            ticks += 1
            if self._last_proposal is not None and ticks % _PROPOSAL_RESEND_TICKS == 0:
                self._send_proposal(self._last_proposal)
            for v in self._own_votes[-_MAX_OWN_VOTES:]:
                self._broadcast(consensus_pb2.ConsensusMessage(vote=vote_to_pb(v)))
            s = self.engine.state
            if s.height > 0:
                self._broadcast(
                    consensus_pb2.ConsensusMessage(
                        vote_set_request=consensus_pb2.VoteSetRequest(
                            height=s.height, round=s.round
                        )
                    )
                )
            if self._behind():
                self._wake.set()

    def _commit(self, proposed: ProposedBlock, commit: Commit) -> None:
        self.chain.commit(proposed.block, proposed.block_bytes, proposed.result, commit)
        self.mempool.remove_committed(
            proposed.block.txs, self.chain.store, self.chain.height, now_ms()
        )

    # --- notifications ------------------------------------------------------------

    def subscribe_blocks(self, max_queue: int = 64) -> BlockSubscription:
        """Return a new subscription to finalized blocks (bounded; dropped when it falls behind)."""
        if len(self.broadcaster) >= self._max_subs:
            raise RateLimited("too many block subscribers")
        return self.broadcaster.subscribe(max_queue)

    def _publish(self, info: BlockInfo) -> None:
        self.broadcaster.publish(info)

    # --- transaction admission ----------------------------------------------------

    async def _prechecked(self, txs: Sequence[Transaction]) -> list[TimecoinError | None]:
        """Run ``_precheck`` on every tx: signatures in the worker processes if the node has them.

        With processes, the cheap checks run here on the loop (a few
        microseconds per tx, like decoding), the signatures of the survivors in
        the workers, and the rare failure again through ``check_signatures``
        for its exact reason.
        """
        procs = self._workers
        if procs is None:
            return await self._on_verify_threads(txs, self._precheck)
        chain_id = self.params.chain_id
        pre: list[TimecoinError | None] = []
        todo: list[int] = []
        items = []
        for i, tx in enumerate(txs):
            if i and not i % LOOP_SLICE:
                await asyncio.sleep(0)  # see LOOP_SLICE
            err = self._cheap_checks(tx)
            pre.append(err)
            if err is None:
                todo.append(i)
                items.append(item_of(tx))
        flags = await procs.verify(chain_id, items)
        if flags is None:  # the pool broke: the threads do it all
            return await self._on_verify_threads(txs, self._precheck)
        failed = [i for i, ok in zip(todo, flags, strict=True) if not ok]
        # Their ECDSA runs again for the exact reason: on the threads, not the loop.
        reasons = await self._on_verify_threads([txs[i] for i in failed], self._signature_error)
        for i, err in zip(failed, reasons, strict=True):
            pre[i] = err
        return pre

    def _cheap_checks(self, tx: Transaction) -> TimecoinError | None:
        """Run the pool's precheck and the stateless checks: everything but signatures."""
        try:
            self.mempool.precheck(tx)
            validate_transaction_stateless(tx, self.params)
        except TimecoinError as exc:
            return exc
        return None

    def _signature_error(self, tx: Transaction) -> TimecoinError | None:
        try:
            check_signatures(tx, self.params.chain_id)
        except TimecoinError as exc:
            return exc
        return None

    def _precheck(self, tx: Transaction) -> TimecoinError | None:
        """Cheap pool checks, stateless checks and signatures, on a verify thread.

        The pool's own precheck (already known, conflicting, oversized) runs
        first so a resubmitted or conflicting transaction costs no ECDSA work.
        """
        return self._cheap_checks(tx) or self._signature_error(tx)

    def _admit(
        self, txs: Sequence[Transaction], pre: Sequence[TimecoinError | None]
    ) -> list[TimecoinError | None]:
        out: list[TimecoinError | None] = []
        height = self.chain.height + 1
        registry = self.chain.validators(height + 1)
        now = now_ms()
        for tx, err in zip(txs, pre, strict=True):
            if err is None and tx.body.masternode is not None:
                try:
                    # The registry a block at `height` changes is the set for height + 1.
                    validator_updates([tx], registry, strict=True)
                except TimecoinError as exc:
                    err = exc
            if err is not None:
                self.mempool.reject(tx, err, now)  # counted; remembered for status and dedup
                out.append(err)
            else:
                try:
                    self.mempool.add(tx, self.chain.store, height, now, sig_ok=True)
                    out.append(None)
                except TimecoinError as exc:  # recorded by the pool itself
                    out.append(exc)
            if self.metrics is not None and out[-1] is not None:
                self.metrics.tx_rejected(out[-1].reason.name)
        return out

    async def submit(
        self, txs: Sequence[Transaction], *, from_peer: bytes | None = None
    ) -> list[TimecoinError | None]:
        """Admit *txs* to the mempool; one result per tx (None = accepted), in order.

        Signatures are checked on the verify threads in chunks, in parallel,
        before the single db thread runs the stateful checks.
        """
        if not txs:
            return []
        if self.tracing is None:
            return await self._submit(txs, from_peer)
        with self.tracing.span("tx.admit", attributes={"txs": len(txs)}):
            return await self._submit(txs, from_peer)

    async def _submit(
        self, txs: Sequence[Transaction], from_peer: bytes | None
    ) -> list[TimecoinError | None]:
        pre = await self._prechecked(txs)
        out = await self.in_db(self._admit, txs, pre, priority=BACKGROUND)
        if self.metrics is not None and from_peer is None:
            arrived = time.perf_counter()
            for t, err in zip(txs, out, strict=True):
                if err is None:
                    self._submitted_at[t.txid] = arrived
            while len(self._submitted_at) > _MAX_TRACED_TXS:
                self._submitted_at.popitem(last=False)
        trace = None
        if self.tracing is not None:
            carrier = current_carrier()
            if carrier:
                trace = _trace_pb(carrier)
                for t, err in zip(txs, out, strict=True):
                    if err is None:
                        self._tx_traces[t.txid] = carrier
                while len(self._tx_traces) > _MAX_TRACED_TXS:
                    self._tx_traces.popitem(last=False)
        if self.network is not None and self.network.peers():
            # Relay what we accepted to every peer but the one it came from.
            accepted = [
                transaction_to_pb(t) for t, err in zip(txs, out, strict=True) if err is None
            ]
            if accepted and trace is None:
                self._queue_relay(accepted, from_peer)
            elif accepted:
                self._relay(accepted, from_peer, trace)  # keeps this batch's trace context
        return out

    def _queue_relay(self, txs: list[Any], from_peer: bytes | None) -> None:
        """Relay *txs* within ``_RELAY_DELAY_S``, together with others accepted meanwhile.

        Clients and peers often send small batches; one message per batch per
        peer costs each receiver a frame, a decode pass and a hop to the
        verify and storage threads. Gathering them for 20 ms turns tens of
        small messages into a few large ones at a cost of 20 ms of latency.
        """
        pending = self._relay_pending.setdefault(from_peer, [])
        pending.extend(txs)
        if self._relay_timer is None:
            self._relay_timer = asyncio.get_running_loop().call_later(
                _RELAY_DELAY_S, self._flush_relay
            )

    def _flush_relay(self) -> None:
        self._relay_timer = None
        pending, self._relay_pending = self._relay_pending, {}
        for from_peer, txs in pending.items():
            self._relay(txs, from_peer, None)

    def _relay(self, txs: list[Any], from_peer: bytes | None, trace: Any) -> None:
        if self.network is None:
            return
        exclude = [from_peer] if from_peer is not None else None
        for i in range(0, len(txs), _RELAY_BATCH):
            part = txs[i : i + _RELAY_BATCH]
            sent = self.network.broadcast_transactions(part, exclude=exclude, trace=trace)
            if self.metrics is not None and sent:
                size = sum(m.ByteSize() for m in part)
                self.metrics.message_bytes("out", "transactions", size * sent)
