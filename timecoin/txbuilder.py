"""Build and sign transactions locally (wallets, the CLI, benchmarks and tests).

A client in any language does the same: serialize a ``TxBody`` once, keep
those exact bytes as ``body_bytes``, and sign
``core.signing.tx_sign_digest(chain_id, body_bytes)`` with the key of each
input (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.signing import tx_sign_digest
from timecoin.core.types import OutPoint, Transaction, TxBody, TxIn, TxOut
from timecoin.wire.codec import encode_tx_body, make_transaction


def sign_body(body_bytes: bytes, keys: Sequence[KeyPair], params: ChainParams) -> Transaction:
    """Sign *body_bytes* with one key per input (in input order) and return the transaction."""
    digest = tx_sign_digest(params.chain_id, body_bytes)
    return make_transaction(body_bytes, [k.sign(digest) for k in keys], params.network)


def build_transfer(
    params: ChainParams,
    key: KeyPair,
    inputs: Sequence[OutPoint],
    outputs: Sequence[tuple[bytes, int]],
    memo: bytes = b"",
) -> Transaction:
    """Return a signed transaction spending *inputs* (owned by *key*) to (pubkey_hash, amount)."""
    body = TxBody(
        version=params.tx_version,
        chain_id=params.chain_id,
        inputs=tuple(TxIn(op, key.pubkey) for op in inputs),
        outputs=tuple(TxOut(amount, pkh) for pkh, amount in outputs),
        memo=memo,
    )
    return sign_body(encode_tx_body(body, params.network), [key] * len(inputs), params)
