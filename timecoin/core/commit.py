"""Commit certificates, validator-set hashes and duplicate-vote evidence.

A commit for block B at height H is the set of precommits for B from
validators holding more than 2/3 of the voting power of the set that decided
H (Tendermint, "The latest gossip on BFT consensus", Algorithm 1 L49). Every
signature in a commit is verified, not only enough of them to pass 2/3: the
signers of the last commit are paid by the coinbase, so an unverified entry
would be paid for nothing.

Hashes in block headers use fixed, documented layouts (no protobuf), so any
implementation can rebuild them; every variable-length field is length
prefixed and every hash starts with a domain tag::

    validators_hash = SHA-256("timecoin/validators/v1" 0x00  n:u32
                      (len(address):u8 address  len(pubkey):u8 pubkey  power:u64
                       tier:u8  len(reward_pubkey_hash):u8 reward_pubkey_hash)*)
                      over validators in address order (ValidatorSet keeps them sorted)
    commit_hash     = SHA-256("timecoin/commit/v1" 0x00  height:u64 round:u32
                      len(block_hash):u8 block_hash  n:u32
                      (len(address):u8 address  len(signature):u8 signature)*)
                      ; no commit (height 1) hashes to SHA-256("")
    evidence_hash   = merkle_root(SHA-256(evidence element) for each evidence, in block order)
                      with element = "timecoin/evidence/v1" 0x00 vote(a) vote(b),
                      vote = type:u8 height:u64 round:u32 len(hash):u8 hash
                             len(address):u8 address len(signature):u8 signature
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from timecoin.core.errors import BadCommit, BadEvidence
from timecoin.core.hashing import sha256
from timecoin.core.keys import is_valid_signature
from timecoin.core.merkle import merkle_root
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import (
    HASH_LEN,
    Commit,
    DuplicateVoteEvidence,
    Evidence,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)

EMPTY_HASH = sha256(b"")
"""Hash of an absent commit and of an empty evidence list."""

_VALIDATORS_TAG = b"timecoin/validators/v1\x00"
_COMMIT_TAG = b"timecoin/commit/v1\x00"
_EVIDENCE_TAG = b"timecoin/evidence/v1\x00"


def _lp(b: bytes) -> bytes:
    if len(b) > 255:
        raise ValueError("field longer than 255 bytes")
    return bytes([len(b)]) + b


def has_two_thirds(power: int, total: int) -> bool:
    """Tell whether *power* is strictly more than 2/3 of *total* (integer arithmetic)."""
    return 3 * power > 2 * total


def validators_hash(vs: ValidatorSet) -> bytes:
    """Return the hash of a validator set (module docstring layout)."""
    parts = [_VALIDATORS_TAG, struct.pack(">I", len(vs.validators))]
    for v in vs.validators:
        parts.append(
            _lp(v.address)
            + _lp(v.pubkey)
            + struct.pack(">QB", v.power, 0 if v.tier is None else int(v.tier))
            + _lp(v.reward_pubkey_hash)
        )
    return sha256(b"".join(parts))


def commit_hash(commit: Commit | None) -> bytes:
    """Return the hash of *commit* (module docstring layout); ``EMPTY_HASH`` for None."""
    if commit is None:
        return EMPTY_HASH
    parts = [
        _COMMIT_TAG,
        struct.pack(">QI", commit.height, commit.round),
        _lp(commit.block_hash),
        struct.pack(">I", len(commit.signatures)),
    ]
    for cs in commit.signatures:
        parts.append(_lp(cs.validator_address) + _lp(cs.signature))
    return sha256(b"".join(parts))


def _vote_bytes(v: Vote) -> bytes:
    return (
        struct.pack(">BQI", int(v.type), v.height, v.round)
        + _lp(v.block_hash)
        + _lp(v.validator_address)
        + _lp(v.signature)
    )


def evidence_element_hash(ev: Evidence) -> bytes:
    """Return the hash of one evidence item (its identity for de-duplication)."""
    return sha256(_EVIDENCE_TAG + _vote_bytes(ev.vote_a) + _vote_bytes(ev.vote_b))


def evidence_hash(evidence: Sequence[Evidence]) -> bytes:
    """Return the merkle root over the evidence items' hashes; ``EMPTY_HASH`` when empty."""
    return merkle_root([evidence_element_hash(ev) for ev in evidence])


def verify_commit(
    chain_id: str, commit: Commit, validators: ValidatorSet, *, height: int, block_hash: bytes
) -> int:
    """Verify that *commit* finalizes *block_hash* at *height*; return the signed power.

    Each ``CommitSig`` must come from a member of *validators* (the set that
    decided *height*), appear once, and carry a valid signature over
    ``vote_sign_digest(chain_id, Vote(PRECOMMIT, height, commit.round,
    block_hash, address))``. The signed power must be strictly more than 2/3
    of the set's total. Raises BadCommit otherwise.
    """
    if commit.height != height:
        raise BadCommit(f"commit is for height {commit.height}, expected {height}")
    if len(block_hash) != HASH_LEN or commit.block_hash != block_hash:
        raise BadCommit("commit is for a different block")
    if commit.round < 0 or commit.round > 0xFFFFFFFF:
        raise BadCommit(f"commit round {commit.round} out of range")
    if len(commit.signatures) > len(validators):
        raise BadCommit("commit has more signatures than the set has validators")
    seen: set[bytes] = set()
    signed = 0
    for cs in commit.signatures:
        addr = cs.validator_address
        v = validators.get(addr)
        if v is None:
            raise BadCommit(f"commit signed by unknown validator {addr.hex()}")
        if addr in seen:
            raise BadCommit(f"validator {addr.hex()} signed the commit twice")
        seen.add(addr)
        vote = Vote(VoteType.PRECOMMIT, height, commit.round, block_hash, addr)
        if not is_valid_signature(v.pubkey, cs.signature, vote_sign_digest(chain_id, vote)):
            raise BadCommit(f"bad precommit signature from {addr.hex()}")
        signed += v.power
    total = validators.total_power
    if not has_two_thirds(signed, total):
        raise BadCommit(f"commit carries {signed} of {total} voting power, needs more than 2/3")
    return signed


def commit_signers(commit: Commit | None, validators: ValidatorSet) -> list[Validator]:
    """Return the validators that signed *commit*, in the set's (address) order.

    The order does not depend on the order of signatures in the commit, so
    every node derives the same coinbase split. Call after ``verify_commit``.
    """
    if commit is None:
        return []
    addrs = {cs.validator_address for cs in commit.signatures}
    return [v for v in validators.validators if v.address in addrs]


def make_duplicate_vote_evidence(a: Vote, b: Vote) -> DuplicateVoteEvidence:
    """Return evidence from two conflicting votes in canonical order (lower block hash first)."""
    if b.block_hash < a.block_hash:
        a, b = b, a
    return DuplicateVoteEvidence(vote_a=a, vote_b=b)


def _well_formed(v: Vote) -> bool:
    return (
        isinstance(v.type, VoteType)
        and 0 <= v.height < 2**64
        and 0 <= v.round < 2**32
        and len(v.block_hash) in (0, HASH_LEN)
        and len(v.validator_address) <= 255
        and len(v.signature) <= 255
    )


def verify_duplicate_vote_evidence(
    chain_id: str, ev: DuplicateVoteEvidence, validators: ValidatorSet
) -> Validator:
    """Check *ev* proves equivocation by a member of *validators*; return that validator.

    Both votes must be by the same validator, of the same type, height and
    round, for different block hashes (nil counts as a value), in canonical
    order (``vote_a.block_hash < vote_b.block_hash``, so one equivocation has
    exactly one encoding) and both signatures must verify. Raises BadEvidence.
    """
    a, b = ev.vote_a, ev.vote_b
    for vote in (a, b):
        if not _well_formed(vote):
            raise BadEvidence("evidence vote has out-of-range fields")
    if a.validator_address != b.validator_address:
        raise BadEvidence("evidence votes are from different validators")
    if (a.type, a.height, a.round) != (b.type, b.height, b.round):
        raise BadEvidence("evidence votes are for different type/height/round")
    if not a.block_hash < b.block_hash:
        raise BadEvidence("evidence votes do not conflict or are not in canonical order")
    v = validators.get(a.validator_address)
    if v is None:
        raise BadEvidence(f"evidence names unknown validator {a.validator_address.hex()}")
    for vote in (a, b):
        if not is_valid_signature(v.pubkey, vote.signature, vote_sign_digest(chain_id, vote)):
            raise BadEvidence("evidence vote signature does not verify")
    return v
