"""Chain state: the finalized chain as the node holds it, over the chain store.

This is the bridge between the pure ledger (``timecoin.core``) and storage.
It is synchronous and is only ever called from the node's single storage
thread (``Node`` runs it through ``run_in_executor``), which makes it the one
writer of the store; readers (API) use store snapshots or the immutable
values published here.

What is kept beside the blocks (DESIGN.md, Consensus; core/validators.py):

* ``validators(h)`` for h = tip (signed the tip's commit), tip+1 and tip+2
  (the H+2 rule: block H fixes the set that decides H+2);
* the proposer priorities at the start of tip+1 (CometBFT rotation);
* the MuHash3072 state of the UTXO set.

They are written as metadata in the same atomic batch as the block, so a
crash leaves either the old tip with its sets or the new one with its sets.
Genesis is stored as a "block" at height 0 with no bytes, whose hash is the
genesis hash and whose UTXO changes create the allocations.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from timecoin.consensus.proposer import ProposerPriorities
from timecoin.core.block import (
    BlockContext,
    BlockDraft,
    BlockResult,
    BlockTemplate,
    draft_block,
    validate_block,
)
from timecoin.core.errors import BadHeight, ConfigError, StorageError
from timecoin.core.genesis import Genesis, genesis_changes, genesis_hash, genesis_validator_set
from timecoin.core.muhash import (
    MuHash3072,
    Num,
    apply_changes,
    apply_products,
    coin_elements,
    elements_product,
)
from timecoin.core.params import ChainParams
from timecoin.core.rules import LedgerRules
from timecoin.core.types import (
    Block,
    BlockHeader,
    Commit,
    DuplicateVoteEvidence,
    Transaction,
    TxBody,
    TxOut,
    ValidatorSet,
)
from timecoin.core.validators import next_validator_set, remove_validators
from timecoin.node import failpoints
from timecoin.storage.chainstore import BlockRecord, ChainStore
from timecoin.wire.codec import (
    decode_block,
    decode_commit,
    decode_validator_set,
    encode_commit,
    encode_tx_body,
    encode_validator_set,
    make_block_bytes,
    make_transaction,
)

log = logging.getLogger("timed.chain")

EVIDENCE_MAX_AGE = 100
"""Heights after which evidence of an equivocation is no longer accepted in a block."""

K_GENESIS = b"genesis"
K_SETS = b"sets"
"""Metadata: validator sets for tip, tip+1, tip+2 and the priorities for tip+1."""

Penalize = Callable[[DuplicateVoteEvidence, ValidatorSet, int], ValidatorSet]


@dataclass(frozen=True, slots=True)
class ChainTipInfo:
    """An immutable view of the tip, safe to read from any thread."""

    height: int
    block_hash: bytes
    time_ms: int
    utxo_commitment: bytes


@dataclass(frozen=True, slots=True)
class ProposedBlock:
    """A block this node built, with the result of validating it."""

    block: Block
    block_bytes: bytes
    result: BlockResult


@dataclass(frozen=True, slots=True)
class BlockInProgress:
    """A block drafted on the tip named here, waiting for its UTXO commitment.

    ``spent_elements`` and ``created_elements`` are the ``coin_element`` bytes of
    the coins it spends and creates: ``elements_product`` of each is what the
    commitment needs, computed by ``finish_block`` or handed to it.
    """

    draft: BlockDraft
    height: int
    tip_hash: bytes
    proposer: bytes
    now_ms: int
    last_commit: Commit | None
    evidence: tuple[DuplicateVoteEvidence, ...]
    spent_elements: bytes
    created_elements: bytes


def _encode_sets(sets: Sequence[ValidatorSet], priorities: Sequence[int]) -> bytes:
    parts = [struct.pack(">I", len(priorities)), struct.pack(f">{len(priorities)}q", *priorities)]
    for vs in sets:
        raw = encode_validator_set(vs)
        parts.append(struct.pack(">I", len(raw)) + raw)
    return b"".join(parts)


def _decode_sets(data: bytes) -> tuple[list[ValidatorSet], tuple[int, ...]]:
    (n,) = struct.unpack_from(">I", data, 0)
    off = 4
    prios = struct.unpack_from(f">{n}q", data, off)
    off += 8 * n
    sets = []
    while off < len(data):
        (ln,) = struct.unpack_from(">I", data, off)
        off += 4
        sets.append(decode_validator_set(data[off : off + ln]))
        off += ln
    return sets, tuple(prios)


class ChainState:
    """The node's finalized chain: validation, block building and atomic commits."""

    def __init__(
        self,
        params: ChainParams,
        genesis: Genesis,
        store: ChainStore,
        rules: LedgerRules,
        penalize: Penalize | None = None,
    ) -> None:
        if genesis.chain_id != params.chain_id:
            raise ConfigError(
                f"genesis chain_id {genesis.chain_id!r} differs from "
                f"the config's {params.chain_id!r}"
            )
        self.params = params
        self.genesis = genesis
        self.genesis_hash = genesis_hash(genesis)
        self.store = store
        self.rules = rules
        self._penalize = penalize
        self.height = 0
        self.tip_hash = self.genesis_hash
        self.tip_time_ms = genesis.genesis_time_ms
        self.muhash = MuHash3072()
        self._sets: dict[int, ValidatorSet] = {}
        self.priorities: ProposerPriorities
        self._load()

    # --- start-up ---------------------------------------------------------------

    def _load(self) -> None:
        tip = self.store.tip()
        if tip is None:
            self._write_genesis()
            tip = self.store.tip()
            assert tip is not None
        stored = self.store.get_meta(K_GENESIS)
        if stored != self.genesis_hash:
            raise ConfigError(
                "the store belongs to another genesis "
                f"({(stored or b'').hex()[:16]}... vs {self.genesis_hash.hex()[:16]}...)"
            )
        state = self.store.get_utxo_state()
        if state is None:
            raise StorageError("store has a tip but no UTXO commitment state")
        self.muhash = MuHash3072.deserialize(state)
        sets_raw = self.store.get_meta(K_SETS)
        if sets_raw is None:
            raise StorageError("store has a tip but no validator sets")
        sets, prios = _decode_sets(sets_raw)
        self.height = tip.height
        self.tip_hash = tip.block_hash
        self._sets = {tip.height + i: vs for i, vs in enumerate(sets)}
        self.priorities = ProposerPriorities(self._sets[tip.height + 1], prios)
        if tip.height > 0:
            raw = self.store.get_block_bytes(tip.height)
            assert raw is not None
            self.tip_time_ms = decode_block(raw, self.params.network).header.time_ms

    def _write_genesis(self) -> None:
        changes = genesis_changes(self.genesis)
        h = MuHash3072()
        apply_changes(h, changes)
        vs = genesis_validator_set(self.genesis)
        prios = ProposerPriorities.genesis(vs)
        self.store.commit_block(
            BlockRecord(
                height=0,
                block_hash=self.genesis_hash,
                block_bytes=b"",
                txids=(),
                changes=changes,
                utxo_state=h.serialize(),
                validator_set_bytes=encode_validator_set(vs),
                extra=(
                    (K_GENESIS, self.genesis_hash),
                    (K_SETS, _encode_sets([vs, vs, vs], prios.priorities)),
                ),
            )
        )
        log.info("Genesis written", extra={"fields": {"hash": self.genesis_hash.hex()[:16]}})

    # --- queries ----------------------------------------------------------------

    def validators(self, height: int) -> ValidatorSet:
        """Return the set that decides *height* (in memory for tip-1 to tip+2, else stored)."""
        vs = self._sets.get(height)
        if vs is not None:
            return vs
        raw = self.store.get_validator_set_bytes(height)
        if raw is None:
            raise BadHeight(f"no validator set known for height {height}")
        return decode_validator_set(raw)

    def tip_info(self) -> ChainTipInfo:
        return ChainTipInfo(self.height, self.tip_hash, self.tip_time_ms, self.muhash.digest())

    def proposer(self, round_: int) -> bytes:
        """Return the address of the proposer of *round_* at the next height."""
        return self.priorities.proposer_address(round_)

    def seen_commit(self, height: int) -> Commit | None:
        """Return the commit that finalized *height* as this node saw it."""
        raw = self.store.get_seen_commit(height)
        return None if raw is None else decode_commit(raw)

    # --- building and validating --------------------------------------------------

    def evidence_sets(self, evidence: Sequence[DuplicateVoteEvidence]) -> dict[int, ValidatorSet]:
        """Return the validator sets of the heights *evidence* names (evidence window only)."""
        out: dict[int, ValidatorSet] = {}
        for ev in evidence:
            h = ev.vote_a.height
            if self.height - EVIDENCE_MAX_AGE <= h <= self.height + 1 and h not in out and h > 0:
                out[h] = self.validators(h)
        return out

    def _context(
        self,
        now_ms: int,
        expected_proposer: bytes | None,
        evidence: Sequence[DuplicateVoteEvidence] = (),
    ) -> BlockContext:
        h = self.height + 1
        return BlockContext(
            params=self.params,
            prev_height=self.height,
            prev_hash=self.tip_hash,
            prev_time_ms=self.tip_time_ms,
            validators=self._sets[h],
            next_validators=self._sets[h + 1],
            last_validators=self._sets.get(self.height) if self.height > 0 else None,
            max_time_ms=now_ms + self.params.max_future_block_time_ms,
            expected_proposer=expected_proposer,
            evidence_validators=self.evidence_sets(evidence),
        )

    def build_block(
        self,
        proposer: bytes,
        now_ms: int,
        last_commit: Commit | None,
        candidates: Sequence[Transaction],
        evidence: Sequence[DuplicateVoteEvidence] = (),
        *,
        signatures_checked: bool = True,
    ) -> ProposedBlock:
        """Build the next block from *candidates* (best first), skipping any that no longer fit.

        *candidates* come from the mempool, whose admission verified their
        signatures. The result is validated like any received block before it
        is returned, so this node never proposes an invalid block. The same as
        ``draft_block`` then ``finish_block`` with the commitment computed here.
        """
        pending = self.draft_block(
            proposer,
            now_ms,
            last_commit,
            candidates,
            evidence,
            signatures_checked=signatures_checked,
        )
        return self.finish_block(pending)

    def draft_block(
        self,
        proposer: bytes,
        now_ms: int,
        last_commit: Commit | None,
        candidates: Sequence[Transaction],
        evidence: Sequence[DuplicateVoteEvidence] = (),
        *,
        signatures_checked: bool = True,
        admitted_fees: Sequence[int] | None = None,
    ) -> BlockInProgress:
        """Select the next block's transactions and build all of it but the UTXO commitment.

        Cheap next to the commitment: the node computes that in its worker
        processes while this thread admits transactions, then calls
        ``finish_block`` (``docs/architecture.md``). *admitted_fees*: see
        ``core.block.draft_block``.
        """
        height = self.height + 1
        proposer_v = self._sets[height].get(proposer)
        if proposer_v is None:
            raise BadHeight(f"{proposer.hex()} is not a validator at height {height}")
        draft = draft_block(
            candidates,
            self._context(now_ms, proposer, evidence),
            self.store,
            self.rules,
            proposer=proposer_v,
            last_commit=last_commit,
            evidence=evidence,
            make_coinbase=self._make_coinbase,
            signatures_checked=signatures_checked,
            admitted_fees=admitted_fees,
        )
        return BlockInProgress(
            draft=draft,
            height=height,
            tip_hash=self.tip_hash,
            proposer=proposer,
            now_ms=now_ms,
            last_commit=last_commit,
            evidence=tuple(evidence),
            spent_elements=coin_elements(draft.changes.spent),
            created_elements=coin_elements(draft.changes.created),
        )

    def finish_block(
        self, pending: BlockInProgress, products: Sequence[Num] | None = None
    ) -> ProposedBlock:
        """Finish *pending* into a validated block: commitment, header, bytes, validation.

        *products* are ``elements_product`` of its spent and created elements,
        in that order, if they were computed elsewhere; None computes them here. Raises
        BadHeight if the tip moved since the draft (the block is stale).
        """
        if pending.height != self.height + 1 or pending.tip_hash != self.tip_hash:
            raise BadHeight(f"block {pending.height} was drafted on a tip that is gone")
        if products is None:
            products = (
                elements_product(pending.spent_elements),
                elements_product(pending.created_elements),
            )
        after = self.muhash.copy()
        apply_products(after, *products)
        t = pending.draft.finish(after)
        params = self.params
        header = BlockHeader(
            version=params.block_version,
            chain_id=params.chain_id,
            height=pending.height,
            time_ms=max(pending.now_ms, self.tip_time_ms + 1),
            prev_block_hash=self.tip_hash,
            tx_root=t.tx_root,
            last_commit_hash=t.last_commit_hash,
            validators_hash=t.validators_hash,
            next_validators_hash=t.next_validators_hash,
            utxo_commitment=t.utxo_commitment,
            proposer_address=pending.proposer,
            evidence_hash=t.evidence_hash,
        )
        block, block_bytes = make_block_bytes(header, t.txs, pending.last_commit, pending.evidence)
        result = self.validate(
            block,
            pending.now_ms,
            expected_proposer=pending.proposer,
            signatures_checked=True,
            template=t,
        )
        return ProposedBlock(block, block_bytes, result)

    def _make_coinbase(self, height: int, outputs: Sequence[tuple[bytes, int]]) -> Transaction:
        params = self.params
        body = TxBody(
            version=params.tx_version,
            chain_id=params.chain_id,
            inputs=(),
            outputs=tuple(TxOut(amount, pkh) for pkh, amount in outputs),
            coinbase_height=height,
        )
        # A coinbase is bounded by the block size, not the transaction size.
        return make_transaction(
            encode_tx_body(body, params.network),
            (),
            params.network,
            max_size=params.max_block_bytes,
        )

    def validate(
        self,
        block: Block,
        now_ms: int,
        *,
        expected_proposer: bytes | None = None,
        signatures_checked: bool = False,
        template: BlockTemplate | None = None,
    ) -> BlockResult:
        """Validate *block* as the next block; raises an InvalidBlock subclass."""
        ctx = self._context(now_ms, expected_proposer, block.evidence)
        if signatures_checked:
            ctx = replace(ctx, signatures_checked=True)
        return validate_block(block, ctx, self.store, self.rules, self.muhash, template=template)

    # --- committing ---------------------------------------------------------------

    def commit(self, block: Block, block_bytes: bytes, result: BlockResult, commit: Commit) -> None:
        """Write *block* and everything that changes with it in one atomic batch."""
        height = block.header.height
        if height != self.height + 1 or block.header.prev_block_hash != self.tip_hash:
            raise BadHeight(f"block {height} does not extend tip {self.height}")
        set_h1 = self._sets[height + 1]
        set_h2 = next_validator_set(self._sets[height + 1], result.validator_updates)
        if result.culprits:
            for ev in block.evidence:
                set_h2 = (
                    self._penalize(ev, set_h2, height)
                    if self._penalize
                    else remove_validators(set_h2, [ev.vote_a.validator_address])
                )
        new_prios = self.priorities.advance(set_h1)
        record = BlockRecord(
            height=height,
            block_hash=block.hash,
            block_bytes=block_bytes,
            txids=tuple([tx.txid for tx in block.txs]),
            changes=result.changes,
            utxo_state=result.muhash.serialize(),
            commit_bytes=encode_commit(commit),
            validator_set_bytes=encode_validator_set(self._sets[height]),
            extra=(
                (K_SETS, _encode_sets([self._sets[height], set_h1, set_h2], new_prios.priorities)),
            ),
        )
        failpoints.hit("block_write.before")
        self.store.commit_block(record)
        failpoints.hit("block_write.after")
        # The parent's set stays too: it signed this block's last commit, which the
        # node's metrics read (missed blocks) without touching the store.
        parent = {height - 1: self._sets[height - 1]} if height - 1 in self._sets else {}
        self._sets = {**parent, height: self._sets[height], height + 1: set_h1, height + 2: set_h2}
        self.priorities = new_prios
        self.muhash = result.muhash
        self.height = height
        self.tip_hash = block.hash
        self.tip_time_ms = block.header.time_ms
