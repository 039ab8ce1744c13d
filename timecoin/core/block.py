"""Block validity and the state transition of one block.

``validate_block`` checks a block against its parent (given as a
``BlockContext``), the UTXO set before it, the consensus rules and the parent's
MuHash state, and returns what applying it does (``BlockResult``). Nothing is
mutated: the caller commits ``result.changes`` and ``result.muhash`` in one
atomic batch.

Rules of this module (docs/ledger.md has the full list):

- Cheap checks run first: header fields, sizes, hashes, the merkle root; then
  the last commit's signatures, the transactions (their signatures last
  within each), evidence, and finally the UTXO commitment.
- Transaction order: the coinbase is first and only first. The other
  transactions are applied in block order; one may spend outputs of an
  *earlier* non-coinbase transaction of the same block, never of a later one
  (that input is simply missing when it is checked) and never of the coinbase
  (its amounts depend on the block's fees, known only after every other
  transaction). Spending a coin twice in one block is a DoubleSpend.
- ``tx_root`` is the merkle root of the txids in block order: deterministic,
  unlike the original TimeCoin, whose root depended on a hash-map order.
- An error caused by one transaction is raised as ``BlockTransactionInvalid``
  carrying the transaction's index and reason.
- The coinbase pays exactly ``rules.reward_split(...)`` and at most
  ``rules.block_reward(...)``, which itself may never exceed
  ``params.block_reward_units + fees``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields

from timecoin.core.commit import (
    commit_hash,
    commit_signers,
    evidence_element_hash,
    evidence_hash,
    validators_hash,
    verify_commit,
    verify_duplicate_vote_evidence,
)
from timecoin.core.errors import (
    BadCoinbase,
    BadCommit,
    BadEvidence,
    BadHeader,
    BadHeight,
    BadMerkleRoot,
    BadPayload,
    BadPrevHash,
    BadProposer,
    BadReward,
    BadTime,
    BadUtxoCommitment,
    BadValidatorsHash,
    BlockTransactionInvalid,
    DoubleSpend,
    InvalidBlock,
    MissingInput,
    Reason,
    TimecoinError,
)
from timecoin.core.hashing import sha256
from timecoin.core.merkle import merkle_root
from timecoin.core.muhash import MuHash3072, apply_changes
from timecoin.core.params import ChainParams
from timecoin.core.rules import LedgerRules
from timecoin.core.tx import (
    check_signatures,
    effective_size,
    validate_coinbase,
    validate_transaction,
)
from timecoin.core.types import (
    HASH_LEN,
    MAX_MONEY_UNITS,
    Block,
    Commit,
    Evidence,
    Transaction,
    Validator,
    ValidatorSet,
)
from timecoin.core.utxo import UtxoChanges, UtxoOverlay, UtxoView
from timecoin.core.validators import ValidatorUpdates, validator_updates


@dataclass(frozen=True, slots=True)
class BlockContext:
    """Everything about the parent chain that block validation needs."""

    params: ChainParams
    prev_height: int
    """Height of the parent (0 when validating block 1 on top of genesis)."""
    prev_hash: bytes
    """Hash of the parent block (the genesis hash for block 1)."""
    prev_time_ms: int
    """Parent's header time (genesis time for block 1); the block's time must be later."""
    validators: ValidatorSet
    """The set that decides this block's height (``header.validators_hash``)."""
    next_validators: ValidatorSet
    """The set that decides the next height (``header.next_validators_hash``)."""
    last_validators: ValidatorSet | None
    """The set that decided the parent's height and signed ``block.last_commit``."""
    max_time_ms: int
    """Latest acceptable header time (the caller's clock + ``max_future_block_time_ms``)."""
    expected_proposer: bytes | None = None
    """Address the proposer must have, or None to accept any member of ``validators``."""
    evidence_validators: Mapping[int, ValidatorSet] = field(default_factory=dict)
    """Sets of older heights against which evidence may be checked (beyond this and the last)."""
    signatures_checked: bool = False
    """True when the caller already verified every transaction's signatures (batch/pool)."""


@dataclass(frozen=True, slots=True)
class BlockResult:
    """What applying a valid block does."""

    changes: UtxoChanges
    """Net UTXO changes; ``changes.spent`` is the block's undo data."""
    fees: int
    """Sum of the fees of the non-coinbase transactions."""
    reward: int
    """Amount the coinbase pays."""
    utxo_commitment: bytes
    """MuHash3072 digest of the UTXO set after the block (equals the header's)."""
    muhash: MuHash3072
    """The new rolling MuHash state (the parent's state is left untouched)."""
    signers: tuple[Validator, ...]
    """Validators whose precommits are in ``last_commit`` (paid by the coinbase)."""
    culprits: tuple[Validator, ...]
    """Validators proven to equivocate by the block's evidence (to be penalized)."""
    validator_updates: ValidatorUpdates
    """Registry changes of this block; ``next_validator_set`` turns them into the H+2 set."""


def expected_coinbase(
    height: int,
    fees: int,
    proposer: Validator,
    signers: list[Validator] | tuple[Validator, ...],
    params: ChainParams,
    rules: LedgerRules,
) -> tuple[int, list[tuple[bytes, int]]]:
    """Return ``(reward, outputs)`` the coinbase of *height* must have.

    Used by proposers to build the coinbase and by ``validate_block`` to check
    it. Raises BadReward if the rules ask for more than
    ``params.block_reward_units + fees`` or split more than the reward.
    """
    cap = params.block_reward_units + fees
    reward = rules.block_reward(height, fees, params)
    if not 0 <= reward <= cap:
        raise BadReward(f"rules grant a reward of {reward}, the ledger caps it at {cap}")
    outputs = rules.reward_split(height, reward, proposer, signers, params)
    if sum(amount for _, amount in outputs) > reward:
        raise BadReward("rules split more than the reward")
    return reward, outputs


def next_utxo_commitment(muhash: MuHash3072, changes: UtxoChanges) -> tuple[bytes, MuHash3072]:
    """Return the digest and state after applying *changes* to a copy of *muhash*."""
    h = muhash.copy()
    apply_changes(h, changes)
    return h.digest(), h


def _check_header(block: Block, ctx: BlockContext) -> None:
    h = block.header
    p = ctx.params
    if len(block.hash) != HASH_LEN or block.hash != sha256(block.header_bytes):
        raise BadHeader("block hash is not SHA-256(header_bytes)")
    if h.version != p.block_version:
        raise BadHeader(
            f"block version {h.version} is not {p.block_version}", reason=Reason.BAD_VERSION
        )
    if h.chain_id != p.chain_id:
        raise BadHeader(f"block is for chain {h.chain_id!r}", reason=Reason.WRONG_CHAIN)
    if h.height != ctx.prev_height + 1:
        raise BadHeight(f"block height {h.height}, expected {ctx.prev_height + 1}")
    if h.prev_block_hash != ctx.prev_hash:
        raise BadPrevHash("prev_block_hash does not name the parent")
    if h.time_ms <= ctx.prev_time_ms:
        raise BadTime(f"block time {h.time_ms} not after parent time {ctx.prev_time_ms}")
    if h.time_ms > ctx.max_time_ms:
        raise BadTime(f"block time {h.time_ms} is too far in the future")


def _check_bounds(block: Block, p: ChainParams) -> None:
    n = len(block.txs)
    if n == 0:
        raise BlockTransactionInvalid(0, BadCoinbase("block has no coinbase"))
    if n > p.max_block_txs:
        raise InvalidBlock(
            f"{n} transactions, limit {p.max_block_txs}", reason=Reason.TOO_MANY_ITEMS
        )
    if len(block.evidence) > p.max_evidence:
        raise BadEvidence(f"{len(block.evidence)} evidence items, limit {p.max_evidence}")
    size = len(block.header_bytes)
    for tx in block.txs:
        size += effective_size(tx)
    size = max(size, block.size)
    if size > p.max_block_bytes:
        raise InvalidBlock(
            f"block is {size} bytes, limit {p.max_block_bytes}", reason=Reason.OVERSIZED
        )


def _check_sets(block: Block, ctx: BlockContext) -> Validator:
    h = block.header
    if h.validators_hash != validators_hash(ctx.validators):
        raise BadValidatorsHash("validators_hash does not match the set for this height")
    if h.next_validators_hash != validators_hash(ctx.next_validators):
        raise BadValidatorsHash("next_validators_hash does not match the next set")
    proposer = ctx.validators.get(h.proposer_address)
    if proposer is None:
        raise BadProposer(f"proposer {h.proposer_address.hex()} is not a validator")
    if ctx.expected_proposer is not None and h.proposer_address != ctx.expected_proposer:
        raise BadProposer("proposer is not the one whose turn it is")
    return proposer


def _check_last_commit(block: Block, ctx: BlockContext) -> tuple[Validator, ...]:
    h = block.header
    commit = block.last_commit
    try:
        last_hash = commit_hash(commit)
    except (ValueError, TypeError, OverflowError, struct.error):
        raise BadCommit("last_commit has out-of-range fields") from None
    if h.last_commit_hash != last_hash:
        raise BadCommit("last_commit_hash does not match last_commit")
    if h.height == 1:
        if commit is not None:
            raise BadCommit("block 1 carries a last commit")
        return ()
    if commit is None:
        raise BadCommit("block carries no commit for its parent")
    if ctx.last_validators is None:
        raise BadCommit("no validator set known for the parent height")
    verify_commit(
        ctx.params.chain_id,
        commit,
        ctx.last_validators,
        height=ctx.prev_height,
        block_hash=ctx.prev_hash,
    )
    return tuple(commit_signers(commit, ctx.last_validators))


def _check_evidence(block: Block, ctx: BlockContext) -> tuple[Validator, ...]:
    h = block.header
    try:
        ev_hash = evidence_hash(block.evidence)
    except (ValueError, TypeError, OverflowError, struct.error):
        raise BadEvidence("evidence has out-of-range fields") from None
    if h.evidence_hash != ev_hash:
        raise BadEvidence("evidence_hash does not match the evidence")
    seen: set[bytes] = set()
    culprits: list[Validator] = []
    for ev in block.evidence:
        key = evidence_element_hash(ev)
        if key in seen:
            raise BadEvidence("evidence included twice")
        seen.add(key)
        ev_height = ev.vote_a.height
        if ev_height == h.height:
            vs: ValidatorSet | None = ctx.validators
        elif ev_height == ctx.prev_height:
            vs = ctx.last_validators
        else:
            vs = ctx.evidence_validators.get(ev_height)
        if vs is None:
            raise BadEvidence(f"evidence for height {ev_height} is too old or from the future")
        culprits.append(verify_duplicate_vote_evidence(ctx.params.chain_id, ev, vs))
    return tuple(culprits)


def validate_block(
    block: Block,
    ctx: BlockContext,
    view: UtxoView,
    rules: LedgerRules,
    muhash: MuHash3072,
    *,
    template: BlockTemplate | None = None,
) -> BlockResult:
    """Validate *block* on top of its parent and return the effect of applying it.

    *view* is the UTXO set after the parent; *muhash* the parent's MuHash
    state (not modified). Raises an ``InvalidBlock`` subclass (or
    ``BlockTransactionInvalid`` with the offending transaction's reason).

    *template* is the ``build_block_template`` result this node built *block*
    from, on this same parent state: its transactions already went through the
    per-transaction checks below (the same functions, against the same UTXO
    view), so that loop is not run a second time and the template's fees and
    changes are used. Everything else (header, bounds, sets, merkle root, last
    commit, coinbase, registry updates, evidence, block rules, commitment) is
    checked as for any block. ``tests/node/test_chainstate.py`` checks that
    both paths return the same result.
    """
    params = ctx.params
    header = block.header
    height = header.height
    _check_header(block, ctx)
    _check_bounds(block, params)
    proposer = _check_sets(block, ctx)
    txs = block.txs
    if template is not None and template.txs != txs:  # identical objects: a cheap comparison
        raise ValueError("validate_block: the template does not hold this block's txs")
    # The template computed the root of these very txids.
    tx_root = template.tx_root if template is not None else merkle_root([tx.txid for tx in txs])
    if header.tx_root != tx_root:
        raise BadMerkleRoot("tx_root is not the merkle root of the txids in block order")
    if not txs[0].is_coinbase:
        raise BlockTransactionInvalid(0, BadCoinbase("first transaction is not a coinbase"))
    signers = _check_last_commit(block, ctx)

    if template is not None:
        return _finish_block(
            block, ctx, txs, template.fees, proposer, signers, rules, None, template
        )
    overlay = UtxoOverlay(view)
    fees = 0
    sig_ok = True if ctx.signatures_checked else None
    for i in range(1, len(txs)):
        tx = txs[i]
        try:
            inputs = tx.body.inputs
            if not inputs:  # tx.is_coinbase, inline
                raise BadCoinbase("a coinbase is only valid as the first transaction")
            for txin in inputs:
                if overlay.is_spent_here(txin.prev_out):
                    raise DoubleSpend(f"{txin.prev_out} already spent in this block")
            fees += validate_transaction(tx, overlay, height, params, sig_ok=sig_ok)
            rules.validate_transaction(tx, overlay, height, params)
            overlay.apply_tx(tx, height)
        except BlockTransactionInvalid:
            raise
        except TimecoinError as exc:
            raise BlockTransactionInvalid(i, exc) from exc
        if fees > MAX_MONEY_UNITS:
            raise BadReward("block fees exceed the money bound")
    return _finish_block(block, ctx, txs, fees, proposer, signers, rules, overlay, muhash)


def _finish_block(
    block: Block,
    ctx: BlockContext,
    txs: Sequence[Transaction],
    fees: int,
    proposer: Validator,
    signers: tuple[Validator, ...],
    rules: LedgerRules,
    overlay: UtxoOverlay | None,
    state: MuHash3072 | BlockTemplate,
) -> BlockResult:
    """Run the checks after the transaction loop: coinbase, registry, evidence, commitment.

    *state* is the parent's MuHash state, which the overlay's changes update,
    or the block's own template (*overlay* None: its changes and commitment
    already include the coinbase).
    """
    params = ctx.params
    header = block.header
    height = header.height
    reward, expected = expected_coinbase(height, fees, proposer, signers, params, rules)
    coinbase = txs[0]
    try:
        paid = validate_coinbase(coinbase, height, expected, reward, params)
        if overlay is not None:
            overlay.apply_tx(coinbase, height)
    except BadReward:
        raise
    except TimecoinError as exc:
        raise BlockTransactionInvalid(0, exc) from exc

    try:
        # The registry before this block is the set deciding the next height (H+2 rule).
        updates = validator_updates(txs, ctx.next_validators, strict=True)
    except BadPayload as exc:
        raise BlockTransactionInvalid(int(exc.details.get("index", 0)), exc) from exc

    culprits = _check_evidence(block, ctx)
    rules.validate_block(block, ctx.validators, params)

    if isinstance(state, BlockTemplate):
        changes, new_muhash, digest = state.changes, state.muhash, state.utxo_commitment
    else:
        assert overlay is not None
        changes = overlay.changes()
        digest, new_muhash = next_utxo_commitment(state, changes)
    if digest != header.utxo_commitment:
        raise BadUtxoCommitment("utxo_commitment does not match the UTXO set after the block")
    return BlockResult(
        changes=changes,
        fees=fees,
        reward=paid,
        utxo_commitment=digest,
        muhash=new_muhash,
        signers=signers,
        culprits=culprits,
        validator_updates=updates,
    )


def check_block_signatures(
    block: Block, chain_id: str, *, start: int = 1, stop: int | None = None
) -> None:
    """Verify the input signatures of ``block.txs[start:stop]``; raise BlockTransactionInvalid.

    The expensive half of block validation, split out so the node can run it
    on worker threads (slices of one block in parallel) and then call
    ``validate_block`` with ``BlockContext(signatures_checked=True)``. A
    coinbase (no inputs) has nothing to verify and is skipped.
    """
    txs = block.txs
    end = len(txs) if stop is None else min(stop, len(txs))
    for i in range(max(start, 0), end):
        tx = txs[i]
        if tx.is_coinbase:
            continue
        try:
            check_signatures(tx, chain_id)
        except TimecoinError as exc:
            raise BlockTransactionInvalid(i, exc) from exc


# --- proposer side ----------------------------------------------------------------

BLOCK_OVERHEAD_RESERVE_BYTES = 2_048
"""Room kept free for the header and framing when filling a block template."""
PER_VALIDATOR_RESERVE_BYTES = 200
"""Room per validator for its coinbase output and its commit signature."""
PER_EVIDENCE_RESERVE_BYTES = 400
"""Room per evidence item (two votes with signatures)."""
TX_FRAMING_BYTES = 4
"""Field tag and length prefix of each transaction inside the Block message: 10,000
small transactions add 40 KB that the size of the transactions alone does not show."""


@dataclass(frozen=True, slots=True)
class BlockDraft:
    """A block's contents before its UTXO commitment: everything but the MuHash work.

    The commitment is the one expensive step left (about three coins per
    transaction, each a SHA-256, a ChaCha20 keystream and a 3072-bit
    multiplication); a node can compute it elsewhere (worker processes) from
    ``changes`` and then ``finish`` the draft.
    """

    txs: tuple[Transaction, ...]
    """Coinbase first, then the accepted candidates in order."""
    fees: int
    reward: int
    changes: UtxoChanges
    tx_root: bytes
    last_commit_hash: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    evidence_hash: bytes
    rejected: tuple[tuple[Transaction, TimecoinError], ...]
    """Candidates left out because they are invalid on top of this block (evict them)."""

    def finish(self, muhash: MuHash3072) -> BlockTemplate:
        """Return the template whose state after the block is *muhash* (parent + ``changes``)."""
        return BlockTemplate(
            **{f.name: getattr(self, f.name) for f in fields(BlockDraft)},
            utxo_commitment=muhash.digest(),
            muhash=muhash,
        )


@dataclass(frozen=True, slots=True)
class BlockTemplate(BlockDraft):
    """The contents of a block the proposer is about to build, with every header hash."""

    utxo_commitment: bytes
    muhash: MuHash3072


def build_block_template(
    candidates: Sequence[Transaction],
    ctx: BlockContext,
    view: UtxoView,
    rules: LedgerRules,
    muhash: MuHash3072,
    *,
    proposer: Validator,
    last_commit: Commit | None,
    evidence: Sequence[Evidence] = (),
    make_coinbase: Callable[[int, Sequence[tuple[bytes, int]]], Transaction],
    signatures_checked: bool = True,
    admitted_fees: Sequence[int] | None = None,
) -> BlockTemplate:
    """Return ``draft_block(...)`` finished with the UTXO commitment on top of *muhash*."""
    draft = draft_block(
        candidates,
        ctx,
        view,
        rules,
        proposer=proposer,
        last_commit=last_commit,
        evidence=evidence,
        make_coinbase=make_coinbase,
        signatures_checked=signatures_checked,
        admitted_fees=admitted_fees,
    )
    after = muhash.copy()
    apply_changes(after, draft.changes)
    return draft.finish(after)


def draft_block(
    candidates: Sequence[Transaction],
    ctx: BlockContext,
    view: UtxoView,
    rules: LedgerRules,
    *,
    proposer: Validator,
    last_commit: Commit | None,
    evidence: Sequence[Evidence] = (),
    make_coinbase: Callable[[int, Sequence[tuple[bytes, int]]], Transaction],
    signatures_checked: bool = True,
    admitted_fees: Sequence[int] | None = None,
) -> BlockDraft:
    """Select *candidates* (in order) that are valid together and build the block contents.

    Each candidate is validated against the UTXO set as changed by those
    accepted before it (so a child after its parent is fine); invalid ones
    are skipped and reported in ``rejected``. Candidates stop when the count
    or byte budget (``params`` limits minus a reserve for header, coinbase,
    commit and evidence) is used up. ``make_coinbase(height, outputs)``
    builds the coinbase transaction (the wire layer serializes its body).
    ``signatures_checked`` defaults to True because mempool transactions were
    fully verified, for this chain id, on admission: signatures and the
    stateless checks are not run again (the UTXO, fee and rules checks are).
    *last_commit* and *evidence* must already be verified (they come from
    this node's consensus).

    ``admitted_fees[n]``, if given, is the fee of ``candidates[n]`` found by a
    full ``validate_transaction`` at an earlier height (mempool admission).
    Each input is then only checked to be still unspent: what else that
    validation found about a transaction depends on nothing but the
    transaction and the coins it spends, and a coin never changes while
    unspent (no outpoint is created twice: a coinbase commits to its height,
    any other body spends coins that exist only once), except coinbase
    maturity, which only a later height can reach and a lower one cannot undo.
    The rules plugins and the masternode registry are still asked.
    """
    params = ctx.params
    height = ctx.prev_height + 1
    n_vals = max(len(ctx.validators), len(ctx.last_validators or ()))
    budget = (
        params.max_block_bytes
        - BLOCK_OVERHEAD_RESERVE_BYTES
        - PER_VALIDATOR_RESERVE_BYTES * (n_vals + 1)
        - PER_EVIDENCE_RESERVE_BYTES * len(evidence)
    )
    signers = tuple(commit_signers(last_commit, ctx.last_validators)) if ctx.last_validators else ()
    overlay = UtxoOverlay(view)
    chosen: list[Transaction] = []
    rejected: list[tuple[Transaction, TimecoinError]] = []
    fees = 0
    used = 0
    sig_ok = True if signatures_checked else None
    registry_probe: list[Transaction] = []
    if admitted_fees is not None and (
        len(admitted_fees) != len(candidates) or not signatures_checked
    ):
        raise ValueError("admitted_fees: one per candidate, whose signatures were checked")
    get_coin = overlay.get_coin
    for n, tx in enumerate(candidates):
        if len(chosen) + 1 >= params.max_block_txs:
            break
        size = effective_size(tx) + TX_FRAMING_BYTES
        if used + size > budget:
            continue  # a smaller one may still fit
        try:
            inputs = tx.body.inputs
            if not inputs:  # tx.is_coinbase, inline: once per candidate
                raise BadCoinbase("a coinbase is not a mempool transaction")
            for txin in inputs:
                op = txin.prev_out
                if overlay.is_spent_here(op):
                    raise DoubleSpend(f"{op} already spent in this block")
                if admitted_fees is not None and get_coin(op) is None:
                    raise MissingInput(f"{op} was spent or never existed")
            if admitted_fees is None:
                fee = validate_transaction(
                    tx, overlay, height, params, sig_ok=sig_ok, prechecked=signatures_checked
                )
            else:
                fee = admitted_fees[n]
            rules.validate_transaction(tx, overlay, height, params)
            if tx.body.masternode is not None:
                validator_updates([*registry_probe, tx], ctx.next_validators, strict=True)
                registry_probe.append(tx)
        except TimecoinError as exc:
            rejected.append((tx, exc))
            continue
        overlay.apply_tx(tx, height)
        chosen.append(tx)
        fees += fee
        used += size
    reward, outputs = expected_coinbase(height, fees, proposer, signers, params, rules)
    coinbase = make_coinbase(height, outputs)
    overlay.apply_tx(coinbase, height)
    txs = (coinbase, *chosen)
    return BlockDraft(
        txs=txs,
        fees=fees,
        reward=reward,
        changes=overlay.changes(),
        tx_root=merkle_root([t.txid for t in txs]),
        last_commit_hash=commit_hash(last_commit),
        validators_hash=validators_hash(ctx.validators),
        next_validators_hash=validators_hash(ctx.next_validators),
        evidence_hash=evidence_hash(evidence),
        rejected=tuple(rejected),
    )
