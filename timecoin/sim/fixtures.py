"""Deterministic validators and signed messages for tests, benchmarks and the simulator."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair
from timecoin.core.signing import proposal_sign_digest, vote_sign_digest
from timecoin.core.types import Proposal, Validator, ValidatorSet, Vote, VoteType


def validator_key(i: int, namespace: str = "timecoin-sim-validator-") -> KeyPair:
    """Return the deterministic key of test validator *i*."""
    return KeyPair.from_secret(sha256(namespace.encode() + str(i).encode()))


def make_validators(powers: Sequence[int]) -> tuple[ValidatorSet, list[KeyPair]]:
    """Return a validator set with the given powers and the keys, in set (address) order."""
    keys = [validator_key(i) for i in range(len(powers))]
    vals = tuple(
        Validator(address=k.address_payload, pubkey=k.pubkey, power=p)
        for k, p in zip(keys, powers, strict=True)
    )
    vs = ValidatorSet(vals)
    by_addr = {k.address_payload: k for k in keys}
    return vs, [by_addr[v.address] for v in vs.validators]


def signed_vote(
    key: KeyPair,
    chain_id: str,
    vote_type: VoteType,
    height: int,
    round: int,
    block_hash: bytes,
) -> Vote:
    """Return a vote signed by *key* (no double-sign guard: tests forge equivocations)."""
    v = Vote(vote_type, height, round, block_hash, key.address_payload)
    return dataclasses.replace(v, signature=key.sign(vote_sign_digest(chain_id, v)))


def signed_proposal(
    key: KeyPair, chain_id: str, height: int, round: int, block_hash: bytes, pol_round: int = -1
) -> Proposal:
    """Return a proposal signed by *key*."""
    p = Proposal(height, round, pol_round, block_hash, key.address_payload)
    return dataclasses.replace(p, signature=key.sign(proposal_sign_digest(chain_id, p)))


def block(n: int | str) -> bytes:
    """Return an opaque 32-byte block hash for tests."""
    return sha256(b"block-" + str(n).encode())
