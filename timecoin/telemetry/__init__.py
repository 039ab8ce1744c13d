"""Telemetry of a node: Prometheus metrics, OpenTelemetry tracing and the health check.

- ``metrics``: :class:`NodeMetrics` (one registry per node, one method per node
  event) and :func:`start_metrics_server`.
- ``tracing``: ``NodeTracing`` (one tracer provider per node, OTLP export,
  trace context carried inside P2P messages); import it from its module.
- ``health``: ``timed health`` (gRPC health check, exit 0/1/2); import it from
  its module, it pulls in grpc and click.

Nothing here is imported by ``core/`` or ``consensus/``; the node's asyncio
shell calls these objects.
"""

from timecoin.telemetry.metrics import (
    MetricsServer,
    NodeMetrics,
    serve_metrics,
    start_metrics_server,
)

__all__ = ["MetricsServer", "NodeMetrics", "serve_metrics", "start_metrics_server"]
