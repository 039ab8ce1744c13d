"""The listener itself: auth, bad input, limits, health, reflection, binding rules, errors."""

from __future__ import annotations

import os
import stat

import grpc
import grpc.aio
import pytest
from api_fake_node import TIME, FakeNode, pay, running, test_key
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from timecoin._proto.chain.v1 import chain_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin._proto.wallet.v1 import wallet_pb2
from timecoin.api.auth import SubmitRateLimiter, read_cookie
from timecoin.api.client import ApiClient, NodeUnavailable
from timecoin.api.errors import REASON_STATUS, error_from_rpc, status_code_for
from timecoin.api.server import MAX_REQUEST_BYTES, ApiServer, ApiSettings
from timecoin.core.errors import (
    ConfigError,
    DecodeError,
    NonCanonical,
    Oversized,
    RateLimited,
    Reason,
    Unauthenticated,
)
from timecoin.wire.codec import transaction_to_pb

ALICE = test_key(1)
BOB = test_key(2)
SUBMIT = "/timecoin.wallet.v1.WalletService/SubmitTransaction"
STATUS = "/timecoin.chain.v1.ChainService/GetStatus"


def _raw(channel: grpc.aio.Channel, method: str):  # type: ignore[no-untyped-def]
    """A call that sends bytes exactly as given (no serializer)."""
    return channel.unary_unary(method)


def test_every_reason_has_a_status_code() -> None:
    assert set(REASON_STATUS) == set(Reason)
    assert status_code_for(Reason.DOUBLE_SPEND) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_code_for(Reason.BAD_SIGNATURE) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(Reason.MEMPOOL_FULL) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code_for(Reason.ALREADY_KNOWN) == grpc.StatusCode.ALREADY_EXISTS
    assert status_code_for(Reason.UNAUTHENTICATED) == grpc.StatusCode.UNAUTHENTICATED


async def test_cookie_is_private_and_removed_on_clean_stop(tmp_path) -> None:
    cookie = tmp_path / ".cookie"
    async with running(tmp_path) as r:
        mode = stat.S_IMODE(os.stat(cookie).st_mode)
        assert mode == 0o600
        token = read_cookie(cookie)
        assert len(bytes.fromhex(token)) == 32
        assert r.server.cookie.token == token
    assert not cookie.exists()


async def test_submission_needs_the_credential(tmp_path) -> None:
    node = FakeNode()
    (a,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, a, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        target = f"127.0.0.1:{r.server.port}"
        async with ApiClient(target) as anonymous:
            with pytest.raises(Unauthenticated):
                await anonymous.submit(tx)
            assert (await anonymous.status()).chain_id  # reads need nothing

            async def one():  # type: ignore[no-untyped-def]
                yield [transaction_to_pb(tx)]

            with pytest.raises(Unauthenticated):
                async for _ in anonymous.submit_stream(one()):
                    pass
        async with ApiClient(target, token="00" * 32) as wrong:
            with pytest.raises(Unauthenticated) as e:
                await wrong.submit(tx)
            assert e.value.reason == Reason.UNAUTHENTICATED
        assert node.submit_calls == 0
        assert await r.client.submit(tx) == tx.txid


async def test_rejection_travels_in_metadata_and_rich_status(tmp_path) -> None:
    async with running(tmp_path) as r:
        channel = r.client.channel
        call = channel.unary_unary(
            "/timecoin.chain.v1.ChainService/GetBlock",
            request_serializer=chain_pb2.GetBlockRequest.SerializeToString,
            response_deserializer=chain_pb2.GetBlockResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call(chain_pb2.GetBlockRequest(height=99))
        exc = e.value
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        trailers = dict(exc.trailing_metadata())
        assert trailers["timecoin-reason"] == "NOT_FOUND"
        rejection = types_pb2.Rejection.FromString(trailers["timecoin-rejection-bin"])
        assert rejection.reason == types_pb2.REASON_NOT_FOUND
        # google.rpc.Status{code=1, message=2, details=3 (Any)}, read generically.
        status = empty_pb2.Empty.FromString(trailers["grpc-status-details-bin"])
        fields = {f.field_number: f.data for f in UnknownFieldSet(status)}
        assert fields[1] == grpc.StatusCode.NOT_FOUND.value[0]
        detail = any_pb2.Any.FromString(fields[3])
        unpacked = types_pb2.Rejection()
        assert detail.Unpack(unpacked) and unpacked == rejection
        assert error_from_rpc(exc).reason == Reason.NOT_FOUND


async def test_malformed_request_bytes_are_typed_and_server_keeps_serving(tmp_path) -> None:
    async with running(tmp_path) as r:
        md = (("authorization", "Bearer " + r.server.cookie.token),)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, SUBMIT)(b"\xff\xff\xff\xff", metadata=md)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(error_from_rpc(e.value), DecodeError)
        assert error_from_rpc(e.value).reason == Reason.MALFORMED
        assert (await r.client.status()).chain_id == r.node.params.chain_id


async def test_unknown_request_fields_are_rejected(tmp_path) -> None:
    async with running(tmp_path) as r:
        raw = chain_pb2.GetStatusRequest().SerializeToString() + b"\xa0\x06\x01"
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, STATUS)(raw)
        assert isinstance(error_from_rpc(e.value), NonCanonical)
        # Nested: an OutPoint with an extra field inside ListUnspent.
        req = chain_pb2.ListUnspentRequest(address="x")
        req.after.txid = bytes(32)
        after_bytes = req.after.SerializeToString() + b"\xa0\x06\x01"
        raw = chain_pb2.ListUnspentRequest(address="x").SerializeToString()
        raw += b"\x1a" + bytes([len(after_bytes)]) + after_bytes
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, "/timecoin.chain.v1.ChainService/ListUnspent")(raw)
        assert error_from_rpc(e.value).reason == Reason.NON_CANONICAL


async def test_oversized_requests_are_refused(tmp_path) -> None:
    async with running(tmp_path) as r:
        md = (("authorization", "Bearer " + r.server.cookie.token),)
        # Above the per-method bound (a transaction is at most max_tx_bytes): typed OVERSIZED.
        big = wallet_pb2.SubmitTransactionRequest(
            transaction=types_pb2.Transaction(body_bytes=b"\x00" * 200_000)
        ).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, SUBMIT)(big, metadata=md)
        assert isinstance(error_from_rpc(e.value), Oversized)
        # Above gRPC's own receive limit: refused before any of our code runs.
        huge = b"\x0a" + b"\x80\x80\x81\x02" + b"\x00" * (MAX_REQUEST_BYTES + 10)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, STATUS)(huge)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_from_rpc(e.value).reason == Reason.OVERSIZED
        assert (await r.client.status()).height == 0


async def test_flood_from_one_connection_is_rate_limited(tmp_path) -> None:
    node = FakeNode()
    coins = node.fund(ALICE, [10 * TIME] * 6)
    txs = [pay(node, ALICE, c, TIME, BOB.address_payload, change=8 * TIME) for c in coins]
    async with running(tmp_path, node, submit_rate_per_s=0.001, submit_burst=3) as r:
        for tx in txs[:3]:
            await r.client.submit(tx)
        with pytest.raises(RateLimited) as e:
            await r.client.submit(txs[3])
        assert e.value.reason == Reason.RATE_LIMITED
        # Another connection has its own bucket; the flooder does not starve it.
        other = ApiClient(r.client.target, token=r.client.token)
        try:
            assert await other.submit(txs[4]) == txs[4].txid
        finally:
            await other.close()
        assert len(node.mempool) == 4


def test_rate_limiter_refills_and_forgets_old_peers() -> None:
    now = [0.0]
    rl = SubmitRateLimiter(10, 10, max_peers=2, clock=lambda: now[0])
    rl.check("a", 10)
    with pytest.raises(RateLimited):
        rl.check("a", 1)
    now[0] = 0.5
    rl.check("a", 5)  # half a second refilled five
    rl.check("b", 1)
    rl.check("c", 1)  # evicts "a", the least recently used
    assert len(rl._buckets) == 2 and "a" not in rl._buckets


async def test_unexpected_exception_is_internal_without_traceback(tmp_path, caplog) -> None:
    node = FakeNode()

    async def broken():  # type: ignore[no-untyped-def]
        raise KeyError("secret internal detail")

    node.status = broken  # type: ignore[method-assign]
    async with running(tmp_path, node) as r:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await _raw(r.client.channel, STATUS)(b"")
        assert e.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (e.value.details() or "")
        assert dict(e.value.trailing_metadata())["timecoin-reason"] == "INTERNAL"
    assert any("secret internal detail" in (rec.exc_text or "") for rec in caplog.records)


async def test_health_and_reflection(tmp_path) -> None:
    async with running(tmp_path) as r:
        health = health_pb2_grpc.HealthStub(r.client.channel)
        for name in ("", "timecoin.chain.v1.ChainService", "timecoin.wallet.v1.WalletService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=name))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        await r.server.set_serving(False)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING

        refl = reflection_pb2_grpc.ServerReflectionStub(r.client.channel)

        async def ask():  # type: ignore[no-untyped-def]
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            yield reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="timecoin.wallet.v1.WalletService"
            )

        answers = [a async for a in refl.ServerReflectionInfo(ask())]
        names = {s.name for s in answers[0].list_services_response.service}
        assert {
            "timecoin.chain.v1.ChainService",
            "timecoin.wallet.v1.WalletService",
            "grpc.health.v1.Health",
        } <= names
        assert answers[1].file_descriptor_response.file_descriptor_proto


def test_non_loopback_without_tls_is_refused(tmp_path) -> None:
    node = FakeNode()
    for listen in ("0.0.0.0:0", "192.0.2.1:0", "[::]:0", "example.com:24001"):
        with pytest.raises(ConfigError, match="without TLS"):
            ApiServer(node, ApiSettings(listen=listen, cookie_file=tmp_path / "c"))
    with pytest.raises(ConfigError, match="both"):
        ApiServer(node, ApiSettings(listen="0.0.0.0:0", tls_cert_file=tmp_path / "cert.pem"))
    with pytest.raises(ConfigError, match="host:port"):
        ApiServer(node, ApiSettings(listen="127.0.0.1"))


async def test_unreachable_node_is_a_typed_error() -> None:
    async with ApiClient("127.0.0.1:1", timeout_s=2) as client:
        with pytest.raises(NodeUnavailable):
            await client.status()


async def test_tls_listener(tmp_path) -> None:
    from timecoin.testing.tls import self_signed_pem

    cert_pem, key_pem = self_signed_pem("localhost")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server = ApiServer(
        FakeNode(),
        ApiSettings(
            listen="127.0.0.1:0",
            cookie_file=tmp_path / ".cookie",
            tls_cert_file=tmp_path / "cert.pem",
            tls_key_file=tmp_path / "key.pem",
        ),
    )
    await server.start()
    try:
        async with ApiClient(f"localhost:{server.port}", root_certificates=cert_pem) as c:
            assert (await c.status()).chain_id == "timecoin-devnet-1"
        async with ApiClient(f"127.0.0.1:{server.port}", timeout_s=2) as plaintext:
            with pytest.raises(NodeUnavailable):
                await plaintext.status()
    finally:
        await server.stop(0)


def test_settings_from_config(tmp_path) -> None:
    from timecoin.config import parse_config

    cfg = parse_config({"network": "testnet"})
    s = ApiSettings.from_config(cfg, tmp_path)
    assert s.listen == "127.0.0.1:24101"
    assert s.cookie_file == tmp_path / ".cookie"
    assert s.tls_cert_file is None and s.tls_key_file is None


async def test_extra_interceptors_see_every_call(tmp_path) -> None:
    seen: list[str] = []

    class Recorder(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            seen.append(details.method)
            return await continuation(details)

    node = FakeNode()
    server = ApiServer(node, ApiSettings(listen="127.0.0.1:0"), interceptors=[Recorder()])
    await server.start()
    try:
        async with ApiClient(f"127.0.0.1:{server.port}") as c:
            await c.status()
            with pytest.raises(Unauthenticated):  # no cookie file: submission is disabled
                await c.submit(
                    transaction_to_pb(
                        pay(node, ALICE, node.fund(ALICE, [TIME])[0], 5000, BOB.address_payload)
                    )
                )
    finally:
        await server.stop(0)
    assert seen == [STATUS, SUBMIT]


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers=()) -> None:  # type: ignore[no-untyped-def]
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):  # type: ignore[no-untyped-def]
        return self._trailers


def test_statuses_without_reason_metadata_get_a_reason() -> None:
    big = _FakeRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max (5 vs. 4)"
    )
    assert error_from_rpc(big).reason == Reason.OVERSIZED
    busy = _FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!")
    assert error_from_rpc(busy).reason == Reason.RATE_LIMITED
    assert error_from_rpc(_FakeRpcError(grpc.StatusCode.UNKNOWN, "x")).reason == Reason.INTERNAL
    # A reason name alone (e.g. from a proxy that dropped binary trailers) is enough.
    named = _FakeRpcError(
        grpc.StatusCode.FAILED_PRECONDITION, "spent", (("timecoin-reason", "DOUBLE_SPEND"),)
    )
    err = error_from_rpc(named)
    assert err.reason == Reason.DOUBLE_SPEND and type(err).__name__ == "DoubleSpend"


async def test_bad_message_in_a_submit_stream_ends_it_typed(tmp_path) -> None:
    async with running(tmp_path) as r:
        md = (("authorization", "Bearer " + r.server.cookie.token),)
        call = r.client.channel.stream_stream(
            "/timecoin.wallet.v1.WalletService/SubmitTransactionStream"
        )

        async def requests():  # type: ignore[no-untyped-def]
            yield wallet_pb2.SubmitTransactionStreamRequest().SerializeToString()
            yield b"\x0a\x05\xff"  # a truncated Transaction

        responses = call(requests(), metadata=md)
        first = wallet_pb2.SubmitTransactionStreamResponse.FromString(await responses.read())
        assert list(first.results) == []
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await responses.read()
        assert error_from_rpc(e.value).reason == Reason.MALFORMED
        assert (await r.client.status()).chain_id
