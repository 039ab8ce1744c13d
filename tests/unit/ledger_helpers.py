"""Builders for ledger tests: keys, coins, signed transactions, blocks and commits.

Transactions are built as domain dataclasses. ``body_bytes`` is a real
protobuf ``TxBody`` (through ``timecoin.wire.codec`` when it exists, else the
generated class directly) so signatures cover realistic bytes; the core never
parses them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace

from timecoin._proto.types.v1 import types_pb2
from timecoin.core.address import encode_address
from timecoin.core.block import (
    BlockContext,
    BlockResult,
    expected_coinbase,
    next_utxo_commitment,
    validate_block,
)
from timecoin.core.commit import commit_hash, commit_signers, evidence_hash, validators_hash
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair, pubkey_hash
from timecoin.core.merkle import merkle_root
from timecoin.core.muhash import MuHash3072, apply_changes
from timecoin.core.params import ChainParams
from timecoin.core.rules import DefaultLedgerRules, LedgerRules
from timecoin.core.signing import tx_sign_digest, vote_sign_digest
from timecoin.core.types import (
    Block,
    BlockHeader,
    Coin,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    MasternodeDeregistration,
    MasternodeRegistration,
    Network,
    OutPoint,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from timecoin.core.utxo import (
    MemoryUtxoView,
    UtxoChanges,
    UtxoOverlay,
    apply_block_txs,
    invert_changes,
)
from timecoin.core.validators import next_validator_set, remove_validators

PARAMS = ChainParams.for_network("devnet")
TIME = 100_000_000


_KEYS_BY_PUBKEY: dict[bytes, KeyPair] = {}
_KEYS_BY_PKH: dict[bytes, KeyPair] = {}


@functools.cache
def key(i: int) -> KeyPair:
    """A deterministic test key number *i*."""
    k = KeyPair.from_secret(sha256(b"timecoin-test-key" + i.to_bytes(4, "big")))
    _KEYS_BY_PUBKEY[k.pubkey] = k
    _KEYS_BY_PKH[k.address_payload] = k
    return k


def pkh(i: int) -> bytes:
    """Address payload of test key *i*."""
    return key(i).address_payload


def _body_pb(body: TxBody, network: Network) -> types_pb2.TxBody:
    msg = types_pb2.TxBody(
        version=body.version,
        chain_id=body.chain_id,
        memo=body.memo,
        coinbase_height=body.coinbase_height,
    )
    for txin in body.inputs:
        i = msg.inputs.add()
        i.prev_out.txid = txin.prev_out.txid
        i.prev_out.index = txin.prev_out.index
        i.pubkey = txin.pubkey
    for out in body.outputs:
        # The encoder needs a real address; out-of-range test values use a placeholder.
        try:
            addr = encode_address(out.pubkey_hash, network)
        except Exception:
            addr = "x" + out.pubkey_hash.hex()
        msg.outputs.add(amount=out.amount % 2**64, address=addr)
    mn = body.masternode
    if isinstance(mn, MasternodeRegistration):
        msg.masternode.register.tier = int(mn.tier)
        msg.masternode.register.collateral_index = mn.collateral_index % 2**32
        msg.masternode.register.operator_pubkey = mn.operator_pubkey
    elif isinstance(mn, MasternodeDeregistration):
        msg.masternode.deregister.collateral.txid = mn.collateral.txid
        msg.masternode.deregister.collateral.index = mn.collateral.index
    return msg


def encode_body(body: TxBody, network: Network = PARAMS.network) -> bytes:
    """Serialize *body* (wire codec when available, generated protobuf otherwise)."""
    try:
        from timecoin.wire.codec import encode_tx_body

        return encode_tx_body(body, network)
    except Exception:
        pass  # no codec yet, or a deliberately invalid value the codec refuses
    try:
        return _body_pb(body, network).SerializeToString(deterministic=True)
    except (ValueError, TypeError):
        # Out-of-range fuzz values: stand-in bytes (the core only hashes/signs them).
        return b"unencodable:" + repr(body).encode()


def finish_tx(
    body: TxBody,
    signers: Sequence[KeyPair] = (),
    *,
    sign_chain_id: str | None = None,
    signatures: Sequence[bytes] | None = None,
    network: Network = PARAMS.network,
) -> Transaction:
    """Serialize *body*, sign it with *signers* (one per input) and build the Transaction."""
    body_bytes = encode_body(body, network)
    if signatures is None:
        digest = tx_sign_digest(sign_chain_id or body.chain_id, body_bytes)
        signatures = [k.sign(digest) for k in signers]
    sigs = tuple(signatures)
    size = len(
        types_pb2.Transaction(body_bytes=body_bytes, signatures=list(sigs)).SerializeToString()
    )
    return Transaction(
        body_bytes=body_bytes, signatures=sigs, body=body, txid=sha256(body_bytes), size=size
    )


def spend(
    inputs: Sequence[tuple[OutPoint, KeyPair]],
    outputs: Sequence[tuple[int, bytes]],
    *,
    params: ChainParams = PARAMS,
    memo: bytes = b"",
    masternode: MasternodeRegistration | MasternodeDeregistration | None = None,
    chain_id: str | None = None,
    sign_chain_id: str | None = None,
    signatures: Sequence[bytes] | None = None,
) -> Transaction:
    """A signed transaction spending *inputs* (outpoint, owner key) into *outputs*."""
    body = TxBody(
        version=params.tx_version,
        chain_id=chain_id or params.chain_id,
        inputs=tuple(TxIn(op, k.pubkey) for op, k in inputs),
        outputs=tuple(TxOut(a, p) for a, p in outputs),
        memo=memo,
        masternode=masternode,
    )
    return finish_tx(
        body, [k for _, k in inputs], sign_chain_id=sign_chain_id, signatures=signatures
    )


def coinbase_tx(
    height: int, outputs: Sequence[tuple[bytes, int]], params: ChainParams = PARAMS
) -> Transaction:
    """A coinbase for *height* paying ``(pubkey_hash, amount)`` pairs."""
    body = TxBody(
        version=params.tx_version,
        chain_id=params.chain_id,
        inputs=(),
        outputs=tuple(TxOut(a, p) for p, a in outputs),
        coinbase_height=height,
    )
    return finish_tx(body)


def funded_view(
    owners: Sequence[tuple[int, int]], *, height: int = 0
) -> tuple[MemoryUtxoView, list[OutPoint]]:
    """A UTXO set with one coin per ``(key index, amount)``; returns the view and outpoints."""
    coins = {}
    ops = []
    for n, (k, amount) in enumerate(owners):
        op = OutPoint(sha256(b"funding" + n.to_bytes(4, "big")), 0)
        coins[op] = Coin(amount=amount, pubkey_hash=pkh(k), height=height)
        ops.append(op)
    return MemoryUtxoView(coins), ops


def with_body(tx: Transaction, **changes: object) -> Transaction:
    """*tx* with body fields replaced, re-serialized, keeping its signatures."""
    body = tx.body._replace(**changes)  # type: ignore[arg-type]
    return finish_tx(body, signatures=tx.signatures)


__all__ = [
    "PARAMS",
    "TIME",
    "coinbase_tx",
    "encode_body",
    "finish_tx",
    "funded_view",
    "key",
    "pkh",
    "pubkey_hash",
    "spend",
    "with_body",
]


# --- validators, votes, commits ---------------------------------------------

VALIDATOR_KEY_BASE = 1000


def validator_key(i: int) -> KeyPair:
    """Operator key of test validator *i*."""
    return key(VALIDATOR_KEY_BASE + i)


def make_validator(i: int, power: int = 1, **kw: object) -> Validator:
    """Test validator *i* with *power*."""
    k = validator_key(i)
    return Validator(address=pubkey_hash(k.pubkey), pubkey=k.pubkey, power=power, **kw)  # type: ignore[arg-type]


def make_set(powers: Sequence[int]) -> ValidatorSet:
    """A set of validators 0..n-1 with the given powers."""
    return ValidatorSet(tuple(make_validator(i, p) for i, p in enumerate(powers)))


def key_of(v: Validator) -> KeyPair:
    """The test key behind validator *v* (any key made by ``key()``)."""
    return _KEYS_BY_PUBKEY[v.pubkey]


def signed_vote(
    v: Validator,
    height: int,
    round_: int,
    block_hash: bytes,
    *,
    vote_type: VoteType = VoteType.PRECOMMIT,
    chain_id: str = PARAMS.chain_id,
) -> Vote:
    """A vote by *v*, signed with its test key."""
    vote = Vote(vote_type, height, round_, block_hash, v.address)
    return replace(vote, signature=key_of(v).sign(vote_sign_digest(chain_id, vote)))


def make_commit(
    vs: ValidatorSet,
    height: int,
    block_hash: bytes,
    *,
    signers: Sequence[Validator] | None = None,
    round_: int = 0,
    chain_id: str = PARAMS.chain_id,
) -> Commit:
    """A commit for *block_hash* signed by *signers* (default: the whole set)."""
    chosen = vs.validators if signers is None else signers
    sigs = tuple(
        CommitSig(
            v.address, signed_vote(v, height, round_, block_hash, chain_id=chain_id).signature
        )
        for v in chosen
    )
    return Commit(height=height, round=round_, block_hash=block_hash, signatures=sigs)


# --- blocks -----------------------------------------------------------------


def encode_header(h: BlockHeader) -> bytes:
    """Serialize a header with the generated protobuf class.

    Out-of-range values (fuzzing) cannot be encoded; they get stand-in bytes,
    which is fine because the core only hashes header bytes.
    """
    try:
        return _encode_header_pb(h)
    except (ValueError, TypeError):
        return b"unencodable:" + repr(h).encode()


def _encode_header_pb(h: BlockHeader) -> bytes:
    return types_pb2.BlockHeader(
        version=h.version,
        chain_id=h.chain_id,
        height=h.height,
        time_ms=h.time_ms,
        prev_block_hash=h.prev_block_hash,
        tx_root=h.tx_root,
        last_commit_hash=h.last_commit_hash,
        validators_hash=h.validators_hash,
        next_validators_hash=h.next_validators_hash,
        utxo_commitment=h.utxo_commitment,
        proposer_address=h.proposer_address,
        evidence_hash=h.evidence_hash,
    ).SerializeToString(deterministic=True)


def rehash(block: Block, **header_changes: object) -> Block:
    """*block* with header fields replaced and header bytes/hash recomputed."""
    header = replace(block.header, **header_changes)  # type: ignore[arg-type]
    hb = encode_header(header)
    return replace(block, header=header, header_bytes=hb, hash=sha256(hb))


GENESIS_HASH = sha256(b"test genesis")
GENESIS_TIME_MS = 1_700_000_000_000


class Chain:
    """A tiny in-memory chain: builds valid blocks and applies them.

    ``sets[h]`` is the validator set deciding height h; the genesis set decides
    heights 1 and 2, and block h's updates produce ``sets[h + 2]``.
    """

    def __init__(
        self,
        validators: ValidatorSet,
        allocations: Sequence[tuple[int, int]] = (),
        *,
        params: ChainParams = PARAMS,
        rules: LedgerRules | None = None,
    ) -> None:
        self.params = params
        self.rules: LedgerRules = rules or DefaultLedgerRules()
        coins = {
            OutPoint(GENESIS_HASH, i): Coin(amount, pkh(k), 0)
            for i, (k, amount) in enumerate(allocations)
        }
        self.view = MemoryUtxoView(coins)
        self.muhash: MuHash3072 = MuHash3072()
        apply_changes(self.muhash, UtxoChanges(spent=(), created=tuple(coins.items())))
        self.height = 0
        self.prev_hash = GENESIS_HASH
        self.prev_time_ms = GENESIS_TIME_MS
        self.sets: dict[int, ValidatorSet] = {1: validators, 2: validators}
        self.last_commit: Commit | None = None
        self.blocks: list[Block] = []
        self.results: list[BlockResult] = []

    def genesis_outpoint(self, i: int) -> OutPoint:
        return OutPoint(GENESIS_HASH, i)

    def context(self, **overrides: object) -> BlockContext:
        h = self.height + 1
        ctx = BlockContext(
            params=self.params,
            prev_height=self.height,
            prev_hash=self.prev_hash,
            prev_time_ms=self.prev_time_ms,
            validators=self.sets[h],
            next_validators=self.sets[h + 1],
            last_validators=self.sets.get(self.height),
            max_time_ms=self.prev_time_ms + 60_000,
        )
        return replace(ctx, **overrides)  # type: ignore[arg-type]

    def fees_of(self, txs: Sequence[Transaction]) -> int:
        overlay = UtxoOverlay(self.view)
        fees = 0
        for tx in txs:
            coins = [overlay.get_coin(i.prev_out) for i in tx.body.inputs]
            fees += sum(c.amount for c in coins if c is not None)
            fees -= sum(o.amount for o in tx.body.outputs)
            try:
                overlay.apply_tx(tx, self.height + 1)
            except Exception:
                pass
        return max(fees, 0)

    def build(
        self,
        txs: Sequence[Transaction] = (),
        *,
        proposer: Validator | None = None,
        coinbase: Transaction | None = None,
        last_commit: Commit | None | bool = True,
        evidence: Sequence[DuplicateVoteEvidence] = (),
        time_ms: int | None = None,
        **header_changes: object,
    ) -> Block:
        """A block at the next height with a correct coinbase, hashes and UTXO commitment."""
        h = self.height + 1
        vs = self.sets[h]
        proposer = proposer or vs.validators[0]
        commit = self.last_commit if last_commit is True else last_commit or None
        last_set = self.sets.get(self.height)
        signers = commit_signers(commit, last_set) if commit and last_set else []
        if coinbase is None:
            _, outs = expected_coinbase(
                h, self.fees_of(txs), proposer, signers, self.params, self.rules
            )
            coinbase = coinbase_tx(h, outs, self.params)
        all_txs = (coinbase, *txs)
        try:
            digest, _ = next_utxo_commitment(self.muhash, apply_block_txs(all_txs, self.view, h))
        except Exception:
            digest = b"\x00" * 32  # an invalid block; the test expects another error first
        header = BlockHeader(
            version=self.params.block_version,
            chain_id=self.params.chain_id,
            height=h,
            time_ms=time_ms if time_ms is not None else self.prev_time_ms + 1_000,
            prev_block_hash=self.prev_hash,
            tx_root=merkle_root([t.txid for t in all_txs]),
            last_commit_hash=commit_hash(commit),
            validators_hash=validators_hash(vs),
            next_validators_hash=validators_hash(self.sets[h + 1]),
            utxo_commitment=digest,
            proposer_address=proposer.address,
            evidence_hash=evidence_hash(evidence),
        )
        header = replace(header, **header_changes)  # type: ignore[arg-type]
        hb = encode_header(header)
        return Block(
            header_bytes=hb,
            header=header,
            txs=all_txs,
            last_commit=commit,
            evidence=tuple(evidence),
            hash=sha256(hb),
            size=len(hb) + sum(t.size for t in all_txs),
        )

    def validate(self, block: Block, **ctx_overrides: object) -> BlockResult:
        return validate_block(
            block, self.context(**ctx_overrides), self.view, self.rules, self.muhash
        )

    def commit(self, block: Block, result: BlockResult | None = None) -> BlockResult:
        """Validate (unless *result* is given) and apply *block*."""
        result = result or self.validate(block)
        h = block.header.height
        self.view.apply(result.changes)
        self.muhash = result.muhash
        self.sets[h + 2] = remove_validators(
            next_validator_set(self.sets[h + 1], result.validator_updates),
            [c.address for c in result.culprits],
        )
        self.last_commit = make_commit(self.sets[h], h, block.hash, chain_id=self.params.chain_id)
        self.height = h
        self.prev_hash = block.hash
        self.prev_time_ms = block.header.time_ms
        self.blocks.append(block)
        self.results.append(result)
        return result

    def add(self, txs: Sequence[Transaction] = (), **kw: object) -> BlockResult:
        """Build, validate and apply the next block."""
        return self.commit(self.build(txs, **kw))  # type: ignore[arg-type]

    def undo_last(self) -> None:
        """Undo the UTXO effect of the last block (view and MuHash)."""
        result = self.results.pop()
        self.blocks.pop()
        self.view.undo(result.changes)
        apply_changes(self.muhash, invert_changes(result.changes))


def key_for_pkh(payload: bytes) -> KeyPair | None:
    """The test key whose address payload is *payload*, if ``key()`` made it."""
    return _KEYS_BY_PKH.get(payload)
