"""Transaction validity: stateless checks, checks against a UTXO view, signatures.

Rules of this module:

- It works on ``Transaction`` dataclasses built by ``timecoin.wire.codec``,
  which derives ``body`` and ``txid`` from ``body_bytes``; it never parses or
  re-serializes bytes. Signatures are verified over
  ``signing.tx_sign_digest(params.chain_id, body_bytes)``, i.e. the exact bytes
  received, bound to *our* chain id (no cross-chain replay).
- Checks run cheapest first; the ECDSA verifications (by far the most
  expensive part) run last, once per input, after everything else passed. A
  caller that verifies signatures elsewhere (a worker pool, a batch) passes
  ``sig_ok`` and the signatures are not checked twice.
- Every failure raises a ``TimecoinError`` subclass naming the rule; nothing
  returns ``False`` for invalid input (``signatures_valid`` is the one
  boolean helper, meant for batch verification off the event loop).
- A signature is exactly 64 bytes and must verify; an empty or short
  signature is rejected before any other work (the original TimeCoin accepted
  transactions whose signature list was empty).
"""

from __future__ import annotations

from collections.abc import Sequence

from timecoin.core.errors import (
    BadAddress,
    BadCoinbase,
    BadCollateral,
    BadPayload,
    BadPubkey,
    BadReward,
    BadSignature,
    BadVersion,
    DuplicateInput,
    DustOutput,
    FeeTooLow,
    InsufficientFunds,
    InvalidTransaction,
    MemoTooLarge,
    MissingInput,
    Reason,
    TooManyItems,
    ValueOverflow,
    WrongChain,
    WrongOwner,
)
from timecoin.core.keys import (
    is_valid_signature,
    pubkey_hash,
    validate_pubkey,
)
from timecoin.core.params import ChainParams
from timecoin.core.signing import tx_sign_digest
from timecoin.core.types import (
    ADDRESS_PAYLOAD_LEN,
    HASH_LEN,
    MAX_MONEY_UNITS,
    PUBKEY_LEN,
    SIGNATURE_LEN,
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    Transaction,
    TxOut,
)
from timecoin.core.utxo import UtxoView

_MAX_U32 = 0xFFFFFFFF


def effective_size(tx: Transaction) -> int:
    """Return the size the fee and size rules use: ``tx.size``, never less than the bytes carried.

    ``size`` is filled in by the decoder; taking the maximum with the body and
    signature lengths means a hand-built value cannot claim to be smaller than
    it is and so pay a lower fee.
    """
    carried = len(tx.body_bytes)
    for sig in tx.signatures:
        carried += len(sig)
    return tx.size if tx.size > carried else carried


def _is_amount(x: object) -> bool:
    # bool is an int subclass; an amount must be a real integer.
    return type(x) is int


def _check_outputs(outputs: Sequence[TxOut], params: ChainParams, *, coinbase: bool) -> int:
    """Check output amounts/addresses; return their sum (bounded by MAX_MONEY_UNITS)."""
    total = 0
    dust = 1 if coinbase else max(1, params.dust_limit_units)
    for i, out in enumerate(outputs):
        amount = out.amount
        if type(amount) is not int:  # _is_amount, inline
            raise InvalidTransaction(f"output {i} amount is not an integer", index=i)
        if amount > MAX_MONEY_UNITS:
            raise ValueOverflow(f"output {i} amount {amount} exceeds the money bound", index=i)
        if amount < dust:
            # Zero and tiny outputs were used to pad transactions (original TimeCoin bug).
            raise DustOutput(f"output {i} amount {amount} is below {dust} units", index=i)
        if type(out.pubkey_hash) is not bytes or len(out.pubkey_hash) != ADDRESS_PAYLOAD_LEN:
            raise BadAddress(f"output {i} address payload must be 20 bytes", index=i)
        total += amount
        if total > MAX_MONEY_UNITS:
            raise ValueOverflow("sum of outputs exceeds the money bound")
    return total


def _check_header_fields(tx: Transaction, params: ChainParams, max_size: int) -> None:
    """Check the fields shared by ordinary transactions and coinbases."""
    body = tx.body
    if body.version != params.tx_version:
        raise BadVersion(f"transaction version {body.version} is not {params.tx_version}")
    if body.chain_id != params.chain_id:
        raise WrongChain(f"transaction is for chain {body.chain_id!r}, not {params.chain_id!r}")
    if len(tx.txid) != HASH_LEN:
        raise InvalidTransaction("txid must be 32 bytes")
    size = effective_size(tx)
    if size > max_size:
        raise InvalidTransaction(
            f"transaction is {size} bytes, limit {max_size}", reason=Reason.OVERSIZED
        )
    if len(body.memo) > params.max_memo_bytes:
        raise MemoTooLarge(f"memo is {len(body.memo)} bytes, limit {params.max_memo_bytes}")


def validate_transaction_stateless(tx: Transaction, params: ChainParams) -> None:
    """Raise unless *tx* is a well-formed non-coinbase transaction for this chain.

    Checks everything that needs no UTXO set and no signature verification:
    version, chain id, size, memo, counts, signature lengths, duplicate
    inputs, pubkey lengths, output amounts (dust, overflow), addresses and the
    masternode payload's shape. A coinbase is rejected: it is valid only as
    the first transaction of a block (``validate_coinbase``), never alone.
    """
    _check_header_fields(tx, params, params.max_tx_bytes)
    body = tx.body
    n_in = len(body.inputs)
    if n_in == 0:
        raise BadCoinbase("a coinbase is only valid as the first transaction of a block")
    if body.coinbase_height != 0:
        raise BadCoinbase("coinbase_height set on a transaction with inputs")
    if n_in > params.max_inputs:
        raise TooManyItems(f"{n_in} inputs, limit {params.max_inputs}")
    n_out = len(body.outputs)
    if n_out == 0:
        raise InvalidTransaction("transaction has no outputs")
    if n_out > params.max_outputs:
        raise TooManyItems(f"{n_out} outputs, limit {params.max_outputs}")
    if len(tx.signatures) != n_in:
        raise BadSignature(f"{len(tx.signatures)} signatures for {n_in} inputs")
    for i, sig in enumerate(tx.signatures):
        if len(sig) != SIGNATURE_LEN:
            # Rejects the empty-signature bypass before any lookup.
            raise BadSignature(f"signature {i} is {len(sig)} bytes, not 64", index=i)
    seen: set[OutPoint] = set()
    for i, txin in enumerate(body.inputs):
        op = txin.prev_out
        if op in seen:
            raise DuplicateInput(f"input {i} spends {op} twice", index=i)
        seen.add(op)
        index = op.index
        # _is_amount and has_pubkey_shape inline (every input of every submission).
        if len(op.txid) != HASH_LEN or type(index) is not int or not 0 <= index <= _MAX_U32:
            # Range-checked here so no UTXO store ever has to encode an impossible key.
            raise InvalidTransaction(f"input {i} has a malformed outpoint", index=i)
        pubkey = txin.pubkey
        if len(pubkey) != PUBKEY_LEN or pubkey[0] not in (2, 3):
            raise BadPubkey(f"input {i} pubkey must be 33-byte compressed", index=i)
    _check_outputs(body.outputs, params, coinbase=False)
    mn = body.masternode
    if mn is not None:
        _check_masternode_payload(tx, mn, seen)


def _check_masternode_payload(tx: Transaction, mn: object, spent: set[OutPoint]) -> None:
    if isinstance(mn, MasternodeRegistration):
        if not isinstance(mn.tier, MasternodeTier):
            raise BadPayload(f"unknown masternode tier {mn.tier!r}")
        idx = mn.collateral_index
        outputs = tx.body.outputs
        if not _is_amount(idx) or not 0 <= idx < len(outputs):
            raise BadCollateral(f"collateral_index {idx} names no output")
        want = mn.tier.collateral_units
        if outputs[idx].amount != want:
            raise BadCollateral(
                f"{mn.tier.name} collateral must be exactly {want} units, "
                f"output {idx} has {outputs[idx].amount}"
            )
        try:
            validate_pubkey(mn.operator_pubkey)
        except BadPubkey as exc:
            raise BadPayload(f"operator key: {exc.message}") from None
    elif isinstance(mn, MasternodeDeregistration):
        if mn.collateral not in spent:
            raise BadCollateral(f"deregistration does not spend its collateral {mn.collateral}")
    else:
        raise BadPayload(f"unknown masternode payload {type(mn).__name__}")


def check_signatures(tx: Transaction, chain_id: str) -> None:
    """Raise BadSignature unless input *i* is signed by ``signatures[i]`` for *chain_id*.

    The digest is computed once per transaction; each signature is verified
    exactly once. Ownership (pubkey hash == coin owner) is checked separately
    in ``validate_transaction``.
    """
    inputs = tx.body.inputs
    sigs = tx.signatures
    if len(sigs) != len(inputs) or not inputs:
        raise BadSignature(f"{len(sigs)} signatures for {len(inputs)} inputs")
    digest = tx_sign_digest(chain_id, tx.body_bytes)
    for i, txin in enumerate(inputs):
        if not is_valid_signature(txin.pubkey, sigs[i], digest):
            try:
                validate_pubkey(txin.pubkey)  # only on failure: name the key if it is the cause
            except BadPubkey as exc:
                raise BadPubkey(f"input {i}: {exc.message}", index=i) from None
            raise BadSignature(f"signature {i} does not verify", index=i)


def signatures_valid(tx: Transaction, chain_id: str) -> bool:
    """Tell whether ``check_signatures`` would pass; for batch verification on worker threads."""
    try:
        check_signatures(tx, chain_id)
    except (BadSignature, BadPubkey):
        return False
    return True


def validate_transaction(
    tx: Transaction,
    view: UtxoView,
    height: int,
    params: ChainParams,
    *,
    sig_ok: bool | None = None,
    prechecked: bool = False,
) -> int:
    """Fully validate non-coinbase *tx* for inclusion at *height*; return its fee in units.

    Runs the stateless checks, then looks every input up in *view*
    (MissingInput), checks ownership (WrongOwner), sums (ValueOverflow,
    InsufficientFunds), the minimum fee rate (FeeTooLow) and finally the
    signatures (BadSignature). ``sig_ok=True`` means the caller already ran
    ``check_signatures`` for this chain id; ``False`` rejects; ``None`` (the
    default) verifies here. ``prechecked=True`` means the caller already ran
    ``validate_transaction_stateless`` with these *params* (the node does it
    before admission, on its verify threads), so it is not run again.
    """
    if not prechecked:
        validate_transaction_stateless(tx, params)
    body = tx.body
    in_total = 0
    maturity = params.coinbase_maturity
    for i, txin in enumerate(body.inputs):
        coin = view.get_coin(txin.prev_out)
        if coin is None:
            raise MissingInput(f"input {i} spends unknown or spent {txin.prev_out}", index=i)
        if maturity and coin.is_coinbase and height - coin.height < maturity:
            raise MissingInput(f"input {i} spends an immature coinbase output", index=i)
        if pubkey_hash(txin.pubkey) != coin.pubkey_hash:
            raise WrongOwner(f"input {i} pubkey does not own {txin.prev_out}", index=i)
        in_total += coin.amount
        if in_total > MAX_MONEY_UNITS:
            raise ValueOverflow("sum of inputs exceeds the money bound")
    out_total = 0
    for out in body.outputs:
        out_total += out.amount  # bounded by the stateless check
    if out_total > in_total:
        raise InsufficientFunds(f"outputs {out_total} exceed inputs {in_total}")
    fee = in_total - out_total
    need = params.min_fee(effective_size(tx))
    if fee < need:
        raise FeeTooLow(f"fee {fee} below the minimum {need} for {effective_size(tx)} bytes")
    if sig_ok is None:
        check_signatures(tx, params.chain_id)
    elif not sig_ok:
        raise BadSignature("signatures failed verification")
    return fee


def validate_coinbase(
    tx: Transaction,
    height: int,
    expected: Sequence[tuple[bytes, int]],
    max_reward: int,
    params: ChainParams,
) -> int:
    """Validate the coinbase of block *height*; return the amount it pays.

    A coinbase has no inputs, no signatures and no masternode payload,
    ``coinbase_height == height`` (which makes every coinbase txid unique),
    pays at most *max_reward* (BadReward: the original TimeCoin let a coinbase
    pay more) and its outputs equal *expected* (the rules' reward split)
    exactly, in order (BadCoinbase).
    """
    # One output per paid validator: bounded by the block size, not the tx size.
    _check_header_fields(tx, params, params.max_block_bytes)
    body = tx.body
    if body.inputs or tx.signatures:
        raise BadCoinbase("coinbase has inputs or signatures")
    if body.masternode is not None:
        raise BadCoinbase("coinbase carries a masternode payload")
    if body.coinbase_height != height:
        raise BadCoinbase(f"coinbase_height {body.coinbase_height} is not block height {height}")
    total = _check_outputs(body.outputs, params, coinbase=True)
    if total > max_reward:
        raise BadReward(f"coinbase pays {total}, at most {max_reward} allowed")
    if len(body.outputs) != len(expected) or any(
        out.pubkey_hash != pkh or out.amount != amount
        for out, (pkh, amount) in zip(body.outputs, expected, strict=False)
    ):
        raise BadCoinbase("coinbase outputs differ from the reward split")
    return total
