"""Credentials and per-client limits of the client listener.

Cookie authentication as bitcoind's ``.cookie``: on start the node writes a
fresh random token (32 bytes, hex) to a file readable only by its user (mode
0600) and deletes it on a clean shutdown. Whoever can read the file may call
the wallet-submitting and admin methods by sending the call metadata
``authorization: Bearer <token>``. The file holds the token alone on one line;
``__cookie__:<token>`` (bitcoind's layout) is accepted by ``read_cookie`` too.

Read-only chain methods need no credential.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from timecoin.api.errors import abort_with
from timecoin.core.errors import ConfigError, RateLimited, Unauthenticated

AUTH_METADATA_KEY = "authorization"
BEARER_PREFIX = "Bearer "
COOKIE_TOKEN_BYTES = 32

PROTECTED_METHODS: frozenset[str] = frozenset(
    {
        "/timecoin.wallet.v1.WalletService/SubmitTransaction",
        "/timecoin.wallet.v1.WalletService/SubmitTransactionStream",
        "/timecoin.admin.v1.AdminService/Backup",
        "/timecoin.admin.v1.AdminService/ListPeers",
        "/timecoin.admin.v1.AdminService/Unban",
    }
)
"""Full method names that need the credential (wallet submission; admin methods join here)."""


class Cookie:
    """The credential file: created by ``write()``, removed by ``remove()``."""

    def __init__(self, path: Path, token: str | None = None) -> None:
        self.path = path
        self.token = token or secrets.token_hex(COOKIE_TOKEN_BYTES)

    def write(self) -> None:
        """Write the token with mode 0600 (atomically: a reader never sees half a token)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        # O_EXCL + 0600 at creation: the token is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (self.token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Delete the file if it still holds our token (another node may have replaced it)."""
        try:
            if read_cookie(self.path) == self.token:
                self.path.unlink()
        except (ConfigError, FileNotFoundError):
            pass

    def matches(self, presented: str) -> bool:
        """Constant-time comparison of *presented* with the token."""
        return hmac.compare_digest(presented.encode(), self.token.encode())


def read_cookie(path: Path) -> str:
    """Return the token in cookie file *path*; ConfigError if it is missing or empty."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the node's cookie ({exc.strerror}); is the node running?"
        ) from None
    if text.startswith("__cookie__:"):
        text = text.split(":", 1)[1]
    if not text:
        raise ConfigError(f"{path}: empty cookie file")
    return text


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """Return the call metadata that presents *token*."""
    return ((AUTH_METADATA_KEY, BEARER_PREFIX + token),)


def _presented_token(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == AUTH_METADATA_KEY and isinstance(value, str) and value.startswith(BEARER_PREFIX):
            return value[len(BEARER_PREFIX) :].strip()
    return None


def _denying_handler(handler: grpc.RpcMethodHandler, err: Unauthenticated) -> grpc.RpcMethodHandler:
    """Return a handler of the same shape as *handler* that fails every call with *err*."""

    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort_with(context, err)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires ``authorization: Bearer <cookie token>`` on the protected methods."""

    def __init__(self, cookie: Cookie, protected: Collection[str] = PROTECTED_METHODS) -> None:
        self._cookie = cookie
        self._protected = frozenset(protected)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method not in self._protected:
            return handler
        token = _presented_token(handler_call_details.invocation_metadata)
        if token is None:
            return _denying_handler(
                handler, Unauthenticated("this method needs 'authorization: Bearer <cookie>'")
            )
        if not self._cookie.matches(token):
            return _denying_handler(handler, Unauthenticated("bad credential"))
        return handler


class TokenBucket:
    """Classic token bucket: *rate* tokens per second, holding at most *burst*."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, n: float, now: float) -> bool:
        """Take *n* tokens if available; return False (taking nothing) otherwise."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


class SubmitRateLimiter:
    """Per-connection limit on submitted transactions (a flood from one client).

    Keyed by the gRPC peer string (address and port, i.e. one connection). The
    table of buckets is bounded (least recently used peers are forgotten), so
    many short connections cannot make it grow without limit.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        *,
        max_peers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_peers = max_peers
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, peer: str, n: int) -> None:
        """Charge *n* transactions to *peer*; raise RateLimited if it is over its rate."""
        if self.rate_per_s <= 0:
            return
        now = self._clock()
        bucket = self._buckets.get(peer)
        if bucket is None:
            bucket = TokenBucket(self.rate_per_s, self.burst, now)
            self._buckets[peer] = bucket
            if len(self._buckets) > self._max_peers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(peer)
        if not bucket.take(n, now):
            raise RateLimited(
                f"more than {self.rate_per_s:g} transactions/s from this connection; slow down"
            )
