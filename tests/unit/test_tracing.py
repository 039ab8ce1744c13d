"""NodeTracing: one trace across nodes through message carriers, sampling, gRPC and OTLP export."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from timecoin.core.errors import ConfigError
from timecoin.telemetry.tracing import (
    NodeTracing,
    TracingSettings,
    context_from_carrier,
    current_carrier,
    current_trace_id,
)


def node(name: str, ratio: float = 1.0) -> tuple[NodeTracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = NodeTracing(TracingSettings(service_name=name, sample_ratio=ratio), exporter=exporter)
    return tracing, exporter


def finished(tracing: NodeTracing, exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    assert tracing.force_flush()
    return exporter.get_finished_spans()


def test_one_trace_follows_a_transaction_across_three_nodes() -> None:
    (a, ea), (b, eb), (c, ec) = node("timed-a"), node("timed-b"), node("timed-c")
    with a.span("wallet.submit", attributes={"tx.id": "ab" * 32}):
        with a.span("mempool.add"):
            gossip = current_carrier()  # travels inside the tx gossip message
    with b.span("mempool.add", carrier=gossip):
        with b.span("consensus.propose"):
            proposal = current_carrier()  # travels inside the proposal
    with c.span("consensus.prevote", carrier=proposal):
        pass

    spans_a, spans_b, spans_c = finished(a, ea), finished(b, eb), finished(c, ec)
    trace_ids = {s.context.trace_id for s in (*spans_a, *spans_b, *spans_c)}
    assert len(trace_ids) == 1
    by_name_a = {s.name: s for s in spans_a}
    b_root = next(s for s in spans_b if s.name == "mempool.add")
    assert b_root.parent is not None
    assert b_root.parent.span_id == by_name_a["mempool.add"].context.span_id
    assert b_root.parent.is_remote
    (c_span,) = spans_c
    b_propose = next(s for s in spans_b if s.name == "consensus.propose")
    assert c_span.parent.span_id == b_propose.context.span_id
    # Each node reports under its own service name.
    assert {s.resource.attributes["service.name"] for s in spans_c} == {"timed-c"}
    assert by_name_a["wallet.submit"].attributes["tx.id"] == "ab" * 32


def test_sampling_is_decided_at_the_root_and_followed_elsewhere() -> None:
    unsampled_root, e0 = node("n0", ratio=0.0)
    follower, e1 = node("n1", ratio=0.0)
    sampled_root, e2 = node("n2", ratio=1.0)
    with unsampled_root.span("tx"):
        dropped = current_carrier()
    with sampled_root.span("tx"):
        kept = current_carrier()
    with follower.span("mempool.add", carrier=dropped):
        pass
    with follower.span("mempool.add", carrier=kept):
        pass
    assert finished(unsampled_root, e0) == ()
    (followed,) = finished(follower, e1)
    (root,) = finished(sampled_root, e2)
    # The follower samples nothing of its own, yet records the sampled trace.
    assert followed.context.trace_id == root.context.trace_id
    # The sampled bit (0x01 of the W3C trace flags) is what travels.
    assert int(dropped["traceparent"][-2:], 16) & 1 == 0
    assert int(kept["traceparent"][-2:], 16) & 1 == 1


def test_carriers_without_a_span_or_malformed_start_new_traces() -> None:
    a, ea = node("a")
    assert current_carrier() == {}
    assert current_trace_id() is None
    bad = [
        {},
        {"traceparent": "garbage"},
        {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"},  # all-zero trace id
        {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "x" * 600},
        {"other": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    ]
    for carrier in bad:
        with a.span("recv", carrier=carrier):
            assert current_trace_id() is not None
    spans = finished(a, ea)
    assert len(spans) == len(bad)
    assert all(s.parent is None for s in spans)
    assert len({s.context.trace_id for s in spans}) == len(bad)
    good = {"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"}
    ctx = context_from_carrier(good)
    with a.tracer.start_as_current_span("child", context=ctx):
        assert current_trace_id() == "a" * 32


def test_settings_from_env_and_overrides() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
        "OTEL_SERVICE_NAME": "timed-node1",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    s = TracingSettings.from_env(env)
    assert (s.endpoint, s.service_name, s.sample_ratio) == (
        "http://127.0.0.1:4317",
        "timed-node1",
        0.25,
    )
    s = TracingSettings.from_env(env, endpoint="collector:4317", service_name="")
    assert (s.endpoint, s.service_name) == ("collector:4317", "timed-node1")
    assert TracingSettings.from_env({}).endpoint == ""
    with pytest.raises(ConfigError):
        TracingSettings.from_env({**env, "OTEL_TRACES_SAMPLER_ARG": "half"})
    with pytest.raises(ConfigError):
        NodeTracing(TracingSettings(sample_ratio=1.5))


def test_no_endpoint_means_no_export() -> None:
    t = NodeTracing(TracingSettings())
    assert not t.exporting
    with t.span("x"):
        assert current_trace_id() is not None
    t.shutdown()


def test_endpoint_without_the_exporter_package_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(ConfigError, match="opentelemetry-exporter-otlp-proto-grpc"):
        NodeTracing(TracingSettings(endpoint="127.0.0.1:4317"))


async def test_grpc_interceptors_join_client_and_server_spans() -> None:
    pytest.importorskip(
        "opentelemetry.instrumentation.grpc",
        reason="opentelemetry-instrumentation-grpc is not installed (==0.66b2)",
    )
    client_t, ec = node("client")
    server_t, es = node("server")
    server = grpc.aio.server(interceptors=[server_t.server_interceptor()])
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=client_t.client_interceptors()
        ) as channel:
            with client_t.span("wallet.submit"):
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(None)
    client_spans = {s.name: s for s in finished(client_t, ec)}
    (server_span,) = finished(server_t, es)
    rpc = client_spans["/grpc.health.v1.Health/Check"]
    assert server_span.context.trace_id == client_spans["wallet.submit"].context.trace_id
    assert server_span.parent.span_id == rpc.context.span_id


async def test_otlp_export_reaches_an_in_process_collector() -> None:
    pytest.importorskip(
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        reason="opentelemetry-exporter-otlp-proto-grpc is not installed (==1.45.2)",
    )
    from timecoin.telemetry.collector import InProcessCollector

    async with InProcessCollector() as collector:
        nodes = [
            NodeTracing(TracingSettings(endpoint=collector.endpoint, service_name=f"timed-node{i}"))
            for i in (1, 2, 3)
        ]
        assert all(t.exporting for t in nodes)
        with nodes[0].span("wallet.submit", attributes={"block.height": 7}):
            carrier = current_carrier()
            trace_id = current_trace_id()
        for t in nodes[1:]:
            with t.span("mempool.add", carrier=carrier):
                pass
        # The exporter is synchronous gRPC: flush off the loop that serves the collector.
        for t in nodes:
            assert await asyncio.to_thread(t.force_flush)
        spans = await collector.wait_for(lambda s: len(s) >= 3)
        for t in nodes:
            await asyncio.to_thread(t.shutdown)
    assert trace_id is not None
    assert collector.services_in_trace(trace_id) == {"timed-node1", "timed-node2", "timed-node3"}
    root = next(s for s in spans if s.name == "wallet.submit")
    assert root.parent_span_id == "" and root.attributes["block.height"] == 7
    assert {s.parent_span_id for s in spans if s.name == "mempool.add"} == {root.span_id}
