"""The one place that maps rejection reasons to gRPC status codes (STYLE.md, Errors).

A failed call carries its reason three ways, so every client can read it:

- trailing metadata ``timecoin-reason``: the reason name (``DOUBLE_SPEND``), readable
  from any gRPC library and from ``grpcurl -v``;
- trailing metadata ``timecoin-rejection-bin``: a serialized
  ``timecoin.types.v1.Rejection`` (reason enum value and message);
- ``grpc-status-details-bin``: the standard rich error model, a ``google.rpc.Status``
  whose details hold the packed ``Rejection`` (what ``grpc_status.rpc_status``
  in Python, ``status.FromError`` in Go and grpcurl decode).

``google.rpc.Status`` has three fields (code, message, repeated Any details);
it is encoded here by hand because ``grpcio-status``/``googleapis-common-protos``
are not dependencies of the node.

Servicer methods are wrapped with ``guard_unary``/``guard_unary_stream``/
``guard_stream_stream``: a ``TimecoinError`` becomes its status code and
reason; any other exception is logged with its traceback and the client gets
INTERNAL with no internals in the message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import grpc.aio
from google.protobuf import any_pb2

from timecoin._proto.types.v1 import types_pb2
from timecoin.core import errors as core_errors
from timecoin.core.errors import DecodeError, Reason, TimecoinError

log = logging.getLogger("timecoin.api")

REASON_METADATA_KEY = "timecoin-reason"
REJECTION_METADATA_KEY = "timecoin-rejection-bin"
STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"
MAX_ERROR_MESSAGE_CHARS = 1_000
"""Longer messages are cut: an error message never grows with the request."""

_C = grpc.StatusCode
REASON_STATUS: dict[Reason, grpc.StatusCode] = {
    Reason.UNSPECIFIED: _C.INTERNAL,
    Reason.INTERNAL: _C.INTERNAL,
    # Bytes or fields a client got wrong: retrying the same request cannot help.
    Reason.MALFORMED: _C.INVALID_ARGUMENT,
    Reason.NON_CANONICAL: _C.INVALID_ARGUMENT,
    Reason.WRONG_CHAIN: _C.INVALID_ARGUMENT,
    Reason.BAD_VERSION: _C.INVALID_ARGUMENT,
    Reason.BAD_ADDRESS: _C.INVALID_ARGUMENT,
    Reason.BAD_PUBKEY: _C.INVALID_ARGUMENT,
    Reason.BAD_SIGNATURE: _C.INVALID_ARGUMENT,
    Reason.DUPLICATE_INPUT: _C.INVALID_ARGUMENT,
    Reason.WRONG_OWNER: _C.INVALID_ARGUMENT,
    Reason.VALUE_OVERFLOW: _C.INVALID_ARGUMENT,
    Reason.FEE_TOO_LOW: _C.INVALID_ARGUMENT,
    Reason.DUST_OUTPUT: _C.INVALID_ARGUMENT,
    Reason.MEMO_TOO_LARGE: _C.INVALID_ARGUMENT,
    Reason.TOO_MANY_ITEMS: _C.INVALID_ARGUMENT,
    Reason.BAD_COINBASE: _C.INVALID_ARGUMENT,
    Reason.BAD_PAYLOAD: _C.INVALID_ARGUMENT,
    Reason.BAD_COLLATERAL: _C.INVALID_ARGUMENT,
    Reason.BAD_HEADER: _C.INVALID_ARGUMENT,
    Reason.BAD_HEIGHT: _C.INVALID_ARGUMENT,
    Reason.BAD_PREV_HASH: _C.INVALID_ARGUMENT,
    Reason.BAD_TIME: _C.INVALID_ARGUMENT,
    Reason.BAD_MERKLE_ROOT: _C.INVALID_ARGUMENT,
    Reason.BAD_TX_ORDER: _C.INVALID_ARGUMENT,
    Reason.BAD_REWARD: _C.INVALID_ARGUMENT,
    Reason.BAD_COMMIT: _C.INVALID_ARGUMENT,
    Reason.BAD_VALIDATORS_HASH: _C.INVALID_ARGUMENT,
    Reason.BAD_PROPOSER: _C.INVALID_ARGUMENT,
    Reason.BAD_UTXO_COMMITMENT: _C.INVALID_ARGUMENT,
    Reason.BAD_EVIDENCE: _C.INVALID_ARGUMENT,
    Reason.UNKNOWN_VALIDATOR: _C.INVALID_ARGUMENT,
    Reason.DUPLICATE_VOTE: _C.INVALID_ARGUMENT,
    Reason.CONFLICTING_VOTE: _C.INVALID_ARGUMENT,
    Reason.RULES_REJECTED: _C.INVALID_ARGUMENT,
    # Valid on its own but not against the current state: may succeed later or elsewhere.
    Reason.MISSING_INPUT: _C.FAILED_PRECONDITION,
    Reason.DOUBLE_SPEND: _C.FAILED_PRECONDITION,
    Reason.INSUFFICIENT_FUNDS: _C.FAILED_PRECONDITION,
    Reason.FUTURE_HEIGHT: _C.FAILED_PRECONDITION,
    Reason.STALE_HEIGHT: _C.FAILED_PRECONDITION,
    Reason.DOUBLE_SIGN_REFUSED: _C.FAILED_PRECONDITION,
    Reason.CONFIG: _C.FAILED_PRECONDITION,
    # Capacity: back off and retry (or pay a higher fee for MEMPOOL_FULL).
    Reason.OVERSIZED: _C.RESOURCE_EXHAUSTED,
    Reason.MEMPOOL_FULL: _C.RESOURCE_EXHAUSTED,
    Reason.RATE_LIMITED: _C.RESOURCE_EXHAUSTED,
    Reason.ALREADY_KNOWN: _C.ALREADY_EXISTS,
    Reason.NOT_FOUND: _C.NOT_FOUND,
    Reason.UNAUTHENTICATED: _C.UNAUTHENTICATED,
    Reason.STORAGE: _C.UNAVAILABLE,
}


def status_code_for(reason: Reason) -> grpc.StatusCode:
    """Return the gRPC status code for *reason* (INTERNAL for anything unmapped)."""
    return REASON_STATUS.get(reason, _C.INTERNAL)


def _clip(message: str) -> str:
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        return message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    return message


def rejection_to_pb(err: TimecoinError) -> types_pb2.Rejection:
    """Return the ``Rejection`` message for *err*."""
    return types_pb2.Rejection(reason=int(err.reason), message=_clip(err.message))  # type: ignore[arg-type]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def rpc_status_bytes(code: grpc.StatusCode, message: str, rejection: types_pb2.Rejection) -> bytes:
    """Serialize ``google.rpc.Status{code, message, details: [Any(rejection)]}``."""
    detail = any_pb2.Any()
    detail.Pack(rejection)
    code_value = int(code.value[0])
    out = b""
    if code_value:
        out += _varint(1 << 3 | 0) + _varint(code_value)
    if message:
        out += _len_field(2, message.encode())
    out += _len_field(3, detail.SerializeToString(deterministic=True))
    return out


def error_trailers(err: TimecoinError) -> tuple[tuple[str, str | bytes], ...]:
    """Return the trailing metadata that carries *err*'s reason (see module docstring)."""
    rejection = rejection_to_pb(err)
    code = status_code_for(err.reason)
    return (
        (REASON_METADATA_KEY, err.reason.name),
        (REJECTION_METADATA_KEY, rejection.SerializeToString(deterministic=True)),
        (STATUS_DETAILS_METADATA_KEY, rpc_status_bytes(code, rejection.message, rejection)),
    )


async def abort_with(context: grpc.aio.ServicerContext, err: TimecoinError) -> None:
    """End the call with *err*'s status code, message and reason (never returns)."""
    await context.abort(
        status_code_for(err.reason), _clip(str(err)), trailing_metadata=error_trailers(err)
    )


_INTERNAL = TimecoinError("internal error; see the node log")


async def _handle(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, TimecoinError):
        await abort_with(context, exc)
    log.error("unexpected error in %s", method, exc_info=exc)
    await abort_with(context, _INTERNAL)


def _passthrough(exc: BaseException) -> bool:
    # AbortError is how context.abort ends a call; cancellation is the client leaving.
    return isinstance(exc, grpc.aio.AbortError | asyncio.CancelledError)


# --- requests that failed strict decoding -------------------------------------------


class BadRequest:
    """Stands in for a request message that could not be decoded.

    The strict deserializer (``timecoin.api.server``) returns one instead of
    raising, because an exception in a deserializer reaches the client as a
    bare INTERNAL; the guards below turn it into the typed rejection.
    """

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def guard_unary(
    fn: Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[S, Any, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Wrap a unary servicer method: typed errors become statuses, others INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: S, request: Any, context: grpc.aio.ServicerContext) -> Resp:
        try:
            if isinstance(request, BadRequest):
                raise request.error
            return await fn(self, request, context)
        except BaseException as exc:
            if _passthrough(exc) or not isinstance(exc, Exception):
                raise
            await _handle(context, exc, fn.__qualname__)
            raise AssertionError("unreachable") from None

    return wrapper


def guard_unary_stream(
    fn: Callable[[S, Any, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[S, Any, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a server-streaming servicer method (an async generator)."""

    @functools.wraps(fn)
    async def wrapper(
        self: S, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        try:
            if isinstance(request, BadRequest):
                raise request.error
            async for item in fn(self, request, context):
                yield item
        except BaseException as exc:
            if _passthrough(exc) or not isinstance(exc, Exception):
                raise
            await _handle(context, exc, fn.__qualname__)

    return wrapper


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, BadRequest):
            raise request.error
        yield request


def guard_stream_stream(
    fn: Callable[[S, AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[S, AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """Wrap a bidirectional servicer method; a bad request message ends the stream typed."""

    @functools.wraps(fn)
    async def wrapper(
        self: S, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, _checked(requests), context):
                yield item
        except BaseException as exc:
            if _passthrough(exc) or not isinstance(exc, Exception):
                raise
            await _handle(context, exc, fn.__qualname__)

    return wrapper


# --- client side ----------------------------------------------------------------------


def _most_specific_classes() -> dict[Reason, type[TimecoinError]]:
    """Map each reason to the core error class that declares it (first declared wins)."""
    found: dict[Reason, type[TimecoinError]] = {}
    for name in dir(core_errors):
        obj = getattr(core_errors, name)
        if isinstance(obj, type) and issubclass(obj, TimecoinError) and "reason" in vars(obj):
            found.setdefault(obj.reason, obj)
    return found


_CLASS_FOR_REASON = _most_specific_classes()

_FALLBACK_REASON: dict[grpc.StatusCode, Reason] = {
    # Statuses produced by gRPC itself (no reason metadata), e.g. a message over
    # the server's max receive size or too many concurrent calls.
    _C.RESOURCE_EXHAUSTED: Reason.OVERSIZED,
    _C.UNAUTHENTICATED: Reason.UNAUTHENTICATED,
    _C.NOT_FOUND: Reason.NOT_FOUND,
    _C.INVALID_ARGUMENT: Reason.MALFORMED,
    _C.ALREADY_EXISTS: Reason.ALREADY_KNOWN,
}


def error_class_for(reason: Reason) -> type[TimecoinError]:
    """Return the core error class for *reason* (``TimecoinError`` if none declares it)."""
    return _CLASS_FOR_REASON.get(reason, TimecoinError)


def make_error(reason: Reason, message: str) -> TimecoinError:
    """Build the core error for *reason* with *message*."""
    cls = error_class_for(reason)
    try:
        err = cls(message)
    except TypeError:  # a class with a richer constructor
        err = TimecoinError(message)
    err.reason = reason  # type: ignore[misc]
    return err


def rejection_from_pb(msg: types_pb2.Rejection) -> TimecoinError:
    """Turn a ``Rejection`` message into the matching core error."""
    try:
        reason = Reason(msg.reason)
    except ValueError:
        reason = Reason.INTERNAL
    return make_error(reason, msg.message)


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> TimecoinError:
    """Return the ``TimecoinError`` a failed call carries (reason from trailing metadata)."""
    code = exc.code() if hasattr(exc, "code") else _C.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == REJECTION_METADATA_KEY and isinstance(value, bytes):
            msg = types_pb2.Rejection()
            try:
                msg.ParseFromString(value)
            except Exception:  # a broken trailer falls back to the name below
                continue
            return rejection_from_pb(msg)
    for key, value in trailers or ():
        if key == REASON_METADATA_KEY and isinstance(value, str) and value in Reason.__members__:
            return make_error(Reason[value], details)
    reason = _FALLBACK_REASON.get(code, Reason.INTERNAL)
    if code == _C.RESOURCE_EXHAUSTED and "larger than max" not in details:
        # gRPC's other RESOURCE_EXHAUSTED is its concurrent-call limit.
        reason = Reason.RATE_LIMITED
    return make_error(reason, f"{code.name}: {details}" if details else code.name)
