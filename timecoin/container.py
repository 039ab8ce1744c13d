"""The one place where the node is wired (dependency-injector).

Storage -> chain state -> mempool -> consensus -> node -> gRPC server. Every
collaborator is a provider, so a test swaps one with ``override()`` instead of
patching, e.g.::

    c = NodeContainer(config=providers.Object(cfg), home=providers.Object(tmp))
    with c.kv_store.override(providers.Object(memory_store)):
        chain = c.chain_state()

Anything with a shutdown is a ``Resource`` (the key-value store); the node
shell closes resources last, after its threads have stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from dependency_injector import containers, providers

from timecoin.config import NodeConfig, resolve
from timecoin.consensus.engine import EngineConfig
from timecoin.consensus.timeouts import TimeoutConfig
from timecoin.core.genesis import Genesis
from timecoin.core.params import ChainParams
from timecoin.genesis import load_genesis
from timecoin.keyfile import read_key
from timecoin.node.chainstate import ChainState
from timecoin.node.mempool import Mempool
from timecoin.node.node import Node
from timecoin.node.privval import FilePrivValidator
from timecoin.node.workers import WorkerProcesses
from timecoin.rules.manager import PluggyRules, build_plugin_manager
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import UNSPENT_CACHE_ENTRY_BYTES, ChainStore
from timecoin.storage.kv import KVStore

PRIVVAL_STATE_FILE = "priv_validator_state.json"
"""Double-sign guard state, kept in the node's data directory."""


def make_params(config: NodeConfig) -> ChainParams:
    """Consensus parameters of the configured network and chain id."""
    from dataclasses import replace

    params = ChainParams.for_network(config.network.value, config.chain_id)
    assert config.consensus.block_interval_ms is not None
    return replace(params, block_interval_ms=config.consensus.block_interval_ms)


def make_genesis(config: NodeConfig, home: Path) -> Genesis:
    return load_genesis(resolve(home, config.genesis_file))


def open_kv(config: NodeConfig, home: Path, pm: object) -> Iterator[KVStore]:
    """Open the configured backend; closed when the container's resources shut down."""
    path = resolve(home, config.storage.path)
    path.mkdir(parents=True, exist_ok=True)
    store = open_store(config.storage.backend, path, config.storage.options, pm)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


def make_timeouts(config: NodeConfig) -> TimeoutConfig:
    c = config.consensus
    return TimeoutConfig(
        propose_ms=_filled(c.timeout_propose_ms),
        propose_delta_ms=_filled(c.timeout_propose_delta_ms),
        prevote_ms=_filled(c.timeout_prevote_ms),
        prevote_delta_ms=_filled(c.timeout_prevote_delta_ms),
        precommit_ms=_filled(c.timeout_precommit_ms),
        precommit_delta_ms=_filled(c.timeout_precommit_delta_ms),
        commit_ms=_filled(c.block_interval_ms),
    )


def _filled(ms: int | None) -> int:
    """Return a timeout that NodeConfig filled in from the network's defaults."""
    if ms is None:
        raise ValueError("consensus timeouts were not filled in from the network defaults")
    return ms


def make_signer(config: NodeConfig, home: Path, chain_id: str) -> FilePrivValidator:
    key = read_key(resolve(home, config.validator_key_file))
    state = resolve(home, config.storage.path) / PRIVVAL_STATE_FILE
    return FilePrivValidator(key, chain_id, state)


def coins_cache_entries(config: NodeConfig) -> int:
    """Return how many coins ``[storage] coins_cache_mb`` holds."""
    return config.storage.coins_cache_mb * 2**20 // UNSPENT_CACHE_ENTRY_BYTES


def worker_count(config: NodeConfig) -> int:
    """Return the configured worker processes, else one fewer than the CPUs (at least one)."""
    n = config.worker_processes
    return max(1, (os.cpu_count() or 2) - 1) if n is None else n


def open_workers(config: NodeConfig) -> Iterator[WorkerProcesses | None]:
    """Provide the node's worker processes (None if ``worker_processes = 0``); stop them last.

    Nothing starts until the first job: a node that never builds a block nor
    admits a transaction never spawns them.
    """
    n = worker_count(config)
    workers = WorkerProcesses(n) if n else None
    try:
        yield workers
    finally:
        if workers is not None:
            workers.close()


def make_mempool(config: NodeConfig, params: ChainParams, rules: PluggyRules) -> Mempool:
    m = config.mempool

    def rules_hook(tx, view, height):  # type: ignore[no-untyped-def]
        rules.validate_transaction(tx, view, height, params)

    return Mempool(
        params,
        max_txs=m.max_txs,
        max_bytes=m.max_bytes,
        expiry_ms=m.expiry_s * 1000,
        rules_hook=rules_hook,
    )


class NodeContainer(containers.DeclarativeContainer):
    """Builds a node from its config and home directory."""

    config = providers.Dependency(instance_of=NodeConfig)
    home = providers.Dependency(instance_of=Path)

    plugin_manager = providers.Singleton(build_plugin_manager)
    rules = providers.Singleton(PluggyRules, plugin_manager)
    params = providers.Singleton(make_params, config)
    genesis = providers.Singleton(make_genesis, config, home)

    kv_store = providers.Resource(open_kv, config, home, plugin_manager)
    workers = providers.Resource(open_workers, config)
    chain_store = providers.Singleton(
        ChainStore, kv_store, unspent_cache=providers.Callable(coins_cache_entries, config)
    )
    chain_state = providers.Singleton(
        ChainState,
        params=params,
        genesis=genesis,
        store=chain_store,
        rules=rules,
        penalize=rules.provided.penalize,
    )
    mempool = providers.Singleton(make_mempool, config, params, rules)

    signer = providers.Singleton(make_signer, config, home, params.provided.chain_id)
    timeouts = providers.Singleton(make_timeouts, config)
    engine_config = providers.Singleton(
        EngineConfig,
        chain_id=params.provided.chain_id,
        address=signer.provided.address,
        timeouts=timeouts,
        select_proposer=rules.provided.select_proposer,
    )
    node = providers.Singleton(
        Node,
        chain=chain_state,
        mempool=mempool,
        engine_config=engine_config,
        signer=signer,
        workers=workers,
    )
