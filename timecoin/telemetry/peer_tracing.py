"""Tracing interceptors for the peer listener and the channels to peers.

The OpenTelemetry gRPC instrumentation wraps aio stream handlers as async
generators, but the peer layer's streams are read/write handlers (they
``await context.read()`` and ``context.write()``), which it cannot wrap. These
interceptors handle both shapes: one span per call, as a server span under the
caller's trace (W3C ``traceparent`` in the metadata) and as a client span whose
context is sent along. Long-lived streams (Gossip, Exchange) get one span for
their lifetime; the messages on them carry their own trace context.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from timecoin.telemetry.tracing import NodeTracing, context_from_carrier, current_carrier


def _wrap_behavior(tracing: NodeTracing, method: str, behavior: Callable[..., Any]) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        meta = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        parent = context_from_carrier(meta)
        with tracing.tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER):
            result = behavior(request, context)
            if inspect.isawaitable(result):
                return await result
            return result

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        meta = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        parent = context_from_carrier(meta)
        with tracing.tracer.start_as_current_span(method, context=parent, kind=SpanKind.SERVER):
            async for item in behavior(request, context):
                yield item

    return stream if inspect.isasyncgenfunction(behavior) else call


class PeerServerTracing(grpc.aio.ServerInterceptor):
    """One server span per call into the peer listener, continuing the caller's trace."""

    def __init__(self, tracing: NodeTracing) -> None:
        self._tracing = tracing

    async def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for attr, make in kinds:
            behavior = getattr(handler, attr)
            if behavior is not None:
                return make(
                    _wrap_behavior(self._tracing, method, behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


def _with_trace(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    meta = list(details.metadata or ())
    meta.extend(current_carrier().items())
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, meta, details.credentials, details.wait_for_ready
    )


def _method(details: grpc.aio.ClientCallDetails) -> str:
    m = details.method
    return m.decode() if isinstance(m, bytes) else str(m)


class _ClientBase:
    def __init__(self, tracing: NodeTracing) -> None:
        self._tracing = tracing

    def _span(self, details: grpc.aio.ClientCallDetails) -> Any:
        return self._tracing.tracer.start_as_current_span(_method(details), kind=SpanKind.CLIENT)


class _UnaryUnary(_ClientBase, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        with self._span(details):
            return await continuation(_with_trace(details), request)


class _UnaryStream(_ClientBase, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        span = self._tracing.tracer.start_span(_method(details), kind=SpanKind.CLIENT)
        with trace.use_span(span, end_on_exit=False):
            call = await continuation(_with_trace(details), request)
        call.add_done_callback(lambda _: span.end())
        return call


class _StreamStream(_ClientBase, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        span = self._tracing.tracer.start_span(_method(details), kind=SpanKind.CLIENT)
        with trace.use_span(span, end_on_exit=False):
            call = await continuation(_with_trace(details), request_iterator)
        call.add_done_callback(lambda _: span.end())
        return call


def peer_client_interceptors(tracing: NodeTracing) -> list[Any]:
    """Client interceptors for channels to peers: a client span per call, context sent along."""
    return [_UnaryUnary(tracing), _UnaryStream(tracing), _StreamStream(tracing)]
