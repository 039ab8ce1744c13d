"""OpenTelemetry tracing of one node (DESIGN.md, Observability).

Rules of this module:

- Each node owns a ``TracerProvider`` (:class:`NodeTracing`); nothing here sets
  the process-global provider, because tests and the simulator run several
  nodes in one process and each must report under its own service name.
- Export is off unless an OTLP endpoint is configured (``TracingSettings.endpoint``,
  or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` through
  :meth:`TracingSettings.from_env`). Spans are still created without export,
  so log records can carry trace ids.
- Spans leave through a ``BatchSpanProcessor``: the node's hot paths never wait
  for the collector.
- Sampling is decided once, at the root (``sample_ratio`` of new traces); every
  later span, on this node or another, follows its parent's decision
  (``ParentBased``), so a sampled transaction is traced on every validator.
- Trace context crosses nodes inside gossip and consensus messages, not only in
  gRPC metadata (one stream carries messages of many traces): a message holds
  a W3C ``traceparent``/``tracestate`` carrier, a ``str -> str`` mapping made by
  :func:`current_carrier` and read by :func:`context_from_carrier`.
- gRPC calls are traced by ``opentelemetry-instrumentation-grpc``'s interceptors,
  bound to this node's provider.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from timecoin.core.errors import ConfigError

TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")
"""The keys a carrier may hold (W3C Trace Context)."""

_PROPAGATOR = TraceContextTextMapPropagator()
# W3C limits: traceparent is 55 chars; tracestate at most 32 entries / 512 chars.
# A peer's carrier longer than this is ignored instead of parsed.
_MAX_CARRIER_VALUE_CHARS = 512


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """How one node traces."""

    endpoint: str = ""
    """OTLP/gRPC collector (``host:port`` or ``http://host:port``); empty: no export."""
    service_name: str = "timed"
    """``service.name`` of this node's spans (Jaeger's service list)."""
    sample_ratio: float = 1.0
    """Share of new traces recorded (0..1); spans with a parent follow the parent."""
    insecure: bool = True
    """Plaintext to the collector (a local Jaeger); False uses TLS with system roots."""
    resource_attributes: tuple[tuple[str, str], ...] = ()
    """Extra resource attributes, e.g. ``(("timecoin.chain_id", "..."),)``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> TracingSettings:
        """Return settings from the standard OTEL_* variables, then *overrides* (config wins).

        Reads ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``),
        ``OTEL_SERVICE_NAME`` and, for ``traceidratio`` samplers,
        ``OTEL_TRACES_SAMPLER_ARG``. An override that is empty or None is ignored.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        if endpoint:
            values["endpoint"] = endpoint
        if env.get("OTEL_SERVICE_NAME"):
            values["service_name"] = env["OTEL_SERVICE_NAME"]
        if "traceidratio" in env.get("OTEL_TRACES_SAMPLER", "") and env.get(
            "OTEL_TRACES_SAMPLER_ARG"
        ):
            try:
                values["sample_ratio"] = float(env["OTEL_TRACES_SAMPLER_ARG"])
            except ValueError:
                raise ConfigError(
                    f"OTEL_TRACES_SAMPLER_ARG={env['OTEL_TRACES_SAMPLER_ARG']!r} is not a number"
                ) from None
        values.update({k: v for k, v in overrides.items() if v not in ("", None)})
        return cls(**values)


class NodeTracing:
    """The tracer provider, tracer and gRPC interceptors of one node.

    Pass *exporter* to export somewhere else than OTLP (tests pass an
    ``InMemorySpanExporter``). Call :meth:`shutdown` when the node stops, so
    the batch processor flushes what it holds.
    """

    def __init__(self, settings: TracingSettings, *, exporter: SpanExporter | None = None) -> None:
        if not 0.0 <= settings.sample_ratio <= 1.0:
            raise ConfigError(f"tracing sample ratio {settings.sample_ratio} is not in 0..1")
        self.settings = settings
        resource = Resource.create(
            {"service.name": settings.service_name, **dict(settings.resource_attributes)}
        )
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
        )
        if exporter is None and settings.endpoint:
            exporter = _otlp_exporter(settings)
        self.exporting = exporter is not None
        if exporter is not None:
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("timecoin.node")

    @contextmanager
    def span(
        self,
        name: str,
        *,
        carrier: Mapping[str, str] | None = None,
        attributes: Mapping[str, str | int | float | bool] | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    ) -> Iterator[trace.Span]:
        """Run the block in span *name*, current for its duration.

        With *carrier* (from a peer's message) the span continues that trace;
        without it, it is a child of the current span, or a new root.
        """
        context = context_from_carrier(carrier) if carrier is not None else None
        with self.tracer.start_as_current_span(
            name, context=context, kind=kind, attributes=attributes
        ) as span:
            yield span

    def server_interceptor(self) -> Any:
        """Return a grpc.aio server interceptor that traces every call into this node."""
        instrumentation = _grpc_instrumentation()
        return instrumentation.aio_server_interceptor(tracer_provider=self.provider)

    def client_interceptors(self) -> list[Any]:
        """Return grpc.aio client interceptors that trace calls out of this node."""
        instrumentation = _grpc_instrumentation()
        return list(instrumentation.aio_client_interceptors(tracer_provider=self.provider))

    def force_flush(self, timeout_ms: int = 5_000) -> bool:
        """Export every finished span now; False if the exporter did not finish in time."""
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Flush and stop the exporter (called once, when the node stops)."""
        self.provider.shutdown()


def current_carrier(context: Context | None = None) -> dict[str, str]:
    """Return the trace context of the current span (or *context*) as a message carrier.

    Empty when there is no valid span: a message from an untraced path
    carries nothing and starts a new trace where it is received.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def context_from_carrier(carrier: Mapping[str, str]) -> Context:
    """Return the context a peer's message carries; an empty or malformed carrier yields none.

    Only the W3C keys are read, and over-long values are dropped, since the
    carrier comes from another node.
    """
    clean: dict[str, str] = {}
    for key in TRACE_CONTEXT_KEYS:
        value = carrier.get(key)
        if isinstance(value, str) and len(value) <= _MAX_CARRIER_VALUE_CHARS:
            clean[key] = value
    return _PROPAGATOR.extract(clean)


def current_trace_id() -> str | None:
    """Return the current trace id as 32 hex digits (for log records), or None."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _otlp_exporter(settings: TracingSettings) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            f"tracing endpoint {settings.endpoint!r} is set but the OTLP exporter is not "
            "installed (opentelemetry-exporter-otlp-proto-grpc)"
        ) from None
    return OTLPSpanExporter(endpoint=settings.endpoint, insecure=settings.insecure)


def _grpc_instrumentation() -> Any:
    try:
        import opentelemetry.instrumentation.grpc as instrumentation
    except ImportError:
        raise ConfigError(
            "gRPC tracing needs opentelemetry-instrumentation-grpc, which is not installed"
        ) from None
    return instrumentation
