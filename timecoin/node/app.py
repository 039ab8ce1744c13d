"""``timed serve``: build the node from its home directory and run it until a signal.

SIGINT/SIGTERM stop the RPC listener (with a grace period), abandon the
in-flight consensus round (the double-sign guard file keeps what was signed),
wait for a block write in progress, close the store and exit 0.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from dependency_injector import providers

from timecoin import compiled
from timecoin.config import NetworkName, NodeConfig, load_config, resolve
from timecoin.core.errors import ConfigError
from timecoin.home import CONFIG_FILE, default_home, init_home
from timecoin.node.logs import event, setup_logging

if TYPE_CHECKING:
    from timecoin.api.server import ApiServer
    from timecoin.container import NodeContainer
    from timecoin.core.keys import KeyPair
    from timecoin.node.node import Node
    from timecoin.p2p.network import PeerNetwork
    from timecoin.storage.chainstore import ChainStore
    from timecoin.telemetry.tracing import NodeTracing

log = logging.getLogger("timed")
BYZANTINE_ENV = "TIMED_TEST_BYZANTINE"


def locate(config_file: Path | None, home: Path | None, dev: bool) -> tuple[Path, NodeConfig]:
    """Find (and for ``--dev`` create) the home directory and load its config.

    With ``--config FILE`` relative paths in the file resolve against the
    file's directory unless ``--home`` is given.
    """
    if config_file is not None:
        cfg = load_config(config_file)
        return (home or config_file.resolve().parent), cfg
    if dev:
        home = home or default_home(NetworkName.DEVNET)
        init_home(home, NetworkName.DEVNET, dev=True, moniker="dev")
    elif home is None:
        home = default_home(NetworkName.MAINNET)
    return home, load_config(home / CONFIG_FILE)


def run_node(
    config_file: Path | None = None,
    home: Path | None = None,
    dev: bool = False,
    log_format: str | None = None,
) -> None:
    """Entry point of ``timed serve``."""
    home, cfg = locate(config_file, home, dev)
    setup_logging(log_format or cfg.telemetry.log_format, cfg.telemetry.log_level)
    tune_gc()
    try:
        asyncio.run(serve(home, cfg))
    except RuntimeError as exc:
        if "bind" in str(exc).lower():
            # grpc reports a busy port as a bare RuntimeError; say which setting to change.
            raise ConfigError(
                f"{exc}; is another node running? change p2p.listen / api.listen"
            ) from None
        raise


GC_THRESHOLDS = (1_000_000, 50, 100)
"""Collector thresholds for a running node (CPython's defaults: 700, 10, 10)."""


def tune_gc() -> None:
    """Make the cyclic garbage collector run far less often than CPython's default.

    A busy node allocates millions of short-lived tuples and small objects a
    second (decoded transactions, UTXO maps, protobuf conversions). Nearly all
    are freed by reference counting; the collector only finds cycles. It runs
    when the objects it tracks have grown by the first threshold since it last
    ran, and then walks every one of them with the interpreter lock held.
    With CPython's 700 it took about a tenth of the node's CPU at 6,000 tx/s
    (bench/node.py: 174-192 -> 159-162 us per finalized tx at 100,000). At
    100,000 it still ran at every block at saturation, because a block's worth
    of pending transactions is about that many objects: 20-100 ms a time,
    about 0.6 s of the lock in a 7-second saturated run. At 1,000,000 it did
    not run at all in that run: a pool that grows by some 80,000 transactions
    without a block taking them starts it (once, for a few hundred ms), and
    cyclic garbage waits that long to be freed.
    """
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(home: Path, cfg: NodeConfig) -> None:
    """Run the node described by *cfg* in *home* until SIGINT/SIGTERM."""
    from timecoin.container import NodeContainer
    from timecoin.keyfile import read_key

    container = NodeContainer(config=providers.Object(cfg), home=providers.Object(home))
    container.init_resources()
    try:
        node = container.node()
        node_key = read_key(resolve(home, cfg.node_key_file))
        tracing = _make_tracing(cfg)
        node.tracing = tracing
        api = _make_api_server(cfg, home, node, node_key.address_payload, tracing)
        servers: list[object] = [api]
        if cfg.p2p.enabled:
            network = _make_network(cfg, home, node, node_key, container)
            node.network = network
            servers.insert(0, network)
        metrics_server = None
        if cfg.telemetry.metrics_listen:
            from timecoin import __version__
            from timecoin.telemetry.metrics import NodeMetrics, serve_metrics

            node.metrics = NodeMetrics()
            node.metrics.set_node_info(
                version=__version__, network=cfg.network.value, chain_id=cfg.chain_id
            )
            metrics_server = serve_metrics(cfg.telemetry.metrics_listen, node.metrics)
        if os.environ.get(BYZANTINE_ENV) == "double-vote":
            # Test-only: lets the end-to-end suite prove that equivocation is
            # caught, turned into evidence and punished. Never set in production.
            log.warning("TEST-ONLY BYZANTINE MODE: this validator double-votes")
            node.byzantine_key = container.signer().key
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, node.stop)
        # Everything built so far lives as long as the node: keep it out of
        # the collector's full passes.
        gc.collect()
        gc.freeze()
        event(
            log,
            "Node starting",
            moniker=cfg.moniker,
            network=cfg.network.value,
            chain_id=cfg.chain_id,
            home=str(home),
            height=node.chain.height,
            api=cfg.api.listen,
            p2p=cfg.p2p.listen if cfg.p2p.enabled else "off",
            store=cfg.storage.backend,
            code=compiled.STATE,
        )
        try:
            await node.run(servers)
        finally:
            if metrics_server is not None:
                metrics_server.stop()
            if tracing is not None:
                # Let the done-callbacks of closed peer calls end their spans first.
                await asyncio.sleep(0.2)
                tracing.shutdown()  # flushes the spans still batched
        event(log, "Node stopped", height=node.chain.height)
    finally:
        container.shutdown_resources()


def _make_tracing(cfg: NodeConfig) -> NodeTracing | None:
    """Tracing when an OTLP endpoint is configured (config, else the OTEL_* variables)."""
    from timecoin.telemetry.tracing import NodeTracing, TracingSettings

    settings = TracingSettings.from_env(
        endpoint=cfg.telemetry.otlp_endpoint or None,
        service_name=cfg.moniker,
        sample_ratio=cfg.telemetry.trace_sample_ratio,
        resource_attributes=(("timecoin.chain_id", cfg.chain_id),),
    )
    if not settings.endpoint:
        return None
    log.info("Tracing to %s as %s", settings.endpoint, settings.service_name)
    return NodeTracing(settings)


def _make_api_server(
    cfg: NodeConfig, home: Path, node: Node, node_id: bytes, tracing: NodeTracing | None
) -> ApiServer:
    from timecoin.api.server import ApiServer, ApiSettings
    from timecoin.node.api_backend import NodeApi

    settings = ApiSettings(
        listen=cfg.api.listen,
        cookie_file=resolve(home, cfg.api.cookie_file),
        tls_cert_file=resolve(home, cfg.api.tls_cert_file) if cfg.api.tls_cert_file else None,
        tls_key_file=resolve(home, cfg.api.tls_key_file) if cfg.api.tls_key_file else None,
    )
    interceptors = [tracing.server_interceptor()] if tracing is not None else []
    return ApiServer(NodeApi(node, node_id), settings, interceptors=interceptors)


class _MetaAddressBook:
    """The P2P address book persisted in the chain store's metadata (not fsynced).

    Writes are handed to the node's storage thread so the event loop never
    waits on LevelDB; reads happen once, when the network starts.
    """

    def __init__(self, store: ChainStore, node: Node) -> None:
        self._store = store
        self._node = node

    def get(self, key: bytes) -> bytes | None:
        return self._store.get_meta(b"addrbook/" + key)

    def put(self, key: bytes, value: bytes) -> None:
        self._node.submit_to_db(self._store.put_meta, b"addrbook/" + key, value, sync=False)


def _make_network(
    cfg: NodeConfig, home: Path, node: Node, node_key: KeyPair, container: NodeContainer
) -> PeerNetwork:
    from timecoin.p2p.config import P2PConfig
    from timecoin.p2p.faults import FaultSchedule
    from timecoin.p2p.handshake import NodeIdentity
    from timecoin.p2p.network import PeerNetwork
    from timecoin.rules.manager import rules_fingerprint, rules_plugins

    p = cfg.p2p

    def path(v: str) -> Path | None:
        return resolve(home, v) if v else None

    pcfg = P2PConfig(
        listen=p.listen,
        external_address=p.external_address or None,
        seeds=tuple(p.seeds),
        persistent_peers=tuple(p.persistent_peers),
        max_inbound=p.max_inbound,
        max_outbound=p.max_outbound,
        allow_local_addresses=p.allow_local_addresses,
        tls_cert_file=path(p.tls_cert_file),
        tls_key_file=path(p.tls_key_file),
        tls_root_cert_file=path(p.tls_root_cert_file),
        faults=FaultSchedule.from_env(),
    )
    pm = container.plugin_manager()
    identity = NodeIdentity(
        chain_id=node.params.chain_id,
        genesis_hash=node.chain.genesis_hash,
        rules_fingerprint=rules_fingerprint(pm),
        key=node_key,
        rules_plugins=tuple(rules_plugins(pm)),
    )
    tracing = node.tracing
    server_i: list[object] = []
    client_i: list[object] = []
    if tracing is not None:
        from timecoin.telemetry.peer_tracing import PeerServerTracing, peer_client_interceptors

        server_i = [PeerServerTracing(tracing)]
        client_i = peer_client_interceptors(tracing)
    return PeerNetwork(
        pcfg,
        identity,
        node,
        address_store=_MetaAddressBook(node.chain.store, node),
        server_interceptors=server_i,
        client_interceptors=client_i,
    )
