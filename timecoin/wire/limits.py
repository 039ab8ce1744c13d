"""Bounds the decoders enforce before and while parsing untrusted bytes.

These are framing limits against resource exhaustion: every decoder checks
the byte length *before* handing bytes to protobuf, then bounds every
collection it converts. The ledger rules (``timecoin.core.tx``,
``timecoin.core.block``) check the consensus limits of ``ChainParams``
again; ``Limits.from_params`` makes the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

MAX_TX_BYTES = 100_000
MAX_BLOCK_BYTES = 4_000_000
MAX_BLOCK_TXS = 10_000
MAX_INPUTS = 1_000
MAX_OUTPUTS = 1_000
MAX_MEMO_BYTES = 256
MAX_CHAIN_ID_BYTES = 64
MAX_VALIDATORS = 10_000
MAX_EVIDENCE = 1_000
MAX_HEADER_BYTES = 1_024
"""A header is 12 fixed-size fields plus a chain id of at most 64 bytes: ~400 bytes."""
MAX_MESSAGE_BYTES = 1_024
"""Votes, proposals, single evidence items and validators are a few hundred bytes."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and count bounds for decoding; defaults are safe for every network."""

    max_tx_bytes: int = MAX_TX_BYTES
    """Bound on one encoded ``Transaction`` (body and signatures)."""
    max_block_bytes: int = MAX_BLOCK_BYTES
    """Bound on one encoded ``Block``; also bounds its coinbase, which pays every signer."""
    max_block_txs: int = MAX_BLOCK_TXS
    max_inputs: int = MAX_INPUTS
    max_outputs: int = MAX_OUTPUTS
    """Outputs of a transaction with inputs; a coinbase may pay up to ``max_validators + 1``."""
    max_memo_bytes: int = MAX_MEMO_BYTES
    max_chain_id_bytes: int = MAX_CHAIN_ID_BYTES
    max_validators: int = MAX_VALIDATORS
    """Bound on validator sets and on the signatures of one commit."""
    max_evidence: int = MAX_EVIDENCE
    """Evidence items in one block."""
    max_header_bytes: int = MAX_HEADER_BYTES
    max_message_bytes: int = MAX_MESSAGE_BYTES

    @property
    def max_coinbase_outputs(self) -> int:
        """Outputs a coinbase may have: the proposer plus one per possible signer."""
        return max(self.max_outputs, self.max_validators + 1)

    @property
    def max_commit_bytes(self) -> int:
        """Encoded commit: ~100 bytes per signature plus a small header."""
        return 128 + 128 * self.max_validators

    @property
    def max_validator_set_bytes(self) -> int:
        """Encoded validator set: at most ``max_message_bytes`` per validator."""
        return 16 + self.max_message_bytes * self.max_validators

    @classmethod
    def from_params(cls, params: Any) -> Limits:
        """Take the matching bounds of a ``ChainParams`` (fields it lacks keep their default)."""
        base = cls()
        mapping = {
            "max_tx_bytes": "max_tx_bytes",
            "max_block_bytes": "max_block_bytes",
            "max_block_txs": "max_block_txs",
            "max_inputs": "max_inputs",
            "max_outputs": "max_outputs",
            "max_memo_bytes": "max_memo_bytes",
            "max_evidence": "max_evidence",
        }
        changes = {
            ours: int(getattr(params, theirs))
            for ours, theirs in mapping.items()
            if isinstance(getattr(params, theirs, None), int)
        }
        return replace(base, **changes)


DEFAULT_LIMITS = Limits()
