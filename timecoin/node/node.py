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
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from timecoin.api.backend import BlockBroadcaster, BlockInfo, BlockSubscription
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
    ProposeValue,
    RequestValidation,
    RequestValue,
    ScheduleTimeout,
    TimeoutFired,
)
from timecoin.core.errors import (
    AlreadyKnown,
    InvalidVote,
    NotFound,
    RateLimited,
    TimecoinError,
)
from timecoin.core.tx import check_signatures, validate_transaction_stateless
from timecoin.core.types import Commit, DuplicateVoteEvidence, Transaction
from timecoin.core.validators import validator_updates
from timecoin.node.chainstate import ChainState, ProposedBlock
from timecoin.node.logs import event

log = logging.getLogger("timed.node")
T = TypeVar("T")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Waiters:
    by_txid: dict[bytes, list[asyncio.Future[int]]] = field(default_factory=dict)


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
        max_subscribers: int = 256,
    ) -> None:
        self.chain = chain
        self.params = chain.params
        self.mempool = mempool
        self.engine = Engine(engine_config, signer)
        self.address = engine_config.address
        self._db = ThreadPoolExecutor(1, thread_name_prefix="timed-db")
        self._consensus = ThreadPoolExecutor(1, thread_name_prefix="timed-consensus")
        self._verify = ThreadPoolExecutor(
            verify_workers or max(2, os.cpu_count() or 2), thread_name_prefix="timed-verify"
        )
        self._events: asyncio.Queue[Event] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._candidates: dict[bytes, ProposedBlock] = {}
        self._last_commit: Commit | None = None
        self._evidence: list[DuplicateVoteEvidence] = []
        self.broadcaster = BlockBroadcaster()
        self._max_subs = max_subscribers
        self._waiters = _Waiters()
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.blocks_committed = 0

    # --- executors ------------------------------------------------------------

    async def in_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run *fn* on the single storage thread (the one writer of chain and mempool)."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _in_consensus(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._consensus, fn, *args)

    # --- lifecycle ------------------------------------------------------------

    async def run(
        self, servers: Sequence[Any] = (), on_ready: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """Run until ``stop()``; then shut down in order and return."""
        self._events = asyncio.Queue()
        self._last_commit = await self.in_db(self.chain.seen_commit, self.chain.height)
        for s in servers:
            await s.start()
        try:
            async with asyncio.TaskGroup() as tg:
                consensus = tg.create_task(self._consensus_loop(), name="consensus")
                self.ready.set()
                if on_ready is not None:
                    await on_ready()
                await self._stopping.wait()
                consensus.cancel()
        finally:
            for t in self._timers:
                t.cancel()
            for s in servers:
                with contextlib.suppress(Exception):
                    await s.stop(2.0)
            self.broadcaster.close_all()
            # Waits for an in-flight block write; nothing new is queued after cancel.
            self._db.shutdown(wait=True)
            self._consensus.shutdown(wait=True)
            self._verify.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        """Ask ``run()`` to shut down."""
        self._stopping.set()

    # --- consensus driver ---------------------------------------------------------

    def _feed(self, ev: Event) -> None:
        if self._events is not None:
            self._events.put_nowait(ev)

    async def _consensus_loop(self) -> None:
        chain = self.chain
        height = chain.height + 1
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
        assert self._events is not None
        while True:
            ev = await self._events.get()
            try:
                actions = await self._in_consensus(self.engine.step, ev)
            except InvalidVote as exc:
                log.debug("consensus input rejected: %s", exc)
                continue
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
                proposed = await self.in_db(self._build, height)
                if proposed is not None:
                    self._candidates[proposed.block.hash] = proposed
                    self._feed(ProposeValue(height, round_, proposed.block.hash))
            case RequestValidation(_, block_hash):
                # Single-node: the only blocks are our own, already validated when built.
                self._feed(BlockValidated(block_hash, block_hash in self._candidates))
            case Decide(height, _, block_hash, commit):
                await self._decide(height, block_hash, commit)
            case EmitEvidence(evidence):
                if len(self._evidence) < self.params.max_evidence:
                    self._evidence.append(evidence)
            case BroadcastProposal() | BroadcastVote():
                pass  # no peers yet: the engine already counts its own messages

    def _build(self, height: int) -> ProposedBlock | None:
        if height != self.chain.height + 1 or self.address is None:
            return None
        candidates = self.mempool.select_for_block(
            self.params.max_block_bytes, self.params.max_block_txs - 1
        )
        try:
            return self.chain.build_block(
                self.address, now_ms(), self._last_commit, candidates, tuple(self._evidence)
            )
        except TimecoinError as exc:
            # Never stall the chain on a bad candidate: propose an empty block instead
            # and say why, so the operator can see it.
            log.error(
                "block %d with %d candidates failed (%s); proposing it empty",
                height,
                len(candidates),
                exc,
            )
            return self.chain.build_block(self.address, now_ms(), self._last_commit, [], ())

    async def _decide(self, height: int, block_hash: bytes, commit: Commit) -> None:
        proposed = self._candidates.get(block_hash)
        if proposed is None:
            log.error("decided block %s is unknown to this node", block_hash.hex())
            return
        started = time.perf_counter()
        await self.in_db(self._commit, proposed, commit)
        self._candidates.clear()
        self._evidence = [e for e in self._evidence if e not in proposed.block.evidence]
        self._last_commit = commit
        self.blocks_committed += 1
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
        self._publish(BlockInfo(block, commit))
        nh = height + 1
        self._feed(NewHeight(nh, self.chain.validators(nh), self.chain.priorities.priorities))

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
        height = info.block.header.height
        for tx in info.block.txs:
            for fut in self._waiters.by_txid.pop(tx.txid, ()):
                if not fut.done():
                    fut.set_result(height)

    async def wait_final(self, txid: bytes, timeout_s: float) -> int:
        """Return the height at which *txid* is final (already or within *timeout_s*)."""
        loc = await self.in_db(self.chain.store.get_tx_location, txid)
        if loc is not None:
            return int(loc.height)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.by_txid.setdefault(txid, []).append(fut)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        finally:
            lst = self._waiters.by_txid.get(txid)
            if lst is not None and fut in lst:
                lst.remove(fut)
                if not lst:
                    del self._waiters.by_txid[txid]

    # --- transaction admission ----------------------------------------------------

    def _precheck(self, tx: Transaction) -> TimecoinError | None:
        """Cheap pool checks, stateless checks and signatures, on a verify thread.

        The pool's own precheck (already known, conflicting, oversized) runs
        first so a resubmitted or conflicting transaction costs no ECDSA work.
        """
        try:
            self.mempool.precheck(tx, now_ms())
            validate_transaction_stateless(tx, self.params)
            check_signatures(tx, self.params.chain_id)
        except TimecoinError as exc:
            return exc
        return None

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
                if not isinstance(err, AlreadyKnown):
                    self.mempool.reject(tx, err, now)  # remembered for status and dedup
                out.append(err)
                continue
            try:
                self.mempool.add(tx, self.chain.store, height, now, sig_ok=True)
                out.append(None)
            except TimecoinError as exc:  # recorded by the pool itself
                out.append(exc)
        return out

    async def submit(self, txs: Sequence[Transaction]) -> list[TimecoinError | None]:
        """Admit *txs* to the mempool; one result per tx (None = accepted), in order.

        Signatures are checked on the verify threads in chunks, in parallel,
        before the single db thread runs the stateful checks.
        """
        if not txs:
            return []
        loop = asyncio.get_running_loop()
        chunk = max(1, len(txs) // (self._verify._max_workers or 1) + 1)  # noqa: SLF001
        parts = [txs[i : i + chunk] for i in range(0, len(txs), chunk)]
        results = await asyncio.gather(
            *(
                loop.run_in_executor(self._verify, lambda p=p: [self._precheck(t) for t in p])
                for p in parts
            )
        )
        pre = [r for part in results for r in part]
        return await self.in_db(self._admit, txs, pre)

    async def tx_in_chain(self, txid: bytes) -> int | None:
        loc = await self.in_db(self.chain.store.get_tx_location, txid)
        return None if loc is None else int(loc.height)


__all__ = ["AlreadyKnown", "Node", "NotFound", "now_ms"]
