"""An in-process OTLP/gRPC trace collector for tests.

Nodes (in this process or real processes on loopback) export to
``collector.endpoint``; the test then asks which services reported spans under
one trace id. It implements the collector's own service
(``opentelemetry.proto.collector.trace.v1.TraceService``) from
``opentelemetry-proto``, so what it receives is exactly what Jaeger would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc
import grpc.aio


@dataclass(frozen=True, slots=True)
class CollectedSpan:
    """One span as the collector received it."""

    service: str
    """``service.name`` of the resource that sent it."""
    name: str
    trace_id: str
    """32 hex digits."""
    span_id: str
    parent_span_id: str
    """Empty for a root span."""
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return (
        getattr(v, kind)
        if kind in ("string_value", "int_value", "bool_value", "double_value")
        else None
    )


class InProcessCollector:
    """``async with InProcessCollector() as c:`` serves OTLP on ``c.endpoint`` (127.0.0.1)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        self._host = host
        self._lock = threading.Lock()
        self._spans: list[CollectedSpan] = []
        self._changed = asyncio.Condition()
        self._server = grpc.aio.server()
        collector = self

        class _Service(trace_service_pb2_grpc.TraceServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
                from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

                collector._receive(request)
                async with collector._changed:
                    collector._changed.notify_all()
                return trace_service_pb2.ExportTraceServiceResponse()

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Service(), self._server)
        self.port = self._server.add_insecure_port(f"{host}:0")

    @property
    def endpoint(self) -> str:
        """``http://host:port`` for ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``TracingSettings``."""
        return f"http://{self._host}:{self.port}"

    def _receive(self, request: Any) -> None:
        batch = []
        for rs in request.resource_spans:
            attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
            service = str(attrs.get("service.name", ""))
            for ss in rs.scope_spans:
                for s in ss.spans:
                    batch.append(
                        CollectedSpan(
                            service=service,
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in s.attributes},
                        )
                    )
        with self._lock:
            self._spans.extend(batch)

    @property
    def spans(self) -> list[CollectedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def services_in_trace(self, trace_id: str) -> set[str]:
        """Return the services that reported at least one span of *trace_id*."""
        return {s.service for s in self.spans if s.trace_id == trace_id}

    async def wait_for(
        self, predicate: Callable[[list[CollectedSpan]], bool], timeout_s: float = 10.0
    ) -> list[CollectedSpan]:
        """Poll until *predicate(spans)* holds; raise TimeoutError after *timeout_s*."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self.spans))
        return self.spans

    async def start(self) -> None:
        await self._server.start()

    async def stop(self) -> None:
        await self._server.stop(None)

    async def __aenter__(self) -> InProcessCollector:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
