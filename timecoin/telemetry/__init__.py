"""Telemetry: Prometheus metrics (``metrics``) and the ``timed health`` check (``health``).

Nothing here is imported by ``core/`` or ``consensus/``; the node's asyncio
shell calls the event methods of :class:`~timecoin.telemetry.metrics.NodeMetrics`.
"""

from timecoin.telemetry.metrics import MetricsServer, NodeMetrics, start_metrics_server

__all__ = ["MetricsServer", "NodeMetrics", "start_metrics_server"]
