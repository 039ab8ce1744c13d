"""Prometheus metrics of one node (DESIGN.md, Observability).

Rules of this module:

- Every metric lives in the :class:`NodeMetrics` instance's own
  ``CollectorRegistry``, never the process-global one, so a test (or the
  simulator) can build one per node and nothing leaks between them.
- The node calls one method per event (``block_committed``, ``round_started``,
  ...); it never touches a metric object directly, so names and labels are
  decided here once and documented in docs/operations.md.
- Series that alerting depends on exist at 0 from the start: missed blocks
  and power per validator (after :meth:`NodeMetrics.set_validators`), peers in
  both directions and every mempool rejection reason. An absent series cannot
  be told apart from a broken scrape, and ``increase()`` misses the first
  increment of a series that appears at 1.
- The exposition format is prometheus_client's; nothing here writes it by hand.

All methods are cheap and thread-safe (prometheus_client locks per series),
so they may be called from the event loop or from an executor thread.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator, Mapping
from enum import Enum
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import generate_latest, start_http_server
from prometheus_client.utils import floatToGoString

from timecoin.core.errors import ConfigError, Reason

NAMESPACE = "timed"

PEER_DIRECTIONS = ("inbound", "outbound")
"""Label values of ``timed_p2p_peers``; both are exported at 0 from the start."""

MESSAGE_DIRECTIONS = ("sent", "received")
"""Label values of ``direction`` on the P2P byte/message counters."""

CONSENSUS_STEPS = ("propose", "prevote", "precommit", "commit")
"""Step names the step-duration histogram is pre-populated with."""

QUORUM_KINDS = ("prevote", "precommit")
"""Vote types the quorum-delay histogram is pre-populated with."""

# Buckets in seconds. Devnet blocks come every ~1 s and mainnet every 30 s
# (timecoin.config), so the consensus buckets span 5 ms .. 60 s.
STEP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
COMMIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Submit -> final spans one or two block intervals: up to ~2 min on mainnet.
FINALITY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0)
BLOCK_TXS_BUCKETS = (0, 1, 5, 10, 50, 100, 500, 1000, 5000, 10000)


def _label(value: str | Enum) -> str:
    """Return a label value: enum members by name (``Reason.FEE_TOO_LOW`` -> ``FEE_TOO_LOW``)."""
    return value.name if isinstance(value, Enum) else str(value)


class BatchHistogram:
    """A histogram fed a whole block's observations at once.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets
    in Python for every value: a few microseconds, paid for each of the
    thousands of transactions a busy block finalizes. Here a batch takes the
    lock once and files each value with one C-level ``bisect``. Exported in
    the standard histogram form (``_bucket{le}``, ``_sum``, ``_count``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        *,
        namespace: str,
        registry: CollectorRegistry,
        buckets: Iterable[float],
    ) -> None:
        self._name = f"{namespace}_{name}"
        self._doc = documentation
        self._bounds = sorted(float(b) for b in buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Record every value of *values* (negative ones count as 0)."""
        bounds, counts = self._bounds, self._counts
        total = 0.0
        with self._lock:
            for v in values:
                v = max(v, 0.0)
                counts[bisect.bisect_left(bounds, v)] += 1
                total += v
            self._sum += total

    def observe(self, value: float) -> None:
        """Record one value."""
        self.observe_many((value,))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """Yield the histogram for a scrape (cumulative buckets, as Prometheus wants)."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip([*self._bounds, float("inf")], counts, strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        yield HistogramMetricFamily(self._name, self._doc, buckets=buckets, sum_value=total)


class NodeMetrics:
    """The metrics of one node, in a registry of their own.

    Construct one per node; pass it to the collaborators that report events
    and to :func:`start_metrics_server` when the metrics port is enabled.
    """

    def __init__(
        self,
        *,
        registry: CollectorRegistry | None = None,
        rejection_reasons: Iterable[str | Enum] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        ns = NAMESPACE
        self._info = Info("node", "Static facts about this node.", namespace=ns, registry=r)

        # --- chain -----------------------------------------------------------------
        self.chain_height = Gauge(
            "chain_height", "Height of the last committed block.", namespace=ns, registry=r
        )
        self.blocks_committed = Counter(
            "blocks_committed",
            "Blocks committed (applied to the UTXO set) by this node.",
            namespace=ns,
            registry=r,
        )
        self.commit_duration = Histogram(
            "block_commit_duration_seconds",
            "Time to validate, apply and persist one decided block.",
            namespace=ns,
            registry=r,
            buckets=COMMIT_BUCKETS_S,
        )
        self.block_txs = Histogram(
            "block_txs",
            "Transactions per committed block (coinbase excluded).",
            namespace=ns,
            registry=r,
            buckets=BLOCK_TXS_BUCKETS,
        )
        self.txs_finalized = Counter(
            "txs_finalized",
            "Transactions finalized in committed blocks (coinbase excluded); "
            "rate() of it is the tx/s.",
            namespace=ns,
            registry=r,
        )
        self.tx_latency = BatchHistogram(
            "tx_submit_to_final_seconds",
            "Time from a transaction's submission to this node until its block committed.",
            namespace=ns,
            registry=r,
            buckets=FINALITY_BUCKETS_S,
        )

        # --- consensus -------------------------------------------------------------
        self.consensus_height = Gauge(
            "consensus_height", "Height the consensus engine is deciding.", namespace=ns, registry=r
        )
        self.consensus_round = Gauge(
            "consensus_round",
            "Round of the current height (0 when the first proposal is decided).",
            namespace=ns,
            registry=r,
        )
        self.rounds = Counter(
            "consensus_rounds",
            "Consensus rounds started; more than one per block means timeouts or a bad proposer.",
            namespace=ns,
            registry=r,
        )
        self.step_duration = Histogram(
            "consensus_step_duration_seconds",
            "Time spent in each Tendermint step.",
            ["step"],
            namespace=ns,
            registry=r,
            buckets=STEP_BUCKETS_S,
        )
        self.quorum_delay = Histogram(
            "consensus_quorum_delay_seconds",
            "Time from the start of a round until +2/3 of the power voted (by vote type).",
            ["vote"],
            namespace=ns,
            registry=r,
            buckets=STEP_BUCKETS_S,
        )
        self.missed_blocks = Counter(
            "consensus_missed_blocks",
            "Blocks whose commit lacks this validator's precommit.",
            ["validator"],
            namespace=ns,
            registry=r,
        )
        self.validator_power = Gauge(
            "consensus_validator_power",
            "Voting power of each validator in the current set.",
            ["validator"],
            namespace=ns,
            registry=r,
        )
        self.validators = Gauge(
            "consensus_validators", "Validators in the current set.", namespace=ns, registry=r
        )

        # --- mempool ---------------------------------------------------------------
        self.mempool_txs = Gauge(
            "mempool_txs", "Transactions waiting in the mempool.", namespace=ns, registry=r
        )
        self.mempool_bytes = Gauge(
            "mempool_bytes",
            "Encoded size of the transactions in the mempool.",
            namespace=ns,
            registry=r,
        )
        self.mempool_rejections = Counter(
            "mempool_rejections",
            "Transactions refused by the mempool, by reason (timecoin.types.v1.Reason).",
            ["reason"],
            namespace=ns,
            registry=r,
        )

        # --- p2p -------------------------------------------------------------------
        self.peers = Gauge(
            "p2p_peers", "Connected peers by direction.", ["direction"], namespace=ns, registry=r
        )
        self.message_bytes_total = Counter(
            "p2p_message_bytes",
            "Bytes of P2P messages by direction and message type.",
            ["direction", "type"],
            namespace=ns,
            registry=r,
        )
        self.messages_total = Counter(
            "p2p_messages",
            "P2P messages by direction and message type.",
            ["direction", "type"],
            namespace=ns,
            registry=r,
        )

        # --- sync ------------------------------------------------------------------
        self.sync_height = Gauge(
            "sync_height", "Height reached by block sync.", namespace=ns, registry=r
        )
        self.sync_target = Gauge(
            "sync_target_height",
            "Best height announced by peers (sync is done when sync_height reaches it).",
            namespace=ns,
            registry=r,
        )

        # Series that must exist at 0 before their first event (module rules).
        for direction in PEER_DIRECTIONS:
            self.peers.labels(direction=direction).set(0)
        for step in CONSENSUS_STEPS:
            self.step_duration.labels(step=step)
        for kind in QUORUM_KINDS:
            self.quorum_delay.labels(vote=kind)
        reasons = (
            rejection_reasons
            if rejection_reasons is not None
            else [r for r in Reason if r is not Reason.UNSPECIFIED]
        )
        for reason in reasons:
            self.mempool_rejections.labels(reason=_label(reason))
        self._validator_labels: set[str] = set()

    # --- facts ---------------------------------------------------------------------

    def set_node_info(self, **facts: str) -> None:
        """Publish static facts as ``timed_node_info`` labels (version, network, chain_id...)."""
        self._info.info({k: str(v) for k, v in facts.items()})

    def set_validators(
        self, addresses: Iterable[str], powers: Mapping[str, int] | None = None
    ) -> None:
        """Declare the current validator set (addresses, optional power per address).

        Creates the missed-block series of every validator at 0, so an alert on
        ``increase(timed_consensus_missed_blocks_total[...])`` sees a validator
        that misses its very first block. Validators that left the set lose
        their power series; their missed-block counters stay (counters never go
        back, and the set changes rarely).
        """
        current = list(dict.fromkeys(addresses))
        for address in current:
            self.missed_blocks.labels(validator=address)
            power = powers.get(address, 0) if powers is not None else 0
            self.validator_power.labels(validator=address).set(power)
        for gone in self._validator_labels - set(current):
            self.validator_power.remove(gone)
        self._validator_labels = set(current)
        self.validators.set(len(current))

    # --- chain ---------------------------------------------------------------------

    def block_committed(self, height: int, txs: int, commit_seconds: float) -> None:
        """Record that the block at *height* with *txs* transactions (no coinbase) committed."""
        self.chain_height.set(height)
        self.blocks_committed.inc()
        self.block_txs.observe(txs)
        if txs:
            self.txs_finalized.inc(txs)
        self.commit_duration.observe(max(commit_seconds, 0.0))

    def tx_final(self, latency_s: float) -> None:
        """Record a tx submitted to this node that became final *latency_s* after submission."""
        self.tx_latency.observe(latency_s)

    def txs_final(self, latencies_s: Iterable[float]) -> None:
        """Record a block's worth of ``tx_final`` observations at once."""
        self.tx_latency.observe_many(latencies_s)

    # --- consensus -----------------------------------------------------------------

    def round_started(self, height: int, round: int) -> None:
        """Record that the engine entered *round* of *height*."""
        self.consensus_height.set(height)
        self.consensus_round.set(round)
        self.rounds.inc()

    def step_finished(self, step: str | Enum, seconds: float) -> None:
        """Record that the engine left *step* (propose/prevote/precommit/commit) after *seconds*."""
        self.step_duration.labels(step=_label(step).lower()).observe(max(seconds, 0.0))

    def quorum_reached(self, vote: str | Enum, seconds: float) -> None:
        """Record +2/3 of the power sending *vote* (prevote/precommit), *seconds* into the round."""
        self.quorum_delay.labels(vote=_label(vote).lower()).observe(max(seconds, 0.0))

    def missed_block(self, address: str) -> None:
        """Count a block whose commit has no precommit from validator *address*."""
        self.missed_blocks.labels(validator=address).inc()

    # --- mempool -------------------------------------------------------------------

    def mempool_changed(self, count: int, size_bytes: int) -> None:
        """Record that the mempool now holds *count* transactions of *size_bytes* in total."""
        self.mempool_txs.set(count)
        self.mempool_bytes.set(size_bytes)

    def tx_rejected(self, reason: str | Enum) -> None:
        """Count a mempool refusal; *reason* is a ``Reason`` member or its name."""
        self.mempool_rejections.labels(reason=_label(reason)).inc()

    # --- p2p -----------------------------------------------------------------------

    def peer_count(self, direction: str, n: int) -> None:
        """Record that *n* peers are connected in *direction* (``inbound`` or ``outbound``)."""
        self.peers.labels(direction=direction).set(n)

    def message_bytes(self, direction: str, type: str, n: int) -> None:
        """Count one P2P message of *type* and *n* bytes ``sent`` or ``received``."""
        self.message_bytes_total.labels(direction=direction, type=type).inc(n)
        self.messages_total.labels(direction=direction, type=type).inc()

    # --- sync ----------------------------------------------------------------------

    def sync_progress(self, height: int, target: int) -> None:
        """Record that block sync reached *height* of the *target* announced by peers."""
        self.sync_height.set(height)
        self.sync_target.set(target)

    # --- exposition ----------------------------------------------------------------

    def exposition(self) -> bytes:
        """Return the registry in Prometheus text format (what the HTTP endpoint serves)."""
        return generate_latest(self.registry)


class MetricsServer:
    """A running metrics endpoint; call it (or :meth:`stop`) to shut it down."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        self._stopped = False
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])
        """The port actually bound (useful with port 0)."""

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving and release the port; calling it twice is harmless."""
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __call__(self) -> None:
        self.stop()


def start_metrics_server(host: str, port: int, metrics: NodeMetrics) -> MetricsServer:
    """Serve *metrics* on ``http://host:port/metrics`` from a daemon thread.

    Uses prometheus_client's own HTTP server with the node's registry (the
    global registry is never exposed). Port 0 binds a free port; read it from
    the returned server's ``port``. The returned object is the stop callable.
    Raises OSError if the address cannot be bound.
    """
    httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(httpd, thread)


def serve_metrics(listen: str, metrics: NodeMetrics) -> MetricsServer | None:
    """Start the endpoint at *listen* (``host:port``, ``[v6]:port``); None when *listen* is empty.

    This is what the node calls with its config value: empty means metrics are
    off. Raises ConfigError for a malformed address or one that cannot be bound.
    """
    if not listen:
        return None
    host, sep, port_s = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_s.isdigit() or int(port_s) > 65535:
        raise ConfigError(f"metrics listen address {listen!r} is not host:port")
    try:
        return start_metrics_server(host, int(port_s), metrics)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
