"""``timecoin.wallet.v1.WalletService``: submit, build and price transactions.

Submitting needs the cookie credential (``timecoin.api.auth``) and is rate
limited per connection. ``SubmitTransactionStream`` is the high-volume path:
each request carries a batch (at most ``MAX_STREAM_BATCH`` transactions) and
gets one response with a result per transaction, in order. A stream handles
one batch at a time (the next request is read only after the previous
batch's results are sent), so a client cannot queue unbounded work; gRPC flow
control pushes back on it.

``BuildTransaction`` is for clients that sign themselves: it selects the
unspent outputs of ``from_address`` (largest first, skipping ones already
spent in the mempool), pays the payments and the change back to
``from_address``, and returns ``body_bytes`` with the digest every input must
sign, ``core.signing.tx_sign_digest(chain_id, body_bytes)``. The fee is
computed from the exact size the signed transaction will have (signatures
are fixed 64 bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence

import grpc.aio

from timecoin._proto.types.v1 import types_pb2
from timecoin._proto.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from timecoin.api.auth import SubmitRateLimiter
from timecoin.api.backend import LOOP_SLICE, NodeBackend
from timecoin.api.errors import (
    guard_stream_stream,
    guard_unary,
    rejection_to_pb,
)
from timecoin.core.address import decode_address
from timecoin.core.errors import (
    DecodeError,
    DustOutput,
    InsufficientFunds,
    MemoTooLarge,
    TimecoinError,
    TooManyItems,
    ValueOverflow,
    WrongOwner,
)
from timecoin.core.keys import pubkey_hash, validate_pubkey
from timecoin.core.params import ChainParams
from timecoin.core.signing import tx_sign_digest
from timecoin.core.types import (
    MAX_MONEY_UNITS,
    SIGNATURE_LEN,
    Coin,
    OutPoint,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
)
from timecoin.wire.codec import decode_transaction, encode_tx_body
from timecoin.wire.limits import Limits

MAX_STREAM_BATCH = 1_000
"""Transactions in one SubmitTransactionStream request."""
MAX_PAYMENTS = 100
"""Payments in one BuildTransaction request."""
MAX_COINS_SCANNED = 10_000
"""Unspent outputs BuildTransaction looks at (pages of 1,000)."""
DEFAULT_ESTIMATE_SIZE = 250
"""Size EstimateFee prices when the request gives none (one input, two outputs)."""


def _size_with_signatures(body_bytes: bytes, n_inputs: int) -> int:
    """Return the encoded size of the signed transaction (what the fee rate applies to)."""
    msg = types_pb2.Transaction(body_bytes=body_bytes, signatures=[bytes(SIGNATURE_LEN)] * n_inputs)
    return int(msg.ByteSize())


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    """Serves wallet methods from a ``NodeBackend``."""

    def __init__(self, backend: NodeBackend, rate_limiter: SubmitRateLimiter) -> None:
        self._backend = backend
        self._rate = rate_limiter
        self._limits = Limits.from_params(backend.params)

    def _decode(self, msg: types_pb2.Transaction) -> Transaction:
        return decode_transaction(msg, self._backend.params.network, limits=self._limits)

    @guard_unary
    async def SubmitTransaction(  # noqa: N802 - gRPC method names
        self, request: wallet_pb2.SubmitTransactionRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.SubmitTransactionResponse:
        self._rate.check(context.peer() or "", 1)
        if not request.HasField("transaction"):
            raise DecodeError("request has no transaction")
        tx = self._decode(request.transaction)
        (result,) = await self._backend.submit([tx])
        if result is not None:
            raise result
        return wallet_pb2.SubmitTransactionResponse(txid=tx.txid)

    @guard_stream_stream
    async def SubmitTransactionStream(  # noqa: N802
        self,
        requests: AsyncIterator[wallet_pb2.SubmitTransactionStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[wallet_pb2.SubmitTransactionStreamResponse]:
        peer = context.peer() or ""
        async for request in requests:
            n = len(request.transactions)
            if n > MAX_STREAM_BATCH:
                raise TooManyItems(f"{n} transactions in one request; at most {MAX_STREAM_BATCH}")
            self._rate.check(peer, n)
            yield await self._submit_batch(request.transactions)

    async def _submit_batch(
        self, msgs: Sequence[types_pb2.Transaction]
    ) -> wallet_pb2.SubmitTransactionStreamResponse:
        # Results are built in place in the response (no copy per transaction).
        response = wallet_pb2.SubmitTransactionStreamResponse()
        add = response.results.add
        decoded: list[Transaction] = []
        slots: list[int] = []
        for n, msg in enumerate(msgs):
            if n and not n % LOOP_SLICE:
                await asyncio.sleep(0)  # see LOOP_SLICE
            try:
                tx = self._decode(msg)
            except TimecoinError as err:
                txid = hashlib.sha256(msg.body_bytes).digest() if msg.body_bytes else b""
                add(txid=txid, rejection=rejection_to_pb(err))
                continue
            slots.append(n)
            add(txid=tx.txid)
            decoded.append(tx)
        if decoded:
            outcome = await self._backend.submit(decoded)
            results = response.results
            for i, rejected in zip(slots, outcome, strict=True):
                if rejected is not None:
                    results[i].rejection.CopyFrom(rejection_to_pb(rejected))
        return response

    @guard_unary
    async def EstimateFee(  # noqa: N802
        self, request: wallet_pb2.EstimateFeeRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.EstimateFeeResponse:
        policy = await self._backend.fee_policy()
        size = request.size_bytes or DEFAULT_ESTIMATE_SIZE
        return wallet_pb2.EstimateFeeResponse(
            fee_rate_units_per_kb=policy.min_fee_units_per_kb,
            fee=_fee(policy.min_fee_units_per_kb, size),
            dust_limit=policy.dust_limit_units,
        )

    @guard_unary
    async def BuildTransaction(  # noqa: N802
        self, request: wallet_pb2.BuildTransactionRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.BuildTransactionResponse:
        params = self._backend.params
        owner = decode_address(request.from_address, params.network)
        pubkey = bytes(request.from_pubkey)
        validate_pubkey(pubkey)
        if pubkey_hash(pubkey) != owner:
            raise WrongOwner("from_pubkey does not belong to from_address")
        if len(request.memo) > params.max_memo_bytes:
            raise MemoTooLarge(f"memo longer than {params.max_memo_bytes} bytes")
        if not request.payments:
            raise DecodeError("no payments")
        if len(request.payments) > min(MAX_PAYMENTS, params.max_outputs - 1):
            raise TooManyItems(f"at most {min(MAX_PAYMENTS, params.max_outputs - 1)} payments")
        policy = await self._backend.fee_policy()
        outputs = []
        for p in request.payments:
            if p.amount < policy.dust_limit_units:
                raise DustOutput(
                    f"payment of {p.amount} units is below the dust limit {policy.dust_limit_units}"
                )
            outputs.append(
                TxOut(amount=p.amount, pubkey_hash=decode_address(p.address, params.network))
            )
        pay_total = sum(o.amount for o in outputs)
        if pay_total > MAX_MONEY_UNITS:
            raise ValueOverflow("payments exceed the money bound")
        rate = max(request.fee_rate_units_per_kb, policy.min_fee_units_per_kb)
        coins = await self._spendable(owner)
        body, fee = _select_and_build(
            params,
            coins,
            outputs,
            pubkey,
            owner,
            bytes(request.memo),
            rate,
            policy.dust_limit_units,
        )
        body_bytes = encode_tx_body(body, params.network)
        return wallet_pb2.BuildTransactionResponse(
            body_bytes=body_bytes,
            txid=hashlib.sha256(body_bytes).digest(),
            fee=fee,
            sign_digest=tx_sign_digest(params.chain_id, body_bytes),
            input_count=len(body.inputs),
        )

    async def _spendable(self, owner: bytes) -> list[tuple[OutPoint, Coin]]:
        coins: list[tuple[OutPoint, Coin]] = []
        after: OutPoint | None = None
        while len(coins) < MAX_COINS_SCANNED:
            page = await self._backend.list_unspent(owner, 1_000, after, exclude_mempool_spent=True)
            coins.extend(page)
            if len(page) < 1_000:
                break
            after = page[-1][0]
        return coins


def _fee(rate_units_per_kb: int, size: int) -> int:
    return (rate_units_per_kb * size + 999) // 1000


def _select_and_build(
    params: ChainParams,
    coins: list[tuple[OutPoint, Coin]],
    outputs: list[TxOut],
    pubkey: bytes,
    owner: bytes,
    memo: bytes,
    rate: int,
    dust: int,
) -> tuple[TxBody, int]:
    """Pick coins largest first until payments plus fee are covered; add change if not dust."""
    pay_total = sum(o.amount for o in outputs)
    coins = sorted(coins, key=lambda c: (-c[1].amount, c[0]))
    max_inputs = params.max_inputs
    chosen: list[tuple[OutPoint, Coin]] = []
    in_total = 0

    def body_for(change: int) -> TxBody:
        outs = list(outputs)
        if change:
            outs.append(TxOut(amount=change, pubkey_hash=owner))
        return TxBody(
            version=params.tx_version,
            chain_id=params.chain_id,
            inputs=tuple(TxIn(prev_out=op, pubkey=pubkey) for op, _ in chosen),
            outputs=tuple(outs),
            memo=memo,
        )

    def fee_of(body: TxBody) -> int:
        body_bytes = encode_tx_body(body, params.network)
        return _fee(rate, _size_with_signatures(body_bytes, len(body.inputs)))

    for op, coin in coins:
        if len(chosen) >= max_inputs:
            break
        chosen.append((op, coin))
        in_total += coin.amount
        if in_total < pay_total:
            continue
        # With change: the change amount's varint width changes the size by a
        # few bytes, so start from a placeholder of the largest width (a safe
        # upper bound) and tighten to the exact minimum for the final size.
        upper = fee_of(body_for(MAX_MONEY_UNITS))
        fee = upper
        for _ in range(4):
            change = in_total - pay_total - fee
            if change < dust:
                break
            exact = fee_of(body_for(change))
            if exact == fee:
                return body_for(change), fee
            fee = exact
        change = in_total - pay_total - upper
        if change >= dust:
            return body_for(change), upper
        without = body_for(0)
        fee = fee_of(without)
        if in_total - pay_total >= fee:
            # The leftover below the dust limit goes to the fee.
            return without, in_total - pay_total
    available = sum(c.amount for _, c in coins)
    raise InsufficientFunds(
        f"need {pay_total} units plus fee; {available} units spendable in {len(coins)} outputs"
        + (f" (at most {max_inputs} inputs)" if len(coins) > max_inputs else ""),
        available=available,
    )
