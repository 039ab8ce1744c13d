"""Protobuf <-> domain conversion with bounded, strict decoders.

Rules of this module (the only user of ``timecoin._proto`` besides ``api/``
and ``p2p/``):

- Untrusted bytes are length-checked *before* protobuf sees them, and every
  collection is counted before it is converted (``Limits``).
- Every failure is a ``DecodeError`` subclass: ``Oversized`` for a bound,
  ``NonCanonical`` for unknown fields, ``BadAddress``/``BadPubkey`` for bad
  keys and addresses, plain ``DecodeError`` for everything else. No protobuf
  exception, ``ValueError`` or ``KeyError`` escapes a decoder
  (tests/unit/test_codec_fuzz.py).
- Unknown fields are rejected at every nesting level: a field this node does
  not understand may carry meaning another node acts on, so a signed message
  with one is refused rather than half-understood.
- Signed bytes are kept as received. A transaction's ``txid`` is
  SHA-256(body_bytes) and a block's hash SHA-256(header_bytes): the node parses
  those bytes and never re-serializes them to hash or verify (DESIGN.md,
  Protocol). Encoders are for building new messages only.
- ``Transaction.size`` and ``Block.size`` are the canonical encoded sizes of
  the envelope (what ``encode_transaction``/``encode_block`` produce), so every
  node computes the same fee-rate basis whatever padding a peer sent.
- Semantic rules (amounts, fees, versions, chain id, signatures) belong to
  ``timecoin.core``; here only shape is checked: lengths of hashes (32),
  addresses (20), public keys (33, on the curve), signatures (64), enum ranges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar, cast

from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from timecoin._proto.types.v1 import types_pb2 as pb
from timecoin.core.address import decode_address, encode_address
from timecoin.core.errors import BadPubkey, DecodeError, NonCanonical, Oversized, Reason
from timecoin.core.keys import pubkey_hash, validate_pubkey
from timecoin.core.types import (
    ADDRESS_PAYLOAD_LEN,
    HASH_LEN,
    PUBKEY_LEN,
    SIGNATURE_LEN,
    Block,
    BlockHeader,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    Evidence,
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    Network,
    OutPoint,
    Proposal,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from timecoin.wire.limits import DEFAULT_LIMITS, Limits

M = TypeVar("M", bound=Message)

_new = tuple.__new__
"""Builds the core's named tuples (``OutPoint``, ``TxIn``, ``TxOut``) without their
Python-level ``__new__``: fields in declaration order, one C call."""

# --- generic helpers ----------------------------------------------------------


_BYTES_LIKE = (bytes, bytearray, memoryview)


def _as_bytes(data: object, limit: int, what: str) -> bytes:
    """Return *data* as bytes after checking its length against *limit* (before any copy)."""
    if not isinstance(data, _BYTES_LIKE):
        raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
    size = data.nbytes if isinstance(data, memoryview) else len(data)
    _check_size(size, limit, what)
    return data if isinstance(data, bytes) else bytes(data)


def _check_size(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise Oversized(f"{what}: {n} bytes exceeds the limit of {limit}", size=n, limit=limit)


def _reject_unknown(msg: Message, what: str) -> None:
    """Raise NonCanonical if *msg* or any message inside it carries unknown fields."""
    if len(UnknownFieldSet(msg)):
        raise NonCanonical(f"{what}: unknown fields in {msg.DESCRIPTOR.name}")
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE:
            continue
        if fd.is_repeated:
            for item in value:
                _reject_unknown(item, what)
        else:
            _reject_unknown(value, what)


def _parse(cls: type[M], data: object, limit: int, what: str) -> M:
    """Parse bounded, untrusted *data* as *cls*; strict about size and unknown fields."""
    if type(data) is bytes and len(data) <= limit:
        raw = data  # the common case, without _as_bytes's conversions
    else:
        raw = _as_bytes(data, limit, what)
    try:
        msg = cls.FromString(raw)
    except Exception as exc:  # upb raises DecodeError, RuntimeError (depth), ...
        raise DecodeError(f"{what}: not a valid {cls.DESCRIPTOR.name}: {exc}") from None
    # Fast path: with unknown fields dropped, a message whose canonical size is
    # the size received had none (an encoding of known fields is never shorter
    # than their canonical one). Walking the message for unknown fields costs
    # four times as much, so it is left to the rare encodings that differ.
    msg.DiscardUnknownFields()
    if msg.ByteSize() != len(raw):
        msg = cls.FromString(raw)
        _reject_unknown(msg, what)
    return cast(M, msg)


def _accept(cls: type[M], data: object, limit: int, what: str) -> M:
    """Accept bytes (parsed with ``_parse``) or an already parsed *cls* message."""
    if isinstance(data, cls):
        _check_size(data.ByteSize(), limit, what)
        _reject_unknown(data, what)
        return data
    return _parse(cls, data, limit, what)


def _serialize(msg: Message) -> bytes:
    return bytes(msg.SerializeToString(deterministic=True))


def _fixed(value: bytes, n: int, what: str) -> bytes:
    if len(value) != n:
        raise DecodeError(f"{what} must be {n} bytes, got {len(value)}")
    return bytes(value)


def _hash_or_empty(value: bytes, what: str) -> bytes:
    if len(value) not in (0, HASH_LEN):
        raise DecodeError(f"{what} must be empty or {HASH_LEN} bytes, got {len(value)}")
    return bytes(value)


def _count(items: Any, limit: int, what: str, reason: Reason = Reason.OVERSIZED) -> None:
    if len(items) > limit:
        raise Oversized(f"{what}: {len(items)} items exceeds the limit of {limit}", reason=reason)


def _chain_id(value: str, limits: Limits, what: str) -> str:
    if len(value.encode()) > limits.max_chain_id_bytes:
        raise Oversized(f"{what}: chain_id longer than {limits.max_chain_id_bytes} bytes")
    return value


def _pubkey(value: bytes, what: str) -> bytes:
    try:
        validate_pubkey(bytes(value))
    except BadPubkey as exc:
        raise BadPubkey(f"{what}: {exc.message}") from None
    return bytes(value)


def _signature(value: bytes, what: str) -> bytes:
    return _fixed(value, SIGNATURE_LEN, what)


def _required_tier(value: int, what: str) -> MasternodeTier:
    if value not in (1, 2, 3):
        raise DecodeError(f"{what}: masternode tier {value} out of range")
    return MasternodeTier(value)


def _optional_tier(value: int, what: str) -> MasternodeTier | None:
    return None if value == 0 else _required_tier(value, what)


# --- OutPoint -------------------------------------------------------------------


def outpoint_to_pb(op: OutPoint) -> pb.OutPoint:
    """Convert an OutPoint to its protobuf message."""
    return pb.OutPoint(txid=op.txid, index=op.index)


def _outpoint_from_pb(msg: pb.OutPoint) -> OutPoint:
    """Convert a parsed OutPoint message; raises DecodeError unless txid is 32 bytes."""
    txid = msg.txid
    if len(txid) != HASH_LEN:
        _fixed(txid, HASH_LEN, "outpoint txid")  # raises
    return _new(OutPoint, (txid, msg.index))


# --- transactions -----------------------------------------------------------------


def tx_body_to_pb(body: TxBody, network: Network) -> pb.TxBody:
    """Convert a TxBody to its protobuf message, spelling outputs as *network* addresses."""
    msg = pb.TxBody(
        version=body.version,
        chain_id=body.chain_id,
        inputs=[
            pb.TxInput(prev_out=outpoint_to_pb(i.prev_out), pubkey=i.pubkey) for i in body.inputs
        ],
        outputs=[
            pb.TxOutput(amount=o.amount, address=encode_address(o.pubkey_hash, network))
            for o in body.outputs
        ],
        memo=body.memo,
        coinbase_height=body.coinbase_height,
    )
    mn = body.masternode
    if isinstance(mn, MasternodeRegistration):
        msg.masternode.register.CopyFrom(
            pb.MasternodeRegistration(
                tier=cast(Any, int(mn.tier)),
                collateral_index=mn.collateral_index,
                operator_pubkey=mn.operator_pubkey,
            )
        )
    elif isinstance(mn, MasternodeDeregistration):
        msg.masternode.deregister.collateral.CopyFrom(outpoint_to_pb(mn.collateral))
    return msg


def encode_tx_body(body: TxBody, network: Network) -> bytes:
    """Serialize *body*: the ``body_bytes`` a wallet signs and puts in a Transaction."""
    return _serialize(tx_body_to_pb(body, network))


def _tx_body_from_pb(
    msg: pb.TxBody, network: Network, *, limits: Limits = DEFAULT_LIMITS
) -> TxBody:
    """Convert a parsed TxBody message (shape checks only; see module docstring).

    The hottest decoder (every submitted transaction): named tuples are built
    with ``_new``.
    """
    msg_inputs, msg_outputs = msg.inputs, msg.outputs
    if len(msg_inputs) > limits.max_inputs:
        _count(msg_inputs, limits.max_inputs, "inputs", Reason.TOO_MANY_ITEMS)  # raises
    max_outputs = limits.max_outputs if len(msg_inputs) else limits.max_coinbase_outputs
    if len(msg_outputs) > max_outputs:
        _count(msg_outputs, max_outputs, "outputs", Reason.TOO_MANY_ITEMS)  # raises
    memo = msg.memo
    if len(memo) > limits.max_memo_bytes:
        raise Oversized(
            f"memo of {len(memo)} bytes exceeds {limits.max_memo_bytes}",
            reason=Reason.MEMO_TOO_LARGE,
        )
    inputs = []
    for n, i in enumerate(msg_inputs):
        prev = i.prev_out
        txid = prev.txid
        # A missing prev_out reads as an empty txid: HasField only when it is short.
        if len(txid) != HASH_LEN and not i.HasField("prev_out"):
            raise DecodeError(f"input {n}: missing prev_out")
        pubkey = i.pubkey
        # Shape only (``has_pubkey_shape``, inline): the curve point is checked
        # where the key is used, by its signature check
        # (``core.tx.check_signatures`` raises BadPubkey), which every input
        # passes before admission or inclusion; parsing it here too would cost
        # a second point decompression per input on the API thread.
        if len(pubkey) != PUBKEY_LEN or pubkey[0] not in (2, 3):
            raise BadPubkey(
                f"input {n}: public key must be 33-byte compressed, got {len(pubkey)} bytes"
            )
        if len(txid) != HASH_LEN:
            _fixed(txid, HASH_LEN, "outpoint txid")  # raises
        inputs.append(_new(TxIn, (_new(OutPoint, (txid, prev.index)), pubkey)))
    outputs = [_new(TxOut, (o.amount, decode_address(o.address, network))) for o in msg_outputs]
    masternode: MasternodeRegistration | MasternodeDeregistration | None = None
    if msg.HasField("masternode"):
        masternode = _masternode_from_pb(msg.masternode)
    chain_id = msg.chain_id
    if len(chain_id) > limits.max_chain_id_bytes or not chain_id.isascii():
        _chain_id(chain_id, limits, "tx body")  # measures the UTF-8 bytes
    return _new(
        TxBody,
        (
            msg.version,
            chain_id,
            tuple(inputs),
            tuple(outputs),
            memo,
            msg.coinbase_height,
            masternode,
        ),
    )


def _masternode_from_pb(
    mn: pb.MasternodePayload,
) -> MasternodeRegistration | MasternodeDeregistration:
    action = mn.WhichOneof("action")
    if action == "register":
        r = mn.register
        return MasternodeRegistration(
            tier=_required_tier(r.tier, "registration"),
            collateral_index=r.collateral_index,
            operator_pubkey=_pubkey(r.operator_pubkey, "operator_pubkey"),
        )
    if action == "deregister":
        d = mn.deregister
        if not d.HasField("collateral"):
            raise DecodeError("deregistration: missing collateral outpoint")
        return MasternodeDeregistration(collateral=_outpoint_from_pb(d.collateral))
    raise DecodeError("masternode payload present but empty")


def decode_tx_body(
    body_bytes: bytes, network: Network, *, limits: Limits = DEFAULT_LIMITS
) -> TxBody:
    """Parse ``body_bytes`` into a TxBody (bounded by ``limits.max_tx_bytes``)."""
    msg = _parse(pb.TxBody, body_bytes, limits.max_tx_bytes, "tx body")
    return _tx_body_from_pb(msg, network, limits=limits)


def transaction_to_pb(tx: Transaction) -> pb.Transaction:
    """Convert a Transaction to its envelope message (body bytes kept as they are)."""
    return pb.Transaction(body_bytes=tx.body_bytes, signatures=list(tx.signatures))


def encode_transaction(tx: Transaction) -> bytes:
    """Serialize the transaction envelope: body_bytes and signatures."""
    return _serialize(transaction_to_pb(tx))


def _transaction_from_pb(
    msg: pb.Transaction,
    network: Network,
    *,
    limits: Limits = DEFAULT_LIMITS,
    size: int | None = None,
) -> Transaction:
    """Convert a parsed, size-checked Transaction message; the body is parsed from its bytes.

    *size* is ``msg.ByteSize()`` if the caller has it already.
    """
    # Repeated bytes are immutable bytes already; the slice copies them out in
    # one C call (0.3 us for a payment, against 0.5 iterating the container).
    signatures = tuple(msg.signatures[:])
    if len(signatures) > limits.max_inputs:  # bounded already by the message's size
        _count(signatures, limits.max_inputs, "signatures", Reason.TOO_MANY_ITEMS)
    for n, s in enumerate(signatures):
        if len(s) != SIGNATURE_LEN:
            _signature(s, f"signature {n}")  # raises with the index in the message
    body_bytes = msg.body_bytes
    body = _tx_body_from_pb(
        _parse(pb.TxBody, body_bytes, limits.max_block_bytes, "tx body"), network, limits=limits
    )
    return _new(
        Transaction,
        (
            body_bytes,
            signatures,
            body,
            hashlib.sha256(body_bytes).digest(),
            msg.ByteSize() if size is None else size,
        ),
    )


def decode_transaction(
    data: bytes | pb.Transaction,
    network: Network,
    *,
    max_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Transaction:
    """Decode an untrusted transaction (bytes or a message grpc already parsed).

    *max_size* defaults to ``limits.max_tx_bytes``. txid = SHA-256(body_bytes).
    """
    limit = limits.max_tx_bytes if max_size is None else max_size
    if _TX_FLAT and isinstance(data, pb.Transaction):
        # The submit path: grpc parsed it. With no message-typed field, unknown
        # fields can only sit at the top, so ``_reject_unknown``'s walk is one
        # lookup here, and the size is computed once for the limit and the tx.
        size = data.ByteSize()
        _check_size(size, limit, "transaction")
        if len(UnknownFieldSet(data)):
            raise NonCanonical("transaction: unknown fields in Transaction")
        return _transaction_from_pb(data, network, limits=limits, size=size)
    msg = _accept(pb.Transaction, data, limit, "transaction")
    return _transaction_from_pb(msg, network, limits=limits)


_TX_FLAT = all(f.type != f.TYPE_MESSAGE for f in pb.Transaction.DESCRIPTOR.fields)
"""The Transaction envelope holds only bytes fields (body and signatures)."""


def make_transaction(
    body_bytes: bytes,
    signatures: Iterable[bytes],
    network: Network,
    *,
    max_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Transaction:
    """Build a Transaction from bytes a wallet signed, exactly as a peer would decode it.

    A proposer building a large coinbase passes ``max_size=limits.max_block_bytes``.
    """
    msg = pb.Transaction(body_bytes=bytes(body_bytes), signatures=list(signatures))
    return decode_transaction(msg, network, max_size=max_size, limits=limits)


# --- headers and blocks -----------------------------------------------------------


def header_to_pb(h: BlockHeader) -> pb.BlockHeader:
    """Convert a BlockHeader to its protobuf message."""
    return pb.BlockHeader(
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
    )


def encode_header(h: BlockHeader) -> bytes:
    """Serialize a header: the ``header_bytes`` whose SHA-256 is the block hash."""
    return _serialize(header_to_pb(h))


def _header_from_pb(msg: pb.BlockHeader, *, limits: Limits = DEFAULT_LIMITS) -> BlockHeader:
    """Convert a parsed BlockHeader message.

    Every hash is 32 bytes (an absent commit or empty evidence list hashes to
    SHA-256("") by core/commit.py) and the proposer address 20.
    """
    return BlockHeader(
        version=msg.version,
        chain_id=_chain_id(msg.chain_id, limits, "header"),
        height=msg.height,
        time_ms=msg.time_ms,
        prev_block_hash=_fixed(msg.prev_block_hash, HASH_LEN, "prev_block_hash"),
        tx_root=_fixed(msg.tx_root, HASH_LEN, "tx_root"),
        last_commit_hash=_fixed(msg.last_commit_hash, HASH_LEN, "last_commit_hash"),
        validators_hash=_fixed(msg.validators_hash, HASH_LEN, "validators_hash"),
        next_validators_hash=_fixed(msg.next_validators_hash, HASH_LEN, "next_validators_hash"),
        utxo_commitment=_fixed(msg.utxo_commitment, HASH_LEN, "utxo_commitment"),
        proposer_address=_fixed(msg.proposer_address, ADDRESS_PAYLOAD_LEN, "proposer_address"),
        evidence_hash=_fixed(msg.evidence_hash, HASH_LEN, "evidence_hash"),
    )


def decode_header(data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> BlockHeader:
    """Parse untrusted ``header_bytes`` (bounded by ``limits.max_header_bytes``)."""
    return _header_from_pb(
        _parse(pb.BlockHeader, data, limits.max_header_bytes, "header"), limits=limits
    )


def block_to_pb(block: Block) -> pb.Block:
    """Convert a Block to its message; header and transaction bodies keep their bytes."""
    msg = pb.Block(
        header_bytes=block.header_bytes,
        txs=[transaction_to_pb(t) for t in block.txs],
        evidence=[evidence_to_pb(e) for e in block.evidence],
    )
    if block.last_commit is not None:
        msg.last_commit.CopyFrom(commit_to_pb(block.last_commit))
    return msg


def encode_block(block: Block) -> bytes:
    """Serialize a block."""
    return _serialize(block_to_pb(block))


KnownTx = Callable[[bytes], Transaction | None]
"""``txid -> Transaction`` this node decoded already (its mempool), or None."""


def _block_from_pb(
    msg: pb.Block,
    network: Network,
    *,
    limits: Limits = DEFAULT_LIMITS,
    known: KnownTx | None = None,
) -> Block:
    """Convert a parsed, size-checked Block message; block hash = SHA-256(header_bytes).

    Transactions after the first are bounded by ``limits.max_tx_bytes``; the
    first (the coinbase, which pays every signer) only by the block size.
    A transaction that *known* returns with the same body bytes, signatures
    and encoded size is that same object, not decoded a second time.
    """
    _count(msg.txs, limits.max_block_txs, "block txs", Reason.TOO_MANY_ITEMS)
    _count(msg.evidence, limits.max_evidence, "block evidence", Reason.TOO_MANY_ITEMS)
    header_bytes = bytes(msg.header_bytes)
    header = decode_header(header_bytes, limits=limits)
    txs = []
    sha256 = hashlib.sha256
    for n, t in enumerate(msg.txs):
        size = t.ByteSize()
        if n > 0:
            _check_size(size, limits.max_tx_bytes, f"transaction {n}")
            if known is not None:
                body = t.body_bytes
                k = known(sha256(body).digest())
                if (
                    k is not None
                    and k.size == size
                    and k.body_bytes == body
                    and k.signatures == tuple(t.signatures)
                ):
                    txs.append(k)
                    continue
        txs.append(_transaction_from_pb(t, network, limits=limits))
    last_commit = (
        _commit_from_pb(msg.last_commit, limits=limits) if msg.HasField("last_commit") else None
    )
    evidence = tuple(_evidence_from_pb(e) for e in msg.evidence)
    return Block(
        header_bytes=header_bytes,
        header=header,
        txs=tuple(txs),
        last_commit=last_commit,
        evidence=evidence,
        hash=hashlib.sha256(header_bytes).digest(),
        size=msg.ByteSize(),
    )


def decode_block(
    data: bytes | pb.Block,
    network: Network,
    *,
    max_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    known: KnownTx | None = None,
) -> Block:
    """Decode an untrusted block (bytes or a parsed message); *max_size* defaults to the limit.

    *known* (see ``_block_from_pb``) lets transactions already decoded, e.g.
    those pending in the mempool, be reused as they are.
    """
    limit = limits.max_block_bytes if max_size is None else max_size
    return _block_from_pb(
        _accept(pb.Block, data, limit, "block"), network, limits=limits, known=known
    )


def make_block(
    header: BlockHeader,
    txs: Iterable[Transaction],
    last_commit: Commit | None,
    evidence: Iterable[Evidence] = (),
) -> Block:
    """Assemble a new block (proposer side): encodes the header and fills hash and size."""
    return make_block_bytes(header, txs, last_commit, evidence)[0]


_ONE_BYTE_VARINTS = tuple(bytes((n,)) for n in range(0x80))


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of *n* >= 0 (one and two bytes without a loop)."""
    if n < 0x80:
        return _ONE_BYTE_VARINTS[n]
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_TX_BODY_TAG = b"\x0a"  # Transaction.body_bytes = 1, length-delimited
_TX_SIG_TAG = b"\x12"  # Transaction.signatures = 2, length-delimited
_BLOCK_TX_TAG = b"\x12"  # Block.txs = 2, length-delimited


_SIG_HEAD = _TX_SIG_TAG + _varint(SIGNATURE_LEN)


def _tx_wire(tx: Transaction) -> bytes:
    """Return the envelope bytes of *tx*, exactly as ``encode_transaction`` writes them."""
    body = tx.body_bytes
    parts = [_TX_BODY_TAG, _varint(len(body)), body] if body else []
    for sig in tx.signatures:
        parts += (_SIG_HEAD if len(sig) == SIGNATURE_LEN else _TX_SIG_TAG + _varint(len(sig)), sig)
    return b"".join(parts)


def make_block_bytes(
    header: BlockHeader,
    txs: Iterable[Transaction],
    last_commit: Commit | None,
    evidence: Iterable[Evidence] = (),
) -> tuple[Block, bytes]:
    """Assemble a new block and its encoding, byte for byte ``encode_block``'s output.

    Each transaction is written once, straight from its body and signatures,
    instead of being converted to a message and serialized (twice: once for
    the size, once for the bytes): a proposer's block holds thousands. The
    fields around the transactions (header = 1, last_commit = 3, evidence = 4)
    come from protobuf itself, in field order, as deterministic serialization
    lays them out; ``tests/unit/test_codec.py`` compares the two encodings.
    """
    header_bytes = encode_header(header)
    block = Block(
        header_bytes=header_bytes,
        header=header,
        txs=tuple(txs),
        last_commit=last_commit,
        evidence=tuple(evidence),
        hash=hashlib.sha256(header_bytes).digest(),
    )
    head = _serialize(pb.Block(header_bytes=header_bytes))
    tail_msg = pb.Block(evidence=[evidence_to_pb(e) for e in block.evidence])
    if last_commit is not None:
        tail_msg.last_commit.CopyFrom(commit_to_pb(last_commit))
    parts = [head]
    for tx in block.txs:
        wire = _tx_wire(tx)
        parts += (_BLOCK_TX_TAG, _varint(len(wire)), wire)
    parts.append(_serialize(tail_msg))
    data = b"".join(parts)
    return replace(block, size=len(data)), data


# --- votes, proposals, commits, evidence ------------------------------------------


def _vote_type(value: int) -> VoteType:
    if value not in (1, 2):
        raise DecodeError(f"vote type {value} out of range")
    return VoteType(value)


def vote_to_pb(v: Vote) -> pb.Vote:
    """Convert a Vote to its protobuf message."""
    return pb.Vote(
        type=cast(Any, int(v.type)),
        height=v.height,
        round=v.round,
        block_hash=v.block_hash,
        validator_address=v.validator_address,
        signature=v.signature,
    )


def _vote_from_pb(msg: pb.Vote, *, require_signature: bool = True) -> Vote:
    """Convert a parsed Vote message; ``block_hash`` is empty (nil) or 32 bytes."""
    sig = bytes(msg.signature)
    if require_signature or sig:
        sig = _signature(sig, "vote signature")
    return Vote(
        type=_vote_type(msg.type),
        height=msg.height,
        round=msg.round,
        block_hash=_hash_or_empty(msg.block_hash, "vote block_hash"),
        validator_address=_fixed(msg.validator_address, ADDRESS_PAYLOAD_LEN, "validator_address"),
        signature=sig,
    )


def encode_vote(v: Vote) -> bytes:
    """Serialize a vote."""
    return _serialize(vote_to_pb(v))


def decode_vote(data: bytes | pb.Vote, *, limits: Limits = DEFAULT_LIMITS) -> Vote:
    """Decode an untrusted, signed vote."""
    return _vote_from_pb(_accept(pb.Vote, data, limits.max_message_bytes, "vote"))


def proposal_to_pb(p: Proposal) -> pb.Proposal:
    """Convert a Proposal to its protobuf message."""
    return pb.Proposal(
        height=p.height,
        round=p.round,
        pol_round=p.pol_round,
        block_hash=p.block_hash,
        proposer_address=p.proposer_address,
        signature=p.signature,
    )


def _proposal_from_pb(msg: pb.Proposal, *, require_signature: bool = True) -> Proposal:
    """Convert a parsed Proposal message; ``pol_round`` is -1 or a round number."""
    if msg.pol_round < -1:
        raise DecodeError(f"pol_round {msg.pol_round} below -1")
    sig = bytes(msg.signature)
    if require_signature or sig:
        sig = _signature(sig, "proposal signature")
    return Proposal(
        height=msg.height,
        round=msg.round,
        pol_round=msg.pol_round,
        block_hash=_fixed(msg.block_hash, HASH_LEN, "proposal block_hash"),
        proposer_address=_fixed(msg.proposer_address, ADDRESS_PAYLOAD_LEN, "proposer_address"),
        signature=sig,
    )


def encode_proposal(p: Proposal) -> bytes:
    """Serialize a proposal."""
    return _serialize(proposal_to_pb(p))


def decode_proposal(data: bytes | pb.Proposal, *, limits: Limits = DEFAULT_LIMITS) -> Proposal:
    """Decode an untrusted, signed proposal."""
    return _proposal_from_pb(_accept(pb.Proposal, data, limits.max_message_bytes, "proposal"))


def commit_sig_to_pb(s: CommitSig) -> pb.CommitSig:
    """Convert a CommitSig to its protobuf message."""
    return pb.CommitSig(validator_address=s.validator_address, signature=s.signature)


def _commit_sig_from_pb(msg: pb.CommitSig) -> CommitSig:
    """Convert a parsed CommitSig message (20-byte address, 64-byte signature)."""
    return CommitSig(
        validator_address=_fixed(msg.validator_address, ADDRESS_PAYLOAD_LEN, "commit address"),
        signature=_signature(msg.signature, "commit signature"),
    )


def commit_to_pb(c: Commit) -> pb.Commit:
    """Convert a Commit to its protobuf message."""
    return pb.Commit(
        height=c.height,
        round=c.round,
        block_hash=c.block_hash,
        signatures=[commit_sig_to_pb(s) for s in c.signatures],
    )


def _commit_from_pb(msg: pb.Commit, *, limits: Limits = DEFAULT_LIMITS) -> Commit:
    """Convert a parsed Commit message; a commit always names a 32-byte block hash."""
    _count(msg.signatures, limits.max_validators, "commit signatures")
    return Commit(
        height=msg.height,
        round=msg.round,
        block_hash=_fixed(msg.block_hash, HASH_LEN, "commit block_hash"),
        signatures=tuple(_commit_sig_from_pb(s) for s in msg.signatures),
    )


def encode_commit(c: Commit) -> bytes:
    """Serialize a commit."""
    return _serialize(commit_to_pb(c))


def decode_commit(data: bytes | pb.Commit, *, limits: Limits = DEFAULT_LIMITS) -> Commit:
    """Decode an untrusted commit (bounded by ``limits.max_commit_bytes``)."""
    return _commit_from_pb(
        _accept(pb.Commit, data, limits.max_commit_bytes, "commit"), limits=limits
    )


def evidence_to_pb(e: Evidence) -> pb.Evidence:
    """Convert evidence to its protobuf message."""
    msg = pb.Evidence()
    msg.duplicate_vote.vote_a.CopyFrom(vote_to_pb(e.vote_a))
    msg.duplicate_vote.vote_b.CopyFrom(vote_to_pb(e.vote_b))
    return msg


def _evidence_from_pb(msg: pb.Evidence) -> Evidence:
    """Convert a parsed Evidence message; both signed votes must be present."""
    if msg.WhichOneof("kind") != "duplicate_vote":
        raise DecodeError("evidence: unknown or missing kind")
    dv = msg.duplicate_vote
    if not (dv.HasField("vote_a") and dv.HasField("vote_b")):
        raise DecodeError("duplicate-vote evidence needs two votes")
    return DuplicateVoteEvidence(vote_a=_vote_from_pb(dv.vote_a), vote_b=_vote_from_pb(dv.vote_b))


def encode_evidence(e: Evidence) -> bytes:
    """Serialize one evidence item."""
    return _serialize(evidence_to_pb(e))


def decode_evidence(data: bytes | pb.Evidence, *, limits: Limits = DEFAULT_LIMITS) -> Evidence:
    """Decode an untrusted evidence item."""
    return _evidence_from_pb(_accept(pb.Evidence, data, limits.max_message_bytes, "evidence"))


# --- validators ---------------------------------------------------------------------


def validator_to_pb(v: Validator) -> pb.Validator:
    """Convert a Validator to its protobuf message."""
    msg = pb.Validator(
        address=v.address,
        pubkey=v.pubkey,
        power=v.power,
        tier=cast(Any, 0 if v.tier is None else int(v.tier)),
        # validators_hash (core/commit.py) covers it, so the wire must carry it.
        reward_pubkey_hash=v.reward_pubkey_hash,
    )
    if v.collateral is not None:
        msg.collateral.CopyFrom(outpoint_to_pb(v.collateral))
    return msg


def _validator_from_pb(msg: pb.Validator) -> Validator:
    """Convert a parsed Validator message; the address must be SHA-256(pubkey)[:20]."""
    pubkey = _pubkey(msg.pubkey, "validator pubkey")
    address = _fixed(msg.address, ADDRESS_PAYLOAD_LEN, "validator address")
    if pubkey_hash(pubkey) != address:
        raise DecodeError("validator address does not match its pubkey")
    if msg.power == 0:
        raise DecodeError("validator with zero power")
    reward = bytes(msg.reward_pubkey_hash)
    if len(reward) not in (0, ADDRESS_PAYLOAD_LEN):
        raise DecodeError("validator reward_pubkey_hash must be empty or 20 bytes")
    return Validator(
        address=address,
        pubkey=pubkey,
        power=msg.power,
        tier=_optional_tier(msg.tier, "validator"),
        collateral=_outpoint_from_pb(msg.collateral) if msg.HasField("collateral") else None,
        reward_pubkey_hash=reward,
    )


def validator_set_to_pb(vs: ValidatorSet) -> pb.ValidatorSet:
    """Convert a ValidatorSet to its message (validators in address order)."""
    return pb.ValidatorSet(validators=[validator_to_pb(v) for v in vs.validators])


def _validator_set_from_pb(
    msg: pb.ValidatorSet, *, limits: Limits = DEFAULT_LIMITS
) -> ValidatorSet:
    """Convert a parsed ValidatorSet message; duplicate addresses are rejected."""
    _count(msg.validators, limits.max_validators, "validators")
    validators = tuple(_validator_from_pb(v) for v in msg.validators)
    if len({v.address for v in validators}) != len(validators):
        raise DecodeError("validator set lists an address twice")
    return ValidatorSet(validators)


def encode_validator_set(vs: ValidatorSet) -> bytes:
    """Serialize a validator set."""
    return _serialize(validator_set_to_pb(vs))


def decode_validator_set(
    data: bytes | pb.ValidatorSet, *, limits: Limits = DEFAULT_LIMITS
) -> ValidatorSet:
    """Decode an untrusted validator set."""
    msg = _accept(pb.ValidatorSet, data, limits.max_validator_set_bytes, "validator set")
    return _validator_set_from_pb(msg, limits=limits)


# --- public converters for messages grpc already parsed -------------------------------
#
# Each checks unknown fields over the whole message, then converts. The
# ``decode_*`` functions above do the same for bytes and also bound the size;
# prefer them for anything that arrives from a peer or client.


def outpoint_from_pb(msg: pb.OutPoint) -> OutPoint:
    """Convert an OutPoint message; txid must be 32 bytes."""
    _reject_unknown(msg, "outpoint")
    return _outpoint_from_pb(msg)


def tx_body_from_pb(msg: pb.TxBody, network: Network, *, limits: Limits = DEFAULT_LIMITS) -> TxBody:
    """Convert a TxBody message (shape checks only; see module docstring)."""
    _reject_unknown(msg, "tx body")
    return _tx_body_from_pb(msg, network, limits=limits)


def transaction_from_pb(
    msg: pb.Transaction, network: Network, *, limits: Limits = DEFAULT_LIMITS
) -> Transaction:
    """Convert a Transaction message (size-bounded like ``decode_transaction``)."""
    return decode_transaction(msg, network, limits=limits)


def header_from_pb(msg: pb.BlockHeader, *, limits: Limits = DEFAULT_LIMITS) -> BlockHeader:
    """Convert a BlockHeader message."""
    _reject_unknown(msg, "header")
    return _header_from_pb(msg, limits=limits)


def block_from_pb(msg: pb.Block, network: Network, *, limits: Limits = DEFAULT_LIMITS) -> Block:
    """Convert a Block message (size-bounded like ``decode_block``)."""
    return decode_block(msg, network, limits=limits)


def vote_from_pb(msg: pb.Vote, *, require_signature: bool = True) -> Vote:
    """Convert a Vote message; ``block_hash`` is empty (nil) or 32 bytes."""
    _reject_unknown(msg, "vote")
    return _vote_from_pb(msg, require_signature=require_signature)


def proposal_from_pb(msg: pb.Proposal, *, require_signature: bool = True) -> Proposal:
    """Convert a Proposal message; ``pol_round`` is -1 or a round number."""
    _reject_unknown(msg, "proposal")
    return _proposal_from_pb(msg, require_signature=require_signature)


def commit_sig_from_pb(msg: pb.CommitSig) -> CommitSig:
    """Convert a CommitSig message (20-byte address, 64-byte signature)."""
    _reject_unknown(msg, "commit sig")
    return _commit_sig_from_pb(msg)


def commit_from_pb(msg: pb.Commit, *, limits: Limits = DEFAULT_LIMITS) -> Commit:
    """Convert a Commit message; a commit always names a 32-byte block hash."""
    _reject_unknown(msg, "commit")
    return _commit_from_pb(msg, limits=limits)


def evidence_from_pb(msg: pb.Evidence) -> Evidence:
    """Convert an Evidence message; both signed votes must be present."""
    _reject_unknown(msg, "evidence")
    return _evidence_from_pb(msg)


def validator_from_pb(msg: pb.Validator) -> Validator:
    """Convert a Validator message; the address must be SHA-256(pubkey)[:20]."""
    _reject_unknown(msg, "validator")
    return _validator_from_pb(msg)


def validator_set_from_pb(msg: pb.ValidatorSet, *, limits: Limits = DEFAULT_LIMITS) -> ValidatorSet:
    """Convert a ValidatorSet message; duplicate addresses are rejected."""
    _reject_unknown(msg, "validator set")
    return _validator_set_from_pb(msg, limits=limits)
