"""The digests that signatures cover, each bound to the chain id.

Every digest starts with a domain tag, so a signature made for one purpose
(a transaction, a vote, a proposal, a handshake) can never be replayed as
another, and includes the chain id, so it can never be replayed on another
chain (DESIGN.md, Protocol). The layouts are fixed-width big-endian and are
documented in docs/protocol.md so a client in any language can rebuild them.

    tx:        SHA-256("timecoin/tx/v1"       0x00 len(chain_id):u8 chain_id  body_bytes)
    vote:      SHA-256("timecoin/vote/v1"     0x00 len(chain_id):u8 chain_id
                       type:u8 height:u64 round:u32 len(block_hash):u8 block_hash)
    proposal:  SHA-256("timecoin/proposal/v1" 0x00 len(chain_id):u8 chain_id
                       height:u64 round:u32 pol_round:i32 len(block_hash):u8 block_hash)
    hello:     SHA-256("timecoin/hello/v1"    0x00 len(chain_id):u8 chain_id  challenge)
"""

from __future__ import annotations

import struct

from timecoin.core.hashing import sha256
from timecoin.core.types import Proposal, Vote, VoteType

_TX_TAG = b"timecoin/tx/v1\x00"
_VOTE_TAG = b"timecoin/vote/v1\x00"
_PROPOSAL_TAG = b"timecoin/proposal/v1\x00"
_HELLO_TAG = b"timecoin/hello/v1\x00"


def _chain(chain_id: str) -> bytes:
    raw = chain_id.encode()
    if len(raw) > 255:
        raise ValueError("chain_id longer than 255 bytes")
    return bytes([len(raw)]) + raw


def tx_sign_prefix(chain_id: str) -> bytes:
    """Return what a transaction's signed digest hashes before its body (``tx_sign_digest``)."""
    return _TX_TAG + _chain(chain_id)


def tx_sign_digest(chain_id: str, body_bytes: bytes) -> bytes:
    """Digest every input of a transaction signs (SIGHASH_ALL over the exact body bytes)."""
    return sha256(tx_sign_prefix(chain_id) + body_bytes)


def vote_sign_bytes(
    chain_id: str, vote_type: VoteType, height: int, round_: int, block_hash: bytes
) -> bytes:
    """Canonical bytes a validator signs (hashed) for a prevote or precommit."""
    return (
        _VOTE_TAG
        + _chain(chain_id)
        + struct.pack(">BQI", int(vote_type), height, round_)
        + bytes([len(block_hash)])
        + block_hash
    )


def vote_sign_digest(chain_id: str, vote: Vote) -> bytes:
    """Digest signed by ``vote.validator_address`` for *vote*."""
    return sha256(vote_sign_bytes(chain_id, vote.type, vote.height, vote.round, vote.block_hash))


def proposal_sign_digest(chain_id: str, proposal: Proposal) -> bytes:
    """Digest signed by the proposer for *proposal*."""
    return sha256(
        _PROPOSAL_TAG
        + _chain(chain_id)
        + struct.pack(">QIi", proposal.height, proposal.round, proposal.pol_round)
        + bytes([len(proposal.block_hash)])
        + proposal.block_hash
    )


def hello_sign_digest(chain_id: str, challenge: bytes) -> bytes:
    """Digest a peer signs with its node key to prove its node id in the handshake."""
    return sha256(_HELLO_TAG + _chain(chain_id) + challenge)
