"""Wire codec: round trips for every type, exact-bytes hashing, and strict rejections."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timecoin._proto.types.v1 import types_pb2 as pb
from timecoin.core.address import encode_address
from timecoin.core.errors import (
    BadAddress,
    BadPubkey,
    DecodeError,
    NonCanonical,
    Oversized,
    Reason,
)
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.types import (
    BlockHeader,
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
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
from timecoin.wire import codec
from timecoin.wire.limits import DEFAULT_LIMITS, Limits

NET = Network.TEST
CHAIN = "timecoin-devnet-1"


@functools.cache
def key(i: int) -> KeyPair:
    return KeyPair.from_secret(hashlib.sha256(b"codec-test" + bytes([i])).digest())


def h32(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def sig(i: int) -> bytes:
    return hashlib.sha512(i.to_bytes(8, "big")).digest()  # 64 bytes of shape, not a real signature


def body(n_in: int = 2, n_out: int = 2, **kw: object) -> TxBody:
    base = TxBody(
        version=1,
        chain_id=CHAIN,
        inputs=tuple(TxIn(OutPoint(h32(i), i), key(i).pubkey) for i in range(n_in)),
        outputs=tuple(TxOut(1000 * (i + 1), key(10 + i).address_payload) for i in range(n_out)),
        memo=b"hello",
    )
    return base._replace(**kw)  # type: ignore[arg-type]


def header(**kw: object) -> BlockHeader:
    base = BlockHeader(
        version=1,
        chain_id=CHAIN,
        height=7,
        time_ms=1_700_000_000_000,
        prev_block_hash=h32(1),
        tx_root=h32(2),
        last_commit_hash=h32(3),
        validators_hash=h32(4),
        next_validators_hash=h32(5),
        utxo_commitment=h32(6),
        proposer_address=key(1).address_payload,
        evidence_hash=h32(7),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def vote(i: int = 1, **kw: object) -> Vote:
    base = Vote(VoteType.PRECOMMIT, 7, 0, h32(9), key(i).address_payload, sig(i))
    return replace(base, **kw)  # type: ignore[arg-type]


def commit(n: int = 3) -> Commit:
    return Commit(6, 1, h32(8), tuple(CommitSig(key(i).address_payload, sig(i)) for i in range(n)))


def validator(i: int, **kw: object) -> Validator:
    base = Validator(
        address=key(i).address_payload,
        pubkey=key(i).pubkey,
        power=10,
        tier=MasternodeTier.SILVER,
        collateral=OutPoint(h32(100 + i), 0),
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def tx(b: TxBody | None = None) -> Transaction:
    b = body() if b is None else b
    return codec.make_transaction(
        codec.encode_tx_body(b, NET), [sig(i) for i in range(len(b.inputs))], NET
    )


# --- transactions ---------------------------------------------------------------


@pytest.mark.parametrize(
    "b",
    [
        body(),
        body(memo=b""),
        body(n_in=0, n_out=3, coinbase_height=42, memo=b""),
        body(
            masternode=MasternodeRegistration(MasternodeTier.GOLD, 1, key(50).pubkey),
        ),
        body(masternode=MasternodeDeregistration(OutPoint(h32(77), 3))),
        body(n_in=1, n_out=0),
    ],
    ids=["plain", "no-memo", "coinbase", "register", "deregister", "no-outputs"],
)
def test_transaction_round_trip(b: TxBody) -> None:
    t = tx(b)
    assert t.body == b
    assert t.txid == hashlib.sha256(t.body_bytes).digest()
    assert t.size == len(codec.encode_transaction(t))
    again = codec.decode_transaction(codec.encode_transaction(t), NET)
    assert again == t
    assert codec.decode_transaction(codec.transaction_to_pb(t), NET) == t
    assert codec.decode_tx_body(t.body_bytes, NET) == b


def test_txid_hashes_received_bytes_not_a_re_encoding() -> None:
    b = body()
    msg = codec.tx_body_to_pb(b, NET)
    canonical = msg.SerializeToString(deterministic=True)
    # Same fields, written in reverse field order: valid protobuf another encoder may emit.
    parts = []
    for fd, value in reversed(msg.ListFields()):
        single = pb.TxBody()
        if fd.is_repeated:
            getattr(single, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(single, fd.name).CopyFrom(value)
        else:
            setattr(single, fd.name, value)
        parts.append(single.SerializeToString())
    reordered = b"".join(parts)
    assert reordered != canonical
    t = codec.make_transaction(reordered, [sig(0), sig(1)], NET)
    assert t.body == b
    assert t.body_bytes == reordered
    assert t.txid == hashlib.sha256(reordered).digest() != hashlib.sha256(canonical).digest()


def test_outputs_are_decoded_for_the_node_network() -> None:
    t = tx()
    with pytest.raises(BadAddress):
        codec.decode_tx_body(t.body_bytes, Network.MAIN)
    msg = codec.tx_body_to_pb(body(), NET)
    msg.outputs[0].address = "TIME0notanaddress"
    with pytest.raises(BadAddress):
        codec.decode_tx_body(msg.SerializeToString(), NET)


def _body_msg() -> pb.TxBody:
    return codec.tx_body_to_pb(body(), NET)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda m: setattr(m.inputs[0].prev_out, "txid", b"\x01" * 31), DecodeError),
        (lambda m: m.inputs[0].ClearField("prev_out"), DecodeError),
        (lambda m: setattr(m.inputs[0], "pubkey", key(1).pubkey[:32]), BadPubkey),
        (lambda m: setattr(m.inputs[0], "pubkey", b"\x04" + bytes(64)), BadPubkey),
        (lambda m: setattr(m, "memo", bytes(257)), Oversized),
        (lambda m: setattr(m, "chain_id", "x" * 65), Oversized),
        (lambda m: setattr(m, "chain_id", "\U0001f600" * 17), Oversized),  # 17 chars, 68 bytes
        (lambda m: m.masternode.SetInParent(), DecodeError),
        (lambda m: setattr(m.masternode.register, "tier", 0), DecodeError),
        (lambda m: setattr(m.masternode.register, "tier", 4), DecodeError),
        (lambda m: m.masternode.deregister.SetInParent(), DecodeError),
    ],
)
def test_tx_body_shape_rejections(
    mutate: Callable[[pb.TxBody], object], error: type[Exception]
) -> None:
    m = _body_msg()
    mutate(m)
    with pytest.raises(error):
        codec.decode_tx_body(m.SerializeToString(), NET)


def test_input_errors_name_the_first_problem_in_field_order() -> None:
    # A missing prev_out is named as such (its empty txid is not "the wrong
    # length"), and a bad key is reported before a short outpoint txid.
    m = _body_msg()
    m.inputs[0].ClearField("prev_out")
    with pytest.raises(DecodeError, match="missing prev_out"):
        codec.decode_tx_body(m.SerializeToString(), NET)
    m = _body_msg()
    m.inputs[0].prev_out.txid = b"\x01" * 31
    m.inputs[0].pubkey = b"\x04" + bytes(32)
    with pytest.raises(BadPubkey):
        codec.decode_tx_body(m.SerializeToString(), NET)
    m.inputs[0].pubkey = key(1).pubkey
    with pytest.raises(DecodeError, match="outpoint txid must be 32 bytes") as info:
        codec.decode_tx_body(m.SerializeToString(), NET)
    assert not isinstance(info.value, BadPubkey)


def test_chain_id_is_bounded_in_bytes_not_characters() -> None:
    m = _body_msg()
    m.chain_id = "\U0001f600" * 16  # 64 bytes: the limit
    assert codec.decode_tx_body(m.SerializeToString(), NET).chain_id == m.chain_id


def test_input_key_off_the_curve_fails_at_its_signature_check() -> None:
    # Decoding checks the shape; the curve point is checked where the key is
    # used, and the error still names the key rather than the signature.
    from timecoin.core.tx import check_signatures, signatures_valid

    m = _body_msg()
    m.inputs[0].pubkey = b"\x02" + b"\xff" * 32  # x >= p: not a field element
    body = m.SerializeToString()
    tx = codec.make_transaction(body, [bytes(64)] * len(m.inputs), NET)
    with pytest.raises(BadPubkey) as info:
        check_signatures(tx, "any-chain")
    assert info.value.reason is Reason.BAD_PUBKEY and "input 0" in info.value.message
    assert not signatures_valid(tx, "any-chain")


def test_register_payload_needs_valid_operator_key() -> None:
    m = _body_msg()
    m.masternode.register.tier = 1
    m.masternode.register.operator_pubkey = b"\x02" + bytes(32)  # x = 0 is not on the curve
    with pytest.raises(BadPubkey):
        codec.decode_tx_body(m.SerializeToString(), NET)


def test_memo_bound_carries_memo_reason() -> None:
    m = _body_msg()
    m.memo = bytes(DEFAULT_LIMITS.max_memo_bytes)
    codec.decode_tx_body(m.SerializeToString(), NET)  # exactly at the bound is fine
    m.memo = bytes(DEFAULT_LIMITS.max_memo_bytes + 1)
    with pytest.raises(Oversized) as info:
        codec.decode_tx_body(m.SerializeToString(), NET)
    assert info.value.reason is Reason.MEMO_TOO_LARGE


def test_input_and_output_counts_are_bounded() -> None:
    small = Limits(max_inputs=2, max_outputs=2, max_validators=3)
    codec.decode_tx_body(codec.encode_tx_body(body(2, 2), NET), NET, limits=small)
    with pytest.raises(Oversized) as info:
        codec.decode_tx_body(codec.encode_tx_body(body(3, 1), NET), NET, limits=small)
    assert info.value.reason is Reason.TOO_MANY_ITEMS
    with pytest.raises(Oversized):
        codec.decode_tx_body(codec.encode_tx_body(body(1, 3), NET), NET, limits=small)
    # A coinbase pays the proposer and every signer: bounded by the validator count.
    cb = body(0, 4, coinbase_height=1)
    assert codec.decode_tx_body(codec.encode_tx_body(cb, NET), NET, limits=small) == cb
    with pytest.raises(Oversized):
        codec.decode_tx_body(codec.encode_tx_body(body(0, 5), NET), NET, limits=small)


def test_signature_shape_and_count() -> None:
    b = codec.encode_tx_body(body(), NET)
    for bad in (b"", bytes(63), bytes(65)):
        with pytest.raises(DecodeError):
            codec.make_transaction(b, [sig(0), bad], NET)
    with pytest.raises(Oversized):
        codec.make_transaction(b, [sig(i) for i in range(3)], NET, limits=Limits(max_inputs=2))


def test_size_checked_before_parsing() -> None:
    limit = Limits(max_tx_bytes=500)
    t = tx()
    data = codec.encode_transaction(t)
    assert len(data) <= 500
    codec.decode_transaction(data, NET, limits=limit)
    with pytest.raises(Oversized):
        codec.decode_transaction(data, NET, max_size=len(data) - 1)
    # Garbage over the bound is refused as Oversized without being parsed.
    with pytest.raises(Oversized):
        codec.decode_transaction(b"\xff" * 501, NET, limits=limit)
    # An already parsed message is bounded by its encoded size.
    with pytest.raises(Oversized):
        codec.decode_transaction(codec.transaction_to_pb(t), NET, max_size=10)


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(DecodeError):
        codec.decode_transaction("abc", NET)  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        codec.decode_vote(12)  # type: ignore[arg-type]
    assert codec.decode_transaction(bytearray(codec.encode_transaction(tx())), NET) == tx()


# --- unknown fields -----------------------------------------------------------------

UNKNOWN = b"\xf8\x07\x01"  # field 127, varint 1


def test_unknown_fields_rejected_everywhere() -> None:
    t = tx()
    with pytest.raises(NonCanonical):
        codec.decode_transaction(codec.encode_transaction(t) + UNKNOWN, NET)
    with pytest.raises(NonCanonical):
        codec.make_transaction(t.body_bytes + UNKNOWN, [sig(0), sig(1)], NET)
    # A message grpc already parsed (the submit path) is held to the same rules.
    parsed_tx = pb.Transaction.FromString(codec.encode_transaction(t) + UNKNOWN)
    with pytest.raises(NonCanonical):
        codec.decode_transaction(parsed_tx, NET)
    clean = pb.Transaction.FromString(codec.encode_transaction(t))
    assert codec.decode_transaction(clean, NET) == t
    with pytest.raises(Oversized):
        codec.decode_transaction(clean, NET, max_size=clean.ByteSize() - 1)
    # Nested: inside inputs[0].prev_out.
    m = _body_msg()
    op = m.inputs[0].prev_out.SerializeToString() + UNKNOWN
    inp = (
        pb.TxInput(pubkey=m.inputs[0].pubkey).SerializeToString() + b"\x0a" + bytes([len(op)]) + op
    )
    m.ClearField("inputs")
    raw = m.SerializeToString() + b"\x1a" + bytes([len(inp)]) + inp
    parsed = pb.TxBody.FromString(raw)
    assert len(parsed.inputs) == 1
    with pytest.raises(NonCanonical):
        codec.decode_tx_body(raw, NET)
    with pytest.raises(NonCanonical):
        codec.tx_body_from_pb(parsed, NET)


def test_unknown_field_in_nested_block_commit_rejected() -> None:
    blk = codec.make_block(header(), [tx()], commit())
    msg = codec.block_to_pb(blk)
    cs = msg.last_commit.signatures[0].SerializeToString() + UNKNOWN
    c = pb.Commit.FromString(msg.last_commit.SerializeToString() + b"\x22" + bytes([len(cs)]) + cs)
    msg.last_commit.CopyFrom(c)
    with pytest.raises(NonCanonical):
        codec.decode_block(msg.SerializeToString(), NET)
    with pytest.raises(NonCanonical):
        codec.decode_block(msg, NET)
    with pytest.raises(NonCanonical):
        codec.commit_from_pb(c)


def test_unknown_field_in_header_bytes_rejected() -> None:
    hb = codec.encode_header(header()) + UNKNOWN
    with pytest.raises(NonCanonical):
        codec.decode_header(hb)


# --- headers and blocks ---------------------------------------------------------------


def test_header_round_trip_and_hash() -> None:
    h = header()
    hb = codec.encode_header(h)
    assert codec.decode_header(hb) == h
    assert codec.header_from_pb(codec.header_to_pb(h)) == h
    blk = codec.make_block(h, [], None)
    assert blk.hash == hashlib.sha256(hb).digest()


@pytest.mark.parametrize(
    "field",
    [
        "prev_block_hash",
        "tx_root",
        "last_commit_hash",
        "validators_hash",
        "next_validators_hash",
        "utxo_commitment",
        "evidence_hash",
    ],
)
def test_header_hash_fields_must_be_32_bytes(field: str) -> None:
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(DecodeError):
            codec.decode_header(codec.encode_header(header(**{field: bad})))


def test_header_other_shape_rejections() -> None:
    with pytest.raises(DecodeError):
        codec.decode_header(codec.encode_header(header(proposer_address=bytes(32))))
    with pytest.raises(Oversized):
        codec.decode_header(codec.encode_header(header(chain_id="c" * 65)))
    with pytest.raises(Oversized):
        codec.decode_header(bytes(DEFAULT_LIMITS.max_header_bytes + 1))


def test_block_round_trip() -> None:
    coinbase = tx(body(0, 2, coinbase_height=7, memo=b""))
    blk = codec.make_block(
        header(),
        [coinbase, tx()],
        commit(),
        [DuplicateVoteEvidence(vote(1), vote(1, block_hash=b""))],
    )
    data = codec.encode_block(blk)
    assert blk.size == len(data)
    back = codec.decode_block(data, NET)
    assert back == blk
    assert back.hash == hashlib.sha256(back.header_bytes).digest()
    assert codec.decode_block(codec.block_to_pb(blk), NET) == blk
    assert codec.block_from_pb(codec.block_to_pb(blk), NET) == blk
    first = codec.make_block(header(height=1), [coinbase], None)
    assert codec.decode_block(codec.encode_block(first), NET) == first
    assert first.last_commit is None


def test_block_hash_is_of_received_header_bytes() -> None:
    blk = codec.make_block(header(), [tx()], commit())
    msg = codec.block_to_pb(blk)
    # Append the same varint field twice (last wins): parses to the same header, other bytes.
    msg.header_bytes = msg.header_bytes + b"\x18\x07"
    back = codec.decode_block(msg.SerializeToString(), NET)
    assert back.header == blk.header
    assert back.hash == hashlib.sha256(msg.header_bytes).digest() != blk.hash


def test_block_bounds() -> None:
    big_coinbase = tx(body(0, 12, coinbase_height=7, memo=b""))
    normal = tx()
    limits = Limits(max_tx_bytes=max(normal.size, 300), max_block_txs=3, max_evidence=1)
    assert big_coinbase.size > limits.max_tx_bytes
    ok = codec.make_block(header(), [big_coinbase, normal], commit())
    assert codec.decode_block(codec.encode_block(ok), NET, limits=limits) == ok
    # The same oversized transaction anywhere but first is refused.
    bad = codec.make_block(header(), [normal, big_coinbase], commit())
    with pytest.raises(Oversized):
        codec.decode_block(codec.encode_block(bad), NET, limits=limits)
    many = codec.make_block(header(), [normal] * 4, commit())
    with pytest.raises(Oversized) as info:
        codec.decode_block(codec.encode_block(many), NET, limits=limits)
    assert info.value.reason is Reason.TOO_MANY_ITEMS
    ev = DuplicateVoteEvidence(vote(1), vote(1, block_hash=b""))
    with pytest.raises(Oversized):
        codec.decode_block(codec.encode_block(replace(ok, evidence=(ev, ev))), NET, limits=limits)
    with pytest.raises(Oversized):
        codec.decode_block(codec.encode_block(ok), NET, max_size=ok.size - 1)


# --- consensus messages ------------------------------------------------------------------


def test_vote_round_trip_and_rejections() -> None:
    for v in (vote(), vote(block_hash=b""), vote(type=VoteType.PREVOTE, round=5)):
        assert codec.decode_vote(codec.encode_vote(v)) == v
        assert codec.vote_from_pb(codec.vote_to_pb(v)) == v
    for bad in (
        vote(block_hash=bytes(31)),
        vote(validator_address=bytes(19)),
        vote(signature=b""),
        vote(signature=bytes(65)),
    ):
        with pytest.raises(DecodeError):
            codec.decode_vote(codec.encode_vote(bad))
    unsigned = vote(signature=b"")
    assert codec.vote_from_pb(codec.vote_to_pb(unsigned), require_signature=False) == unsigned
    for t in (0, 3, 1000):
        m = codec.vote_to_pb(vote())
        m.type = t  # type: ignore[assignment]
        with pytest.raises(DecodeError):
            codec.decode_vote(m.SerializeToString())


def test_proposal_round_trip_and_rejections() -> None:
    p = Proposal(9, 2, -1, h32(3), key(2).address_payload, sig(2))
    for q in (p, replace(p, pol_round=1)):
        assert codec.decode_proposal(codec.encode_proposal(q)) == q
        assert codec.proposal_from_pb(codec.proposal_to_pb(q)) == q
    for bad in (
        replace(p, pol_round=-2),
        replace(p, block_hash=b""),
        replace(p, proposer_address=bytes(21)),
        replace(p, signature=bytes(10)),
    ):
        with pytest.raises(DecodeError):
            codec.decode_proposal(codec.encode_proposal(bad))


def test_commit_round_trip_and_rejections() -> None:
    c = commit(4)
    assert codec.decode_commit(codec.encode_commit(c)) == c
    assert codec.commit_from_pb(codec.commit_to_pb(c)) == c
    assert codec.decode_commit(codec.encode_commit(replace(c, signatures=()))).signatures == ()
    with pytest.raises(DecodeError):
        codec.decode_commit(codec.encode_commit(replace(c, block_hash=b"")))
    with pytest.raises(DecodeError):
        codec.decode_commit(
            codec.encode_commit(replace(c, signatures=(CommitSig(bytes(20), bytes(63)),)))
        )
    with pytest.raises(Oversized):
        codec.decode_commit(codec.encode_commit(c), limits=Limits(max_validators=3))
    s = codec.commit_sig_to_pb(c.signatures[0])
    assert codec.commit_sig_from_pb(s) == c.signatures[0]


def test_evidence_round_trip_and_rejections() -> None:
    e = DuplicateVoteEvidence(vote(3), vote(3, block_hash=h32(10)))
    assert codec.decode_evidence(codec.encode_evidence(e)) == e
    assert codec.evidence_from_pb(codec.evidence_to_pb(e)) == e
    with pytest.raises(DecodeError):
        codec.decode_evidence(b"")  # no kind
    m = codec.evidence_to_pb(e)
    m.duplicate_vote.ClearField("vote_b")
    with pytest.raises(DecodeError):
        codec.decode_evidence(m.SerializeToString())
    with pytest.raises(DecodeError):
        codec.decode_evidence(
            codec.encode_evidence(DuplicateVoteEvidence(vote(3), vote(3, signature=b"")))
        )


def test_validator_and_set_round_trip() -> None:
    vs = ValidatorSet(
        (
            validator(1),
            validator(2, tier=None, collateral=None, power=5),
            validator(3, tier=MasternodeTier.GOLD, power=100),
        )
    )
    back = codec.decode_validator_set(codec.encode_validator_set(vs))
    assert back == vs
    assert [v.address for v in back.validators] == sorted(v.address for v in vs.validators)
    assert codec.validator_set_from_pb(codec.validator_set_to_pb(vs)) == vs
    assert codec.validator_from_pb(codec.validator_to_pb(validator(4))) == validator(4)
    assert codec.decode_validator_set(b"") == ValidatorSet(())


@pytest.mark.parametrize(
    ("v", "error"),
    [
        (validator(1, address=key(2).address_payload), DecodeError),
        (validator(1, address=bytes(19)), DecodeError),
        (validator(1, pubkey=b"\x02" + bytes(32)), BadPubkey),
        (validator(1, power=0), DecodeError),
    ],
)
def test_validator_rejections(v: Validator, error: type[Exception]) -> None:
    with pytest.raises(error):
        codec.decode_validator_set(codec.encode_validator_set(ValidatorSet((v,))))


def test_validator_tier_and_duplicates() -> None:
    m = codec.validator_to_pb(validator(1))
    m.tier = 9  # type: ignore[assignment]
    with pytest.raises(DecodeError):
        codec.validator_from_pb(m)
    dup = pb.ValidatorSet(validators=[codec.validator_to_pb(validator(1))] * 2)
    with pytest.raises(DecodeError):
        codec.decode_validator_set(dup.SerializeToString())
    with pytest.raises(Oversized):
        codec.decode_validator_set(
            codec.encode_validator_set(ValidatorSet((validator(1), validator(2)))),
            limits=Limits(max_validators=1),
        )


def test_outpoint_conversion() -> None:
    op = OutPoint(h32(1), 2**32 - 1)
    assert codec.outpoint_from_pb(codec.outpoint_to_pb(op)) == op
    with pytest.raises(DecodeError):
        codec.outpoint_from_pb(pb.OutPoint(txid=b"x", index=0))


def test_limits_from_params() -> None:
    p = ChainParams.for_network("mainnet")
    lim = Limits.from_params(p)
    assert lim.max_tx_bytes == p.max_tx_bytes
    assert lim.max_block_bytes == p.max_block_bytes
    assert lim.max_block_txs == p.max_block_txs
    assert lim.max_inputs == p.max_inputs
    assert lim.max_outputs == p.max_outputs
    assert lim.max_memo_bytes == p.max_memo_bytes
    assert lim.max_chain_id_bytes == DEFAULT_LIMITS.max_chain_id_bytes


# --- property-based round trips -------------------------------------------------------

keys = st.integers(0, 30).map(key)
hashes = st.binary(min_size=32, max_size=32)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
outpoints = st.builds(OutPoint, hashes, u32)
payloads = st.binary(min_size=20, max_size=20)
chain_ids = st.text(max_size=20)
masternodes = st.one_of(
    st.none(),
    st.builds(
        MasternodeRegistration,
        st.sampled_from(list(MasternodeTier)),
        u32,
        keys.map(lambda k: k.pubkey),
    ),
    st.builds(MasternodeDeregistration, outpoints),
)
bodies = st.builds(
    TxBody,
    version=u32,
    chain_id=chain_ids,
    inputs=st.lists(st.builds(TxIn, outpoints, keys.map(lambda k: k.pubkey)), max_size=4).map(
        tuple
    ),
    outputs=st.lists(st.builds(TxOut, u64, payloads), max_size=4).map(tuple),
    memo=st.binary(max_size=256),
    coinbase_height=u64,
    masternode=masternodes,
)
networks = st.sampled_from([Network.MAIN, Network.TEST])


@settings(max_examples=60)
@given(bodies, networks)
def test_tx_body_round_trip_property(b: TxBody, network: Network) -> None:
    data = codec.encode_tx_body(b, network)
    assert codec.decode_tx_body(data, network) == b
    t = codec.make_transaction(data, [bytes(64)] * len(b.inputs), network)
    assert codec.decode_transaction(codec.encode_transaction(t), network) == t


headers = st.builds(
    BlockHeader,
    version=u32,
    chain_id=chain_ids,
    height=u64,
    time_ms=u64,
    prev_block_hash=hashes,
    tx_root=hashes,
    last_commit_hash=hashes,
    validators_hash=hashes,
    next_validators_hash=hashes,
    utxo_commitment=hashes,
    proposer_address=payloads,
    evidence_hash=hashes,
)
votes = st.builds(
    Vote,
    st.sampled_from(list(VoteType)),
    u64,
    u32,
    st.one_of(st.just(b""), hashes),
    payloads,
    st.binary(min_size=64, max_size=64),
)
commits = st.builds(
    Commit,
    u64,
    u32,
    hashes,
    st.lists(st.builds(CommitSig, payloads, st.binary(min_size=64, max_size=64)), max_size=5).map(
        tuple
    ),
)
proposals = st.builds(
    Proposal,
    u64,
    u32,
    st.integers(-1, 2**31 - 1),
    hashes,
    payloads,
    st.binary(min_size=64, max_size=64),
)


@settings(max_examples=60)
@given(headers)
def test_header_round_trip_property(h: BlockHeader) -> None:
    assert codec.decode_header(codec.encode_header(h)) == h


@settings(max_examples=60)
@given(votes, votes, commits, proposals)
def test_consensus_round_trip_property(a: Vote, b: Vote, c: Commit, p: Proposal) -> None:
    assert codec.decode_vote(codec.encode_vote(a)) == a
    assert codec.decode_commit(codec.encode_commit(c)) == c
    assert codec.decode_proposal(codec.encode_proposal(p)) == p
    e = DuplicateVoteEvidence(a, b)
    assert codec.decode_evidence(codec.encode_evidence(e)) == e


@settings(max_examples=30)
@given(headers, st.lists(bodies, max_size=3), st.one_of(st.none(), commits))
def test_block_round_trip_property(h: BlockHeader, bs: list[TxBody], c: Commit | None) -> None:
    txs = [
        codec.make_transaction(codec.encode_tx_body(b, NET), [bytes(64)] * len(b.inputs), NET)
        for b in bs
    ]
    blk = codec.make_block(h, txs, c)
    back = codec.decode_block(codec.encode_block(blk), NET)
    assert back == blk
    assert back.size == len(codec.encode_block(blk))
    # The proposer's direct encoder writes exactly protobuf's deterministic bytes.
    built, data = codec.make_block_bytes(h, txs, c)
    assert built == blk and data == codec.encode_block(blk)


def test_direct_block_encoding_matches_protobuf_with_evidence_and_large_txs() -> None:
    coinbase = tx(body(0, 100, coinbase_height=7, memo=b""))  # > 127-byte lengths: 2-byte varints
    big = tx(body(40, 40, memo=b"m" * 200))
    ev = DuplicateVoteEvidence(vote(1), vote(1, block_hash=b""))
    for txs, last, evs in (
        ([coinbase, big, tx()], commit(), [ev, ev]),
        ([coinbase], None, []),
        ([], commit(1), [ev]),
    ):
        blk, data = codec.make_block_bytes(header(), txs, last, evs)
        assert data == codec.encode_block(blk) and blk.size == len(data)
        assert codec.decode_block(data, NET) == blk


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**35])
def test_length_varints_are_protobufs(n: int) -> None:
    v = codec._varint(n)
    assert sum((b & 0x7F) << (7 * i) for i, b in enumerate(v)) == n
    assert v[-1] < 0x80 and all(b >= 0x80 for b in v[:-1])
    if 0 < n <= 2**21:  # a bytes field of length n: tag, varint(n), the bytes
        framed = pb.Transaction(body_bytes=b"\x01" * n).SerializeToString()
        assert v == framed[1 : len(framed) - n]


def test_block_decode_reuses_known_transactions_only_when_identical() -> None:
    a, b = tx(), tx(body(1, 1))
    blk = codec.make_block(header(), [tx(body(0, 1, coinbase_height=7)), a, b], commit())
    forged = a._replace(signatures=(sig(9),) * len(a.signatures))
    pool = {a.txid: forged, b.txid: b}
    back = codec.decode_block(codec.encode_block(blk), NET, known=pool.get)
    assert back == blk
    assert back.txs[2] is b  # identical: the known object itself
    assert back.txs[1] is not forged and back.txs[1].signatures == a.signatures  # decoded


@settings(max_examples=20)
@given(st.lists(st.integers(0, 30), unique=True, max_size=6), st.integers(1, 2**40))
def test_validator_set_round_trip_property(ids: list[int], power: int) -> None:
    vs = ValidatorSet(
        tuple(
            validator(i, power=power + i, reward_pubkey_hash=key(i + 40).address_payload * (i % 2))
            for i in ids
        )
    )
    assert codec.decode_validator_set(codec.encode_validator_set(vs)) == vs


def test_address_in_output_uses_core_encoding() -> None:
    m = codec.tx_body_to_pb(body(), Network.MAIN)
    assert m.outputs[0].address == encode_address(key(10).address_payload, Network.MAIN)
    assert m.outputs[0].address.startswith("TIME1")


def test_reward_pubkey_hash_is_never_silently_dropped() -> None:
    # validators_hash covers reward_pubkey_hash, so the wire must carry it or refuse.
    v = validator(1, reward_pubkey_hash=key(9).address_payload)
    assert codec.validator_from_pb(codec.validator_to_pb(v)) == v
    vs = ValidatorSet((v, validator(2)))
    assert codec.decode_validator_set(codec.encode_validator_set(vs)) == vs
    m = codec.validator_to_pb(v)
    m.reward_pubkey_hash = bytes(19)
    with pytest.raises(DecodeError):
        codec.validator_from_pb(m)


def test_protocol_doc_worked_example() -> None:
    # docs/protocol.md "Transactions" worked example, byte for byte.
    from timecoin.core.keys import verify_digest
    from timecoin.core.signing import tx_sign_digest

    k1 = KeyPair.from_secret((1).to_bytes(32, "big"))
    k2 = KeyPair.from_secret((2).to_bytes(32, "big"))
    prev = hashlib.sha256(b"example funding tx").digest()
    b = TxBody(
        version=1,
        chain_id="timecoin-testnet-1",
        inputs=(TxIn(OutPoint(prev, 0), k1.pubkey),),
        outputs=(TxOut(150_000_000, k2.address_payload), TxOut(49_990_000, k1.address_payload)),
    )
    body_bytes = codec.encode_tx_body(b, Network.TEST)
    assert body_bytes.hex() == (
        "0801121274696d65636f696e2d746573746e65742d311a470a220a20d60aec57446787fde7b88f0fd44f1e85"
        "2ab81f1aada1b9df501028811797ce9112210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959"
        "f2815b16f81798222d0880a3c347122654494d4530484434356a445654797536566743417646587a46666d61"
        "35584356767270665076222d08f092eb17122654494d4530325165773936323875703458774e414757735036"
        "364766614268696241696d5257"
    )
    digest = tx_sign_digest("timecoin-testnet-1", body_bytes)
    assert digest.hex() == "762d75c281e137bf05b9b493bd98fbcf9344f70ddd27eb36f735fdff32cbd618"
    signature = k1.sign(digest)
    assert signature.hex() == (
        "5ea17ac1952a7274b9e22df5b44bbbc1fb1b7f779b9f99e94a36a8af1b52987d"
        "5f1a45cd8d1e9fbfb7ccb300c26552a905c2232db1cf7b64b554fea238ebe2ac"
    )
    verify_digest(k1.pubkey, signature, digest)
    t = codec.make_transaction(body_bytes, [signature], Network.TEST)
    assert t.txid.hex() == "77b3688e732f8c37246dc20478f8875b4af4b50fa4fc12e48062b7e7328cbf24"
    assert t.size == 258
