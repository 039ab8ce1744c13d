"""The client listener: ChainService, WalletService, gRPC health and reflection.

``ApiServer`` builds one ``grpc.aio.server`` with:

- message size limits: requests at most ``MAX_REQUEST_BYTES`` (1 MiB: a batch
  of 1,000 ordinary transactions fits four times), responses at most
  ``MAX_RESPONSE_BYTES`` (a full block plus margin); per-method request bounds
  below them (``request_limits``) give a typed OVERSIZED rejection. With at
  most ``MAX_CONCURRENT_RPCS`` calls open, requests buffered by gRPC are
  bounded by 512 x 1 MiB whatever clients send;
- a cap on concurrent streams per connection and on concurrent RPCs, and
  keepalive so dead clients are noticed;
- strict request decoding: a request that does not parse, or that carries
  fields this node does not know, is rejected with MALFORMED/NON_CANONICAL
  instead of gRPC's bare INTERNAL (``StrictRequestInterceptor``);
- the cookie credential on wallet submission (``timecoin.api.auth``);
- loopback by default: binding another address without TLS (certificate and
  key files) is refused with ConfigError (DESIGN.md, Interfaces).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from timecoin._proto.chain.v1 import chain_pb2, chain_pb2_grpc
from timecoin._proto.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from timecoin.api.auth import AuthInterceptor, Cookie, SubmitRateLimiter
from timecoin.api.backend import NodeBackend
from timecoin.api.chain_service import ChainService, SubscriptionLimits
from timecoin.api.errors import BadRequest
from timecoin.api.wallet_service import WalletService
from timecoin.core.errors import ConfigError, DecodeError, NonCanonical, Oversized
from timecoin.wire.limits import Limits

log = logging.getLogger("timecoin.api")

MAX_REQUEST_BYTES = 1024 * 1024 + 64 * 1024
"""gRPC's hard bound on one received message (gRPC buffers it whole before any check)."""
MAX_RESPONSE_BYTES = 4 * 1024 * 1024 + 64 * 1024
"""Bound on one sent message: the largest block (``max_block_bytes``) plus envelope."""
MAX_MESSAGE_BYTES = MAX_RESPONSE_BYTES
"""The larger of the two (what a client allows itself to receive)."""
DEFAULT_REQUEST_BYTES = 64 * 1024
"""Bound on request messages that carry no transactions (queries, build requests)."""
MAX_CONCURRENT_STREAMS = 100
"""HTTP/2 streams (calls) open at once on one connection."""
MAX_CONCURRENT_RPCS = 512
"""Calls open at once on the whole listener; more are refused with RESOURCE_EXHAUSTED."""

SERVICE_NAMES = (
    chain_pb2.DESCRIPTOR.services_by_name["ChainService"].full_name,
    wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
)
_TRANSACTION_TYPE = "timecoin.types.v1.Transaction"


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); ConfigError if it is not one."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"api listen address {listen!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    n = int(port)
    if n > 65535:
        raise ConfigError(f"api listen port {n} out of range")
    return host, n


def is_loopback(host: str) -> bool:
    """Return True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """How the client listener is set up (from the ``[api]`` config section)."""

    listen: str = "127.0.0.1:24001"
    cookie_file: Path | None = None
    """Where to write the credential; None disables submission (every call UNAUTHENTICATED)."""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    submit_rate_per_s: float = 20_000.0
    """Transactions per second one connection may submit (0 disables the limit)."""
    submit_burst: float = 40_000.0
    subscriptions: SubscriptionLimits = SubscriptionLimits()

    @classmethod
    def from_config(cls, cfg: Any, home: Path) -> ApiSettings:
        """Return settings from a ``NodeConfig`` (its ``[api]`` section); paths relative to *home*.

        Optional keys the config may grow (``tls_cert_file``, ``tls_key_file``,
        ``submit_rate_per_s``, ``submit_burst``) are used when present.
        """
        from timecoin.config import resolve

        api = cfg.api

        def path(name: str) -> Path | None:
            value = getattr(api, name, None)
            return resolve(home, value) if value else None

        extra: dict[str, Any] = {}
        for name in ("submit_rate_per_s", "submit_burst"):
            if getattr(api, name, None) is not None:
                extra[name] = float(getattr(api, name))
        return cls(
            listen=api.listen,
            cookie_file=path("cookie_file"),
            tls_cert_file=path("tls_cert_file"),
            tls_key_file=path("tls_key_file"),
            **extra,
        )


def _has_unknown(msg: Message) -> bool:
    """Return True if *msg* or a nested message (other than a Transaction) has unknown fields.

    Transactions are left to the codec, which rejects their unknown fields per
    transaction, so one bad transaction in a batch does not fail the batch.
    """
    if len(UnknownFieldSet(msg)):
        return True
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE or fd.message_type.full_name == _TRANSACTION_TYPE:
            continue
        items = value if fd.is_repeated else (value,)
        for item in items:
            if isinstance(item, Message) and _has_unknown(item):
                return True
    return False


def strict_deserializer(
    deserialize: Callable[[bytes], Any], limit: int, method: str
) -> Callable[[bytes], Any]:
    """Wrap a request deserializer: bound, parse, reject unknown fields; never raise."""

    def parse(raw: bytes) -> Any:
        if len(raw) > limit:
            return BadRequest(
                Oversized(f"{method}: request of {len(raw)} bytes exceeds {limit}", limit=limit)
            )
        try:
            msg = deserialize(raw)
        except Exception as exc:
            return BadRequest(DecodeError(f"{method}: request does not parse: {exc}"))
        if isinstance(msg, Message) and _has_unknown(msg):
            return BadRequest(NonCanonical(f"{method}: request has fields this node does not know"))
        return msg

    return parse


class StrictRequestInterceptor(grpc.aio.ServerInterceptor):
    """Installs ``strict_deserializer`` on every ``timecoin.*`` method."""

    def __init__(self, limits: dict[str, int], default_limit: int = DEFAULT_REQUEST_BYTES) -> None:
        self._limits = limits
        self._default = default_limit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if (
            handler is None
            or not method.startswith("/timecoin.")
            or handler.request_deserializer is None
        ):
            return handler
        limit = self._limits.get(method, self._default)
        return handler._replace(
            request_deserializer=strict_deserializer(handler.request_deserializer, limit, method)
        )


def request_limits(limits: Limits) -> dict[str, int]:
    """Per-method request bounds: transactions may be as big as the chain allows."""
    return {
        "/timecoin.wallet.v1.WalletService/SubmitTransaction": limits.max_tx_bytes + 1024,
        "/timecoin.wallet.v1.WalletService/SubmitTransactionStream": MAX_REQUEST_BYTES,
    }


class ApiServer:
    """The client gRPC listener; ``start()``, ``stop(grace)``, ``port``."""

    def __init__(
        self,
        backend: NodeBackend,
        settings: ApiSettings,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """Bind the listener (not started yet); ConfigError for a refused address.

        *interceptors* (tracing, metrics) run outermost, before authentication.
        """
        host, port = parse_listen(settings.listen)
        tls = settings.tls_cert_file is not None or settings.tls_key_file is not None
        if tls and (settings.tls_cert_file is None or settings.tls_key_file is None):
            raise ConfigError("api TLS needs both a certificate file and a key file")
        if not is_loopback(host) and not tls:
            raise ConfigError(
                f"refusing to serve the client API on non-loopback {host!r} without TLS; "
                "set the TLS certificate and key files or listen on 127.0.0.1"
            )
        self._backend = backend
        self._settings = settings
        self._host, self._requested_port = host, port
        self._cookie = Cookie(settings.cookie_file) if settings.cookie_file else None
        # Without a cookie file no token can match: submission is refused.
        auth_cookie = self._cookie or Cookie(Path("/nonexistent"), token=_unguessable())
        self.chain = ChainService(backend, settings.subscriptions)
        self.wallet = WalletService(
            backend, SubmitRateLimiter(settings.submit_rate_per_s, settings.submit_burst)
        )
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            interceptors=[
                *interceptors,
                AuthInterceptor(auth_cookie),
                StrictRequestInterceptor(request_limits(Limits.from_params(backend.params))),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.max_send_message_length", MAX_RESPONSE_BYTES),
                ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
        )
        chain_pb2_grpc.add_ChainServiceServicer_to_server(self.chain, self._server)
        wallet_pb2_grpc.add_WalletServiceServicer_to_server(self.wallet, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        services = list(SERVICE_NAMES)
        if hasattr(backend, "backup"):
            from timecoin._proto.admin.v1 import admin_pb2_grpc
            from timecoin.api.admin_service import SERVICE_NAME as ADMIN
            from timecoin.api.admin_service import AdminService

            admin_pb2_grpc.add_AdminServiceServicer_to_server(
                AdminService(backend),  # type: ignore[arg-type]
                self._server,
            )
            services.append(ADMIN)
        reflection.enable_server_reflection(
            (
                *services,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            self._server,
        )
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if tls:
            assert settings.tls_cert_file is not None and settings.tls_key_file is not None
            try:
                key = settings.tls_key_file.read_bytes()
                cert = settings.tls_cert_file.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read api TLS files: {exc}") from None
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.port = self._server.add_secure_port(address, creds)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise ConfigError(f"cannot bind the client API to {settings.listen}")

    @property
    def cookie(self) -> Cookie | None:
        """The credential written on start (None when submission is disabled)."""
        return self._cookie

    @property
    def address(self) -> str:
        """``host:port`` actually bound."""
        return f"[{self._host}]:{self.port}" if ":" in self._host else f"{self._host}:{self.port}"

    async def start(self, *, serving: bool = True) -> None:
        """Write the cookie, start serving and set health (SERVING unless *serving* is False)."""
        if self._cookie is not None:
            self._cookie.write()
        await self._server.start()
        await self.set_serving(serving)
        log.info("Client API listening on %s", self.address)

    async def set_serving(self, serving: bool) -> None:
        """Report the node ready (SERVING) or not (NOT_SERVING) through gRPC health."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop accepting calls, let running ones finish for *grace* s, remove the cookie."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)
        if self._cookie is not None:
            self._cookie.remove()


def _unguessable() -> str:
    import secrets

    return secrets.token_hex(32)
