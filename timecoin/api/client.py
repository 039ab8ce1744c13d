"""A small async client for the client listener (used by the CLI, tests and bench).

Every failed call raises the ``TimecoinError`` subclass of its reason (read
from the trailing metadata, ``timecoin.api.errors.error_from_rpc``); a node
that cannot be reached raises ``NodeUnavailable``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from timecoin._proto.chain.v1 import chain_pb2, chain_pb2_grpc
from timecoin._proto.types.v1 import types_pb2
from timecoin._proto.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from timecoin.api.auth import bearer_metadata, read_cookie
from timecoin.api.errors import error_from_rpc, rejection_from_pb
from timecoin.api.server import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from timecoin.core.errors import Reason, TimecoinError
from timecoin.core.types import OutPoint, Transaction
from timecoin.wire.codec import outpoint_to_pb, transaction_to_pb


class NodeUnavailable(TimecoinError):  # noqa: N818 - named like core.errors
    """The node did not answer (not running, wrong address, or shutting down)."""

    reason = Reason.INTERNAL


def _raise(exc: grpc.RpcError, target: str) -> TimecoinError:
    code = exc.code() if hasattr(exc, "code") else None
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    if not any(k == "timecoin-reason" for k, _ in trailers or ()):
        detail = exc.details() if hasattr(exc, "details") else ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return NodeUnavailable(f"cannot reach the node at {target} ({detail})")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return NodeUnavailable(f"no answer from the node at {target} in time")
    return error_from_rpc(exc)


class ApiClient:
    """Typed calls to one node; use as ``async with ApiClient(target, token=...)``."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.target = target
        self.token = token
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
            ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
            # One ApiClient, one connection: the node limits submissions per
            # connection, and gRPC would otherwise share one between clients.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if root_certificates is not None:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.aio.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options=options)
        self.chain = chain_pb2_grpc.ChainServiceStub(self.channel)
        self.wallet = wallet_pb2_grpc.WalletServiceStub(self.channel)

    @classmethod
    def from_cookie(cls, target: str, cookie_file: Path | None, **kwargs: Any) -> ApiClient:
        """Return a client that presents the token in *cookie_file* (if given and readable)."""
        token = read_cookie(cookie_file) if cookie_file is not None else None
        return cls(target, token=token, **kwargs)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _auth(self) -> tuple[tuple[str, str], ...]:
        return bearer_metadata(self.token) if self.token else ()

    async def _unary(self, method: Any, request: Any, *, auth: bool = False) -> Any:
        try:
            return await method(
                request, timeout=self.timeout_s, metadata=self._auth() if auth else None
            )
        except grpc.RpcError as exc:
            raise _raise(exc, self.target) from None

    # --- chain ---------------------------------------------------------------

    async def status(self) -> chain_pb2.GetStatusResponse:
        """Return the node's status."""
        return await self._unary(self.chain.GetStatus, chain_pb2.GetStatusRequest())

    async def get_block(
        self, *, height: int | None = None, block_hash: bytes | None = None
    ) -> chain_pb2.GetBlockResponse:
        """Return a block by height or by hash."""
        req = (
            chain_pb2.GetBlockRequest(height=height)
            if height is not None
            else chain_pb2.GetBlockRequest(hash=block_hash or b"")
        )
        return await self._unary(self.chain.GetBlock, req)

    async def get_transaction(self, txid: bytes) -> chain_pb2.GetTransactionResponse:
        """Return a finalized transaction with its proof."""
        return await self._unary(
            self.chain.GetTransaction, chain_pb2.GetTransactionRequest(txid=txid)
        )

    async def list_unspent(
        self, address: str, *, limit: int = 0, after: OutPoint | None = None
    ) -> chain_pb2.ListUnspentResponse:
        """Return one page of unspent outputs of *address*."""
        req = chain_pb2.ListUnspentRequest(address=address, limit=limit)
        if after is not None:
            req.after.CopyFrom(outpoint_to_pb(after))
        return await self._unary(self.chain.ListUnspent, req)

    async def balance(self, address: str, *, max_pages: int = 1_000) -> tuple[int, int, int]:
        """Return ``(total units, output count, height)`` of *address* over all pages."""
        total = count = height = 0
        after: OutPoint | None = None
        for _ in range(max_pages):
            page = await self.list_unspent(address, limit=1_000, after=after)
            total += page.total_amount
            count += len(page.unspent)
            height = page.height
            if not page.more or not page.unspent:
                break
            last = page.unspent[-1].out_point
            after = OutPoint(bytes(last.txid), last.index)
        return total, count, height

    async def validator_set(self, height: int = 0) -> chain_pb2.GetValidatorSetResponse:
        """Return the validator set of *height* (0: the next height)."""
        return await self._unary(
            self.chain.GetValidatorSet, chain_pb2.GetValidatorSetRequest(height=height)
        )

    async def subscribe_blocks(
        self, *, include_transactions: bool = False, include_txids: bool = False
    ) -> AsyncIterator[chain_pb2.SubscribeBlocksResponse]:
        """Yield finalized blocks as they come (ends with a ``dropped`` message if cut off).

        *include_txids* lists each block's txids in ``txids`` (block order).
        """
        call = self.chain.SubscribeBlocks(
            chain_pb2.SubscribeBlocksRequest(
                include_transactions=include_transactions, include_txids=include_txids
            )
        )
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as exc:
            raise _raise(exc, self.target) from None
        finally:
            call.cancel()

    async def subscribe_transaction(
        self, txid: bytes, *, timeout_s: float | None = None
    ) -> AsyncIterator[chain_pb2.SubscribeTransactionResponse]:
        """Yield status changes of *txid* until it is final or rejected."""
        call = self.chain.SubscribeTransaction(
            chain_pb2.SubscribeTransactionRequest(txid=txid), timeout=timeout_s
        )
        try:
            async for msg in call:
                yield msg
        except grpc.RpcError as exc:
            raise _raise(exc, self.target) from None
        finally:
            call.cancel()

    async def wait_final(self, txid: bytes, *, timeout_s: float = 120.0) -> tuple[int, bytes]:
        """Wait until *txid* is final; return ``(height, block_hash)``.

        Raises the rejection's error if the node rejects it, and NodeUnavailable
        (DEADLINE) if it is not final within *timeout_s*.
        """
        last = None
        try:
            async for msg in self.subscribe_transaction(txid, timeout_s=timeout_s):
                last = msg.status
                if msg.status == chain_pb2.TRANSACTION_STATUS_FINAL:
                    return msg.height, bytes(msg.block_hash)
                if msg.status == chain_pb2.TRANSACTION_STATUS_REJECTED:
                    raise rejection_from_pb(msg.rejection)
                if msg.HasField("dropped"):
                    break
        except NodeUnavailable:
            if last is None:
                raise
        name = chain_pb2.TransactionStatus.Name(last) if last is not None else "no status"
        raise NodeUnavailable(
            f"transaction {txid.hex()} not final within {timeout_s:g} s (last status {name})"
        )

    # --- wallet --------------------------------------------------------------

    async def submit(self, tx: Transaction | types_pb2.Transaction) -> bytes:
        """Submit one signed transaction; return its txid (raises its rejection)."""
        msg = transaction_to_pb(tx) if isinstance(tx, Transaction) else tx
        resp = await self._unary(
            self.wallet.SubmitTransaction,
            wallet_pb2.SubmitTransactionRequest(transaction=msg),
            auth=True,
        )
        return bytes(resp.txid)

    async def submit_stream(
        self, batches: AsyncIterator[Sequence[types_pb2.Transaction]]
    ) -> AsyncIterator[list[tuple[bytes, TimecoinError | None]]]:
        """Submit batches over one stream; yield per-batch ``(txid, error or None)`` lists."""

        async def requests() -> AsyncIterator[wallet_pb2.SubmitTransactionStreamRequest]:
            async for batch in batches:
                yield wallet_pb2.SubmitTransactionStreamRequest(transactions=list(batch))

        call = self.wallet.SubmitTransactionStream(requests(), metadata=self._auth())
        try:
            async for resp in call:
                yield [
                    (
                        bytes(r.txid),
                        rejection_from_pb(r.rejection) if r.rejection.reason else None,
                    )
                    for r in resp.results
                ]
        except grpc.RpcError as exc:
            raise _raise(exc, self.target) from None
        finally:
            call.cancel()

    async def build_transaction(
        self,
        from_address: str,
        from_pubkey: bytes,
        payments: Sequence[tuple[str, int]],
        *,
        fee_rate_units_per_kb: int = 0,
        memo: bytes = b"",
    ) -> wallet_pb2.BuildTransactionResponse:
        """Ask the node to build an unsigned transaction paying *payments*."""
        req = wallet_pb2.BuildTransactionRequest(
            from_address=from_address,
            from_pubkey=from_pubkey,
            payments=[wallet_pb2.Payment(address=a, amount=n) for a, n in payments],
            fee_rate_units_per_kb=fee_rate_units_per_kb,
            memo=memo,
        )
        return await self._unary(self.wallet.BuildTransaction, req)

    async def estimate_fee(self, size_bytes: int = 0) -> wallet_pb2.EstimateFeeResponse:
        """Return the current fee rate, the fee for *size_bytes* and the dust limit."""
        return await self._unary(
            self.wallet.EstimateFee, wallet_pb2.EstimateFeeRequest(size_bytes=size_bytes)
        )
