"""Fuzzing the decoders: whatever the bytes, they succeed or raise a DecodeError subclass.

Inputs: random bytes, truncations and bit flips of valid encodings, valid
protobuf with oversized or out-of-range fields, and deeply nested junk. Any
other exception (protobuf's own, ValueError, KeyError, RecursionError, ...)
would reach a gRPC handler or a peer loop as a crash, so it fails the test.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timecoin._proto.types.v1 import types_pb2 as pb
from timecoin.core.errors import DecodeError
from timecoin.core.keys import KeyPair
from timecoin.core.types import (
    BlockHeader,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    MasternodeRegistration,
    MasternodeTier,
    Network,
    OutPoint,
    Proposal,
    TxBody,
    TxIn,
    TxOut,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from timecoin.wire import codec
from timecoin.wire.limits import Limits

NET = Network.TEST
# TIMECOIN_FUZZ_EXAMPLES=20000 for a long run; the default keeps the suite fast.
FUZZ_EXAMPLES = int(os.environ.get("TIMECOIN_FUZZ_EXAMPLES", "400"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@functools.cache
def key(i: int) -> KeyPair:
    return KeyPair.from_secret(hashlib.sha256(b"fuzz" + bytes([i])).digest())


def h32(i: int) -> bytes:
    return hashlib.sha256(bytes([i])).digest()


@functools.cache
def samples() -> dict[str, bytes]:
    """One valid encoding per decoder, the seeds for truncation and bit flips."""
    body = TxBody(
        version=1,
        chain_id="timecoin-devnet-1",
        inputs=(TxIn(OutPoint(h32(1), 0), key(1).pubkey), TxIn(OutPoint(h32(2), 5), key(2).pubkey)),
        outputs=(TxOut(5000, key(3).address_payload), TxOut(70, key(4).address_payload)),
        memo=b"memo",
        masternode=MasternodeRegistration(MasternodeTier.BRONZE, 0, key(5).pubkey),
    )
    tx = codec.make_transaction(codec.encode_tx_body(body, NET), [bytes(64)] * 2, NET)
    header = BlockHeader(
        1,
        "timecoin-devnet-1",
        3,
        10**12,
        h32(1),
        h32(2),
        h32(3),
        h32(4),
        h32(5),
        h32(6),
        key(1).address_payload,
        h32(10),
    )
    vote = Vote(VoteType.PREVOTE, 3, 0, h32(7), key(1).address_payload, bytes(range(64)))
    commit = Commit(2, 0, h32(8), (CommitSig(key(1).address_payload, bytes(64)),) * 2)
    ev = DuplicateVoteEvidence(
        vote, Vote(VoteType.PREVOTE, 3, 0, b"", vote.validator_address, bytes(64))
    )
    block = codec.make_block(header, [tx, tx], commit, [ev])
    vs = ValidatorSet(
        tuple(
            Validator(
                key(i).address_payload, key(i).pubkey, 1, MasternodeTier.BRONZE, OutPoint(h32(i), 1)
            )
            for i in range(3)
        )
    )
    return {
        "tx": codec.encode_transaction(tx),
        "body": tx.body_bytes,
        "header": block.header_bytes,
        "block": codec.encode_block(block),
        "vote": codec.encode_vote(vote),
        "proposal": codec.encode_proposal(
            Proposal(3, 1, 0, h32(9), key(2).address_payload, bytes(64))
        ),
        "commit": codec.encode_commit(commit),
        "evidence": codec.encode_evidence(ev),
        "validator_set": codec.encode_validator_set(vs),
    }


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "tx": lambda b: codec.decode_transaction(b, NET),
    "body": lambda b: codec.decode_tx_body(b, NET),
    "header": codec.decode_header,
    "block": lambda b: codec.decode_block(b, NET),
    "vote": codec.decode_vote,
    "proposal": codec.decode_proposal,
    "commit": codec.decode_commit,
    "evidence": codec.decode_evidence,
    "validator_set": codec.decode_validator_set,
}
names = st.sampled_from(sorted(DECODERS))


def only_decode_errors(name: str, data: bytes) -> None:
    try:
        DECODERS[name](data)
    except DecodeError:
        pass


def test_samples_decode() -> None:
    # The seeds are valid, so mutations start from bytes that get deep into the decoders.
    for name, data in samples().items():
        DECODERS[name](data)


@FUZZ
@given(names, st.binary(max_size=600))
def test_random_bytes(name: str, data: bytes) -> None:
    only_decode_errors(name, data)


@FUZZ
@given(names, st.data())
def test_truncations(name: str, data: st.DataObject) -> None:
    seed = samples()[name]
    cut = data.draw(st.integers(0, len(seed)))
    only_decode_errors(name, seed[:cut])


@FUZZ
@given(names, st.data())
def test_bit_flips(name: str, data: st.DataObject) -> None:
    seed = bytearray(samples()[name])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(seed) - 1))
        seed[pos] ^= 1 << data.draw(st.integers(0, 7))
    only_decode_errors(name, bytes(seed))


@FUZZ
@given(names, st.data())
def test_splices(name: str, data: st.DataObject) -> None:
    # Chunks of other valid messages pasted in: plausible tags with wrong meanings.
    seed = samples()[name]
    other = samples()[data.draw(names)]
    a = data.draw(st.integers(0, len(seed)))
    b = data.draw(st.integers(0, len(other)))
    c = data.draw(st.integers(b, len(other)))
    only_decode_errors(name, seed[:a] + other[b:c] + seed[a:])


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _nested(depth: int, field: int) -> bytes:
    """A length-delimited field nested *depth* times (valid framing, absurd depth)."""
    inner = b""
    tag = _varint(field << 3 | 2)
    for _ in range(depth):
        inner = tag + _varint(len(inner)) + inner
    return inner


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize(
    "junk",
    [
        _nested(200, 1),  # field 1 is a message in several types: real recursion
        _nested(200, 4),
        _nested(200, 99),  # unknown field holding more unknown fields
        b"\x0b" * 300,  # 300 unterminated start-group tags
        b"\x0b" * 150 + b"\x0c" * 150,  # 150 nested, properly closed groups
        b"\x0a\xff\xff\xff\xff\x0f",  # length prefix of 4 GiB
        b"\x08" + b"\xff" * 20,  # over-long varint
        b"\x12\x02\xff\xfe",  # invalid UTF-8 where a string field sits
        b"\x07",  # wire type 7 does not exist
        b"\x00",  # field number 0
    ],
    ids=lambda x: x[:6].hex(),
)
def test_deeply_nested_and_malformed_junk(name: str, junk: bytes) -> None:
    only_decode_errors(name, junk)
    only_decode_errors(name, samples()[name] + junk)


def test_block_of_nested_evidence_junk() -> None:
    # Evidence (field 4 of Block) holding DuplicateVote holding Votes nested in junk.
    ev = _nested(120, 1)
    data = samples()["block"] + b"\x22" + _varint(len(ev)) + ev
    only_decode_errors("block", data)


# --- valid protobuf, hostile values ----------------------------------------------------------

blobs = st.binary(max_size=70)
texts = st.text(max_size=80)
ints = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@FUZZ
@given(
    st.lists(st.tuples(blobs, ints, blobs), max_size=4),
    st.lists(st.tuples(u64, texts), max_size=4),
    blobs,
    st.integers(0, 7),
    blobs,
    texts,
    st.lists(blobs, max_size=4),
)
def test_arbitrary_tx_field_values(
    inputs: list[tuple[bytes, int, bytes]],
    outputs: list[tuple[int, str]],
    memo: bytes,
    tier: int,
    op_key: bytes,
    chain_id: str,
    sigs: list[bytes],
) -> None:
    msg = pb.TxBody(version=1, chain_id=chain_id, memo=memo)
    for txid, index, pubkey in inputs:
        msg.inputs.add(prev_out=pb.OutPoint(txid=txid, index=index), pubkey=pubkey)
    for amount, address in outputs:
        msg.outputs.add(amount=amount, address=address)
    if tier:
        msg.masternode.register.tier = tier  # type: ignore[assignment]
        msg.masternode.register.operator_pubkey = op_key
    envelope = pb.Transaction(body_bytes=msg.SerializeToString(), signatures=sigs)
    only_decode_errors("tx", envelope.SerializeToString())
    try:
        codec.decode_transaction(envelope, NET)
    except DecodeError:
        pass


@FUZZ
@given(
    st.integers(-(2**31), 2**31 - 1),
    u64,
    ints,
    blobs,
    blobs,
    blobs,
    st.integers(-(2**31), 2**31 - 1),
)
def test_arbitrary_consensus_field_values(
    vtype: int, height: int, rnd: int, h: bytes, addr: bytes, sig: bytes, pol: int
) -> None:
    v = pb.Vote(height=height, round=rnd, block_hash=h, validator_address=addr, signature=sig)
    v.type = vtype  # type: ignore[assignment]
    only_decode_errors("vote", v.SerializeToString())
    p = pb.Proposal(
        height=height, round=rnd, pol_round=pol, block_hash=h, proposer_address=addr, signature=sig
    )
    only_decode_errors("proposal", p.SerializeToString())
    c = pb.Commit(height=height, round=rnd, block_hash=h)
    c.signatures.add(validator_address=addr, signature=sig)
    only_decode_errors("commit", c.SerializeToString())
    e = pb.Evidence()
    e.duplicate_vote.vote_a.CopyFrom(v)
    e.duplicate_vote.vote_b.CopyFrom(v)
    only_decode_errors("evidence", e.SerializeToString())
    val = pb.Validator(address=addr, pubkey=sig[:33], power=height)
    val.tier = vtype  # type: ignore[assignment]
    only_decode_errors("validator_set", pb.ValidatorSet(validators=[val]).SerializeToString())
    hdr = pb.BlockHeader(
        chain_id="c",
        height=height,
        prev_block_hash=h,
        tx_root=h,
        validators_hash=h,
        next_validators_hash=h,
        utxo_commitment=h,
        proposer_address=addr,
        last_commit_hash=sig,
    )
    only_decode_errors("header", hdr.SerializeToString())


def test_oversized_fields_are_rejected_not_crashed() -> None:
    base = pb.TxBody.FromString(samples()["body"])
    for mutate in (
        lambda m: setattr(m, "memo", bytes(50_000)),
        lambda m: setattr(m, "chain_id", "c" * 50_000),
        lambda m: setattr(m.outputs[0], "address", "TIME0" + "z" * 50_000),
        lambda m: setattr(m.inputs[0], "pubkey", bytes(50_000)),
        lambda m: setattr(m.inputs[0].prev_out, "txid", bytes(50_000)),
        lambda m: m.inputs.extend([m.inputs[0]] * 1_500),
        lambda m: m.outputs.extend([m.outputs[0]] * 1_500),
    ):
        m = pb.TxBody()
        m.CopyFrom(base)
        mutate(m)
        with pytest.raises(DecodeError):
            codec.decode_tx_body(m.SerializeToString(), NET)
        envelope = pb.Transaction(body_bytes=m.SerializeToString(), signatures=[bytes(64)])
        with pytest.raises(DecodeError):
            codec.decode_transaction(envelope.SerializeToString(), NET, max_size=10**6)
    with pytest.raises(DecodeError):
        codec.decode_transaction(
            pb.Transaction(body_bytes=samples()["body"], signatures=[bytes(64)] * 1_001),
            NET,
            max_size=10**6,
        )
    with pytest.raises(DecodeError):
        codec.decode_block(bytes(4_000_001), NET)
    with pytest.raises(DecodeError):
        codec.decode_commit(
            pb.Commit(block_hash=h32(1), signatures=[pb.CommitSig()] * 3).SerializeToString(),
            limits=Limits(max_validators=2),
        )


def test_from_pb_converters_only_raise_decode_errors() -> None:
    # Default (empty) messages exercise every "missing field" path of the converters.
    converters: list[Callable[[], Any]] = [
        lambda: codec.outpoint_from_pb(pb.OutPoint()),
        lambda: codec.header_from_pb(pb.BlockHeader()),
        lambda: codec.block_from_pb(pb.Block(), NET),
        lambda: codec.vote_from_pb(pb.Vote()),
        lambda: codec.proposal_from_pb(pb.Proposal()),
        lambda: codec.commit_sig_from_pb(pb.CommitSig()),
        lambda: codec.commit_from_pb(pb.Commit()),
        lambda: codec.evidence_from_pb(pb.Evidence()),
        lambda: codec.validator_from_pb(pb.Validator()),
    ]
    for convert in converters:
        with pytest.raises(DecodeError):
            convert()
    # An empty body is a well-formed (if useless) shape; the ledger rejects it, not the codec.
    assert codec.tx_body_from_pb(pb.TxBody(), NET) == TxBody(0, "", (), ())
    assert codec.transaction_from_pb(pb.Transaction(), NET).txid == hashlib.sha256(b"").digest()
