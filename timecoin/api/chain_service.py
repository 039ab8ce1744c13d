"""``timecoin.chain.v1.ChainService``: read-only queries and subscriptions.

No credential is needed. Every answer is bounded: ListUnspent pages (at most
``MAX_UNSPENT_LIMIT``), subscriptions have a bounded queue per subscriber and
a bounded number of subscribers; a subscriber that falls behind gets one final
message with ``dropped`` set and its stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import grpc.aio

from timecoin import __version__
from timecoin._proto.chain.v1 import chain_pb2, chain_pb2_grpc
from timecoin.api.backend import BlockInfo, NodeBackend, TxState, TxStatus
from timecoin.api.errors import guard_unary, guard_unary_stream, rejection_to_pb
from timecoin.core.address import decode_address, encode_address
from timecoin.core.errors import DecodeError, NotFound, RateLimited
from timecoin.core.types import HASH_LEN
from timecoin.wire.codec import (
    block_to_pb,
    commit_to_pb,
    outpoint_from_pb,
    outpoint_to_pb,
    transaction_to_pb,
    validator_set_to_pb,
)

DEFAULT_UNSPENT_LIMIT = 100
MAX_UNSPENT_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class SubscriptionLimits:
    """Bounds on streaming subscriptions."""

    max_subscribers: int = 128
    """Concurrent SubscribeBlocks + SubscribeTransaction streams; more get RATE_LIMITED."""
    max_queue: int = 64
    """Blocks a subscriber may have undelivered before it is dropped."""
    tx_watch_timeout_s: float = 600.0
    """A SubscribeTransaction stream ends after this long without a final status."""


class _Slots:
    """A counter of open subscriptions (bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextlib.contextmanager
    def take(self) -> Any:
        if self.used >= self.limit:
            raise RateLimited(f"too many subscriptions (limit {self.limit}); try again later")
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


def _hash_arg(value: bytes, what: str) -> bytes:
    if len(value) != HASH_LEN:
        raise DecodeError(f"{what} must be {HASH_LEN} bytes, got {len(value)}")
    return bytes(value)


def _fill_block(msg: Any, info: BlockInfo, include_transactions: bool = True) -> None:
    """Fill the ``Block`` field *msg* of a response in place from *info*.

    In place: a full block is parsed straight into the response from its
    stored bytes (building it apart and assigning it copies every transaction
    again, a few ms for a full block on the loop). Without transactions, only
    the rest of the block is converted.
    """
    if not include_transactions:
        msg.CopyFrom(block_to_pb(replace(info.block, txs=())))
    elif info.block_bytes:
        msg.MergeFromString(info.block_bytes)
    else:
        msg.CopyFrom(block_to_pb(info.block))


class ChainService(chain_pb2_grpc.ChainServiceServicer):
    """Serves the chain queries from a ``NodeBackend``."""

    def __init__(self, backend: NodeBackend, limits: SubscriptionLimits | None = None) -> None:
        self._backend = backend
        self._limits = limits or SubscriptionLimits()
        self._slots = _Slots(self._limits.max_subscribers)

    @property
    def subscribers(self) -> int:
        """Number of open subscription streams."""
        return self._slots.used

    @guard_unary
    async def GetStatus(  # noqa: N802 - gRPC method names
        self, request: chain_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> chain_pb2.GetStatusResponse:
        s = await self._backend.status()
        return chain_pb2.GetStatusResponse(
            chain_id=s.chain_id,
            network=s.network,
            height=s.height,
            tip_hash=s.tip_hash,
            tip_time_ms=s.tip_time_ms,
            utxo_commitment=s.utxo_commitment,
            genesis_hash=s.genesis_hash,
            node_version=__version__,
            node_id=s.node_id,
            peers=s.peers,
            syncing=s.syncing,
            mempool_size=s.mempool_size,
        )

    @guard_unary
    async def GetBlock(  # noqa: N802
        self, request: chain_pb2.GetBlockRequest, context: grpc.aio.ServicerContext
    ) -> chain_pb2.GetBlockResponse:
        which = request.WhichOneof("selector")
        if which == "height":
            info = await self._backend.get_block(request.height, None)
            what = f"block at height {request.height}"
        elif which == "hash":
            block_hash = _hash_arg(request.hash, "block hash")
            info = await self._backend.get_block(None, block_hash)
            what = f"block {block_hash.hex()}"
        else:
            raise DecodeError("GetBlock needs a height or a hash")
        if info is None:
            raise NotFound(f"no {what}")
        resp = chain_pb2.GetBlockResponse(block_hash=info.hash, height=info.height)
        _fill_block(resp.block, info)
        if info.commit is not None:
            resp.commit.CopyFrom(commit_to_pb(info.commit))
        return resp

    @guard_unary
    async def GetTransaction(  # noqa: N802
        self, request: chain_pb2.GetTransactionRequest, context: grpc.aio.ServicerContext
    ) -> chain_pb2.GetTransactionResponse:
        txid = _hash_arg(request.txid, "txid")
        info = await self._backend.get_transaction(txid)
        if info is None:
            raise NotFound(f"no finalized transaction {txid.hex()}")
        resp = chain_pb2.GetTransactionResponse(
            transaction=transaction_to_pb(info.tx),
            height=info.height,
            position=info.position,
            block_hash=info.block_hash,
            header_bytes=info.header_bytes,
            merkle_proof=list(info.merkle_proof),
            tx_count=info.tx_count,
        )
        if info.commit is not None:
            resp.commit.CopyFrom(commit_to_pb(info.commit))
        return resp

    @guard_unary
    async def ListUnspent(  # noqa: N802
        self, request: chain_pb2.ListUnspentRequest, context: grpc.aio.ServicerContext
    ) -> chain_pb2.ListUnspentResponse:
        params = self._backend.params
        payload = decode_address(request.address, params.network)
        limit = request.limit or DEFAULT_UNSPENT_LIMIT
        limit = min(limit, MAX_UNSPENT_LIMIT)
        after = outpoint_from_pb(request.after) if request.HasField("after") else None
        # One extra row tells whether another page follows.
        rows = await self._backend.list_unspent(payload, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        status = await self._backend.status()
        return chain_pb2.ListUnspentResponse(
            unspent=[
                chain_pb2.Unspent(
                    out_point=outpoint_to_pb(op),
                    amount=coin.amount,
                    address=encode_address(coin.pubkey_hash, params.network),
                    height=coin.height,
                    coinbase=coin.is_coinbase,
                )
                for op, coin in rows
            ],
            total_amount=sum(coin.amount for _, coin in rows),
            height=status.height,
            more=more,
        )

    @guard_unary
    async def GetValidatorSet(  # noqa: N802
        self, request: chain_pb2.GetValidatorSetRequest, context: grpc.aio.ServicerContext
    ) -> chain_pb2.GetValidatorSetResponse:
        height, vs = await self._backend.validator_set(request.height or None)
        return chain_pb2.GetValidatorSetResponse(
            height=height, validator_set=validator_set_to_pb(vs), total_power=vs.total_power
        )

    @guard_unary_stream
    async def SubscribeBlocks(  # noqa: N802
        self, request: chain_pb2.SubscribeBlocksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chain_pb2.SubscribeBlocksResponse]:
        with self._slots.take():
            sub = self._backend.subscribe_blocks(self._limits.max_queue)
            last = 0
            try:
                async for info in sub:
                    last = info.height
                    resp = chain_pb2.SubscribeBlocksResponse(
                        height=info.height, block_hash=info.hash
                    )
                    _fill_block(resp.block, info, request.include_transactions)
                    if request.include_txids:
                        resp.txids.extend([tx.txid for tx in info.block.txs])
                    yield resp
                if sub.dropped:
                    yield chain_pb2.SubscribeBlocksResponse(
                        dropped=chain_pb2.SubscriberDropped(
                            reason="subscriber fell behind; resubscribe", last_height_sent=last
                        ),
                        height=last,
                    )
            finally:
                sub.close()

    @guard_unary_stream
    async def SubscribeTransaction(  # noqa: N802
        self, request: chain_pb2.SubscribeTransactionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[chain_pb2.SubscribeTransactionResponse]:
        txid = _hash_arg(request.txid, "txid")
        with self._slots.take():
            # Subscribe before the first status read so a block committed in
            # between is not missed.
            sub = self._backend.subscribe_blocks(self._limits.max_queue)
            try:
                async for msg in self._watch_tx(txid, sub):
                    yield msg
            finally:
                sub.close()

    async def _watch_tx(
        self, txid: bytes, sub: Any
    ) -> AsyncIterator[chain_pb2.SubscribeTransactionResponse]:
        last_state: TxState | None = None
        blocks = aiter(sub)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.tx_watch_timeout_s
        while True:
            status = await self._backend.tx_status(txid)
            if status.state != last_state:
                last_state = status.state
                yield _tx_status_pb(status)
            if status.state in (TxState.FINAL, TxState.REJECTED):
                return
            # Wait for the next block: finality and mempool evictions both happen then.
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    info: BlockInfo = await anext(blocks)
            except TimeoutError:
                return
            except StopAsyncIteration:
                if sub.dropped:
                    yield chain_pb2.SubscribeTransactionResponse(
                        status=_state_pb(last_state),
                        dropped=chain_pb2.SubscriberDropped(
                            reason="subscriber fell behind; resubscribe"
                        ),
                    )
                return
            del info


def _state_pb(state: TxState | None) -> Any:
    return int(state) if state is not None else chain_pb2.TRANSACTION_STATUS_UNSPECIFIED


def _tx_status_pb(status: TxStatus) -> chain_pb2.SubscribeTransactionResponse:
    msg = chain_pb2.SubscribeTransactionResponse(
        status=_state_pb(status.state), height=status.height, block_hash=status.block_hash
    )
    if status.error is not None:
        msg.rejection.CopyFrom(rejection_to_pb(status.error))
    return msg
