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
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair, pubkey_hash
from timecoin.core.params import ChainParams
from timecoin.core.signing import tx_sign_digest, vote_sign_digest
from timecoin.core.types import (
    Coin,
    Commit,
    CommitSig,
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
from timecoin.core.utxo import MemoryUtxoView

PARAMS = ChainParams.for_network("devnet")
TIME = 100_000_000


@functools.cache
def key(i: int) -> KeyPair:
    """A deterministic test key number *i*."""
    return KeyPair.from_secret(sha256(b"timecoin-test-key" + i.to_bytes(4, "big")))


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
    except ImportError:
        return _body_pb(body, network).SerializeToString(deterministic=True)
    try:
        return encode_tx_body(body, network)
    except Exception:
        # Tests feed deliberately invalid values the codec refuses to encode.
        return _body_pb(body, network).SerializeToString(deterministic=True)


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
    body = replace(tx.body, **changes)  # type: ignore[arg-type]
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
    """The test key behind validator *v*."""
    for i in range(256):
        if validator_key(i).pubkey == v.pubkey:
            return validator_key(i)
    raise KeyError(v.address.hex())


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
