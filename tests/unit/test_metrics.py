"""NodeMetrics: event methods, series present at 0, and the HTTP endpoint scraped for real."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from timecoin.core.errors import ConfigError, Reason
from timecoin.telemetry.metrics import NodeMetrics, serve_metrics, start_metrics_server

VALIDATORS = ["TIME0aaaa", "TIME0bbbb", "TIME0cccc"]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse exposition text into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(metrics.exposition().decode())


def test_missed_blocks_and_power_present_at_zero_after_set_validators() -> None:
    m = NodeMetrics()
    before = scrape(m)
    assert not any(k[0] == "timed_consensus_missed_blocks_total" for k in before)
    m.set_validators(VALIDATORS, {"TIME0aaaa": 10, "TIME0bbbb": 20})
    s = scrape(m)
    for v in VALIDATORS:
        assert s[("timed_consensus_missed_blocks_total", (("validator", v),))] == 0
    assert s[("timed_consensus_validator_power", (("validator", "TIME0aaaa"),))] == 10
    assert s[("timed_consensus_validator_power", (("validator", "TIME0bbbb"),))] == 20
    assert s[("timed_consensus_validator_power", (("validator", "TIME0cccc"),))] == 0
    assert s[("timed_consensus_validators", ())] == 3

    m.missed_block("TIME0bbbb")
    m.missed_block("TIME0bbbb")
    s = scrape(m)
    assert s[("timed_consensus_missed_blocks_total", (("validator", "TIME0bbbb"),))] == 2
    assert s[("timed_consensus_missed_blocks_total", (("validator", "TIME0aaaa"),))] == 0


def test_validator_leaving_loses_power_series_but_keeps_missed_counter() -> None:
    m = NodeMetrics()
    m.set_validators(VALIDATORS)
    m.missed_block("TIME0cccc")
    m.set_validators(["TIME0aaaa", "TIME0bbbb", "TIME0dddd"])
    s = scrape(m)
    assert ("timed_consensus_validator_power", (("validator", "TIME0cccc"),)) not in s
    assert s[("timed_consensus_validator_power", (("validator", "TIME0dddd"),))] == 0
    assert s[("timed_consensus_missed_blocks_total", (("validator", "TIME0cccc"),))] == 1
    assert s[("timed_consensus_missed_blocks_total", (("validator", "TIME0dddd"),))] == 0


def test_block_committed_counts_blocks_txs_and_commit_time() -> None:
    m = NodeMetrics()
    m.block_committed(1, 0, 0.004)
    m.block_committed(2, 7, 0.2)
    s = scrape(m)
    assert s[("timed_chain_height", ())] == 2
    assert s[("timed_blocks_committed_total", ())] == 2
    assert s[("timed_txs_finalized_total", ())] == 7
    assert s[("timed_block_commit_duration_seconds_count", ())] == 2
    assert s[("timed_block_commit_duration_seconds_sum", ())] == pytest.approx(0.204)
    # 0.004 s falls in the 5 ms bucket, 0.2 s does not.
    assert s[("timed_block_commit_duration_seconds_bucket", (("le", "0.005"),))] == 1
    assert s[("timed_block_commit_duration_seconds_bucket", (("le", "0.25"),))] == 2
    assert s[("timed_block_txs_bucket", (("le", "5.0"),))] == 1


def test_consensus_round_steps_and_quorum() -> None:
    m = NodeMetrics()
    s = scrape(m)
    # Step histograms exist before the first step ends.
    assert s[("timed_consensus_step_duration_seconds_count", (("step", "prevote"),))] == 0
    m.round_started(5, 0)
    m.round_started(5, 1)
    m.step_finished("PROPOSE", 0.3)
    m.step_finished("prevote", 0.02)
    m.quorum_reached("precommit", 0.7)
    s = scrape(m)
    assert s[("timed_consensus_height", ())] == 5
    assert s[("timed_consensus_round", ())] == 1
    assert s[("timed_consensus_rounds_total", ())] == 2
    assert s[("timed_consensus_step_duration_seconds_count", (("step", "propose"),))] == 1
    assert s[("timed_consensus_step_duration_seconds_sum", (("step", "prevote"),))] == 0.02
    assert s[("timed_consensus_quorum_delay_seconds_count", (("vote", "precommit"),))] == 1
    assert s[("timed_consensus_quorum_delay_seconds_count", (("vote", "prevote"),))] == 0


def test_mempool_rejections_by_reason_start_at_zero() -> None:
    m = NodeMetrics()
    s = scrape(m)
    assert s[("timed_mempool_rejections_total", (("reason", "FEE_TOO_LOW"),))] == 0
    assert ("timed_mempool_rejections_total", (("reason", "UNSPECIFIED"),)) not in s
    m.tx_rejected(Reason.FEE_TOO_LOW)
    m.tx_rejected("FEE_TOO_LOW")
    m.tx_rejected(Reason.DOUBLE_SPEND)
    m.mempool_changed(12, 3456)
    s = scrape(m)
    assert s[("timed_mempool_rejections_total", (("reason", "FEE_TOO_LOW"),))] == 2
    assert s[("timed_mempool_rejections_total", (("reason", "DOUBLE_SPEND"),))] == 1
    assert s[("timed_mempool_txs", ())] == 12
    assert s[("timed_mempool_bytes", ())] == 3456


def test_peers_messages_sync_latency_and_info() -> None:
    m = NodeMetrics()
    s = scrape(m)
    assert s[("timed_p2p_peers", (("direction", "inbound"),))] == 0
    assert s[("timed_p2p_peers", (("direction", "outbound"),))] == 0
    m.peer_count("outbound", 3)
    m.message_bytes("sent", "vote", 120)
    m.message_bytes("sent", "vote", 130)
    m.message_bytes("received", "block", 5000)
    m.sync_progress(40, 100)
    m.tx_final(1.5)
    m.txs_final([0.05, 2.0, 500.0])
    m.set_node_info(version="0.1.0", network="devnet", chain_id="timecoin-devnet-1")
    s = scrape(m)
    assert s[("timed_p2p_peers", (("direction", "outbound"),))] == 3
    assert s[("timed_p2p_message_bytes_total", (("direction", "sent"), ("type", "vote")))] == 250
    assert s[("timed_p2p_messages_total", (("direction", "sent"), ("type", "vote")))] == 2
    key = ("timed_p2p_message_bytes_total", (("direction", "received"), ("type", "block")))
    assert s[key] == 5000
    assert s[("timed_sync_height", ())] == 40
    assert s[("timed_sync_target_height", ())] == 100
    assert s[("timed_tx_submit_to_final_seconds_bucket", (("le", "0.1"),))] == 1
    assert s[("timed_tx_submit_to_final_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("timed_tx_submit_to_final_seconds_bucket", (("le", "2.0"),))] == 3  # le is inclusive
    assert s[("timed_tx_submit_to_final_seconds_bucket", (("le", "120.0"),))] == 3
    assert s[("timed_tx_submit_to_final_seconds_bucket", (("le", "+Inf"),))] == 4
    assert s[("timed_tx_submit_to_final_seconds_count", ())] == 4
    assert s[("timed_tx_submit_to_final_seconds_sum", ())] == pytest.approx(503.55)
    info = (
        "timed_node_info",
        (("chain_id", "timecoin-devnet-1"), ("network", "devnet"), ("version", "0.1.0")),
    )
    assert s[info] == 1


def test_instances_do_not_share_state_or_touch_the_global_registry() -> None:
    a, b = NodeMetrics(), NodeMetrics()
    a.block_committed(9, 1, 0.01)
    assert scrape(b)[("timed_chain_height", ())] == 0
    assert REGISTRY.get_sample_value("timed_chain_height") is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def test_http_endpoint_serves_the_registry() -> None:
    m = NodeMetrics()
    m.set_validators(VALIDATORS)
    m.block_committed(3, 2, 0.01)
    server = start_metrics_server("127.0.0.1", _free_port(), m)
    try:
        s = samples(_get(server.url))
        assert s[("timed_chain_height", ())] == 3
        for v in VALIDATORS:
            assert s[("timed_consensus_missed_blocks_total", (("validator", v),))] == 0
        # Only this node's registry is exposed: no process/platform collectors.
        assert not any(name.startswith("process_") for name, _ in s)
        m.missed_block(VALIDATORS[0])
        s = samples(_get(server.url))
        assert s[("timed_consensus_missed_blocks_total", (("validator", VALIDATORS[0]),))] == 1
    finally:
        server()
    with pytest.raises(OSError):
        _get(server.url)
    server.stop()  # idempotent


def test_http_endpoint_port_zero_reports_bound_port() -> None:
    m = NodeMetrics()
    server = start_metrics_server("127.0.0.1", 0, m)
    try:
        assert server.port > 0
        assert ("timed_chain_height", ()) in samples(_get(server.url))
    finally:
        server.stop()


def test_http_endpoint_busy_port_raises() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError):
            start_metrics_server("127.0.0.1", busy.getsockname()[1], NodeMetrics())


def test_serve_metrics_from_a_config_value() -> None:
    m = NodeMetrics()
    assert serve_metrics("", m) is None
    server = serve_metrics("127.0.0.1:0", m)
    assert server is not None
    try:
        assert ("timed_chain_height", ()) in samples(_get(server.url))
    finally:
        server.stop()
    for bad in ("9100", "127.0.0.1:", ":9100", "127.0.0.1:99999", "host:port"):
        with pytest.raises(ConfigError):
            serve_metrics(bad, m)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            serve_metrics(f"127.0.0.1:{busy.getsockname()[1]}", m)


def test_serve_metrics_on_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = serve_metrics("[::1]:0", NodeMetrics())
    except ConfigError as exc:
        pytest.skip(f"IPv6 loopback unavailable: {exc}")
    assert server is not None
    try:
        assert server.url.startswith("http://[::1]:")
        assert ("timed_chain_height", ()) in samples(_get(server.url))
    finally:
        server.stop()
