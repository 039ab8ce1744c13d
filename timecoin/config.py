"""Node configuration: a TOML file validated by a pydantic model.

Every key of the model is read somewhere in the node; an unknown or mistyped
key is an error that names the key and the file (``extra="forbid"``), so a
typo can never silently fall back to a default. Defaults depend on the network
(DESIGN.md, Protocol): chain id, P2P port 24000 and client port 24001
(testnet 24100/24101, devnet 24200/24201).

Relative paths in the file are resolved against the node's home directory.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from timecoin.core.errors import ConfigError


class NetworkName(StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    DEVNET = "devnet"


DEFAULT_CHAIN_IDS = {
    NetworkName.MAINNET: "timecoin-mainnet-1",
    NetworkName.TESTNET: "timecoin-testnet-1",
    NetworkName.DEVNET: "timecoin-devnet-1",
}
DEFAULT_PORTS = {  # (p2p, client api)
    NetworkName.MAINNET: (24000, 24001),
    NetworkName.TESTNET: (24100, 24101),
    NetworkName.DEVNET: (24200, 24201),
}
# Tendermint timing per network (docs/consensus.md): devnet aims at ~1 s blocks,
# mainnet/testnet at one block every 30 s with empty blocks still produced.
_SLOW = {
    "block_interval_ms": 30_000,
    "timeout_propose_ms": 3_000,
    "timeout_propose_delta_ms": 500,
    "timeout_prevote_ms": 1_000,
    "timeout_prevote_delta_ms": 500,
    "timeout_precommit_ms": 1_000,
    "timeout_precommit_delta_ms": 500,
}
DEFAULT_CONSENSUS_TIMING = {
    NetworkName.MAINNET: _SLOW,
    NetworkName.TESTNET: _SLOW,
    NetworkName.DEVNET: {
        "block_interval_ms": 1_000,
        # Timeouts only bound how long a round waits when something is slow; a
        # busy proposer on a shared 2-core machine needs ~1-2 s for a full block.
        "timeout_propose_ms": 3_000,
        "timeout_propose_delta_ms": 500,
        "timeout_prevote_ms": 1_000,
        "timeout_prevote_delta_ms": 500,
        "timeout_precommit_ms": 1_000,
        "timeout_precommit_delta_ms": 500,
    },
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(_Section):
    backend: str = "leveldb"
    """Name of a storage plugin (entry-point group ``timecoin.plugins``)."""
    path: str = "data"
    """Directory of the store, relative to the home directory."""
    options: dict[str, int | str | bool] = Field(default_factory=dict)
    """Backend-specific options (e.g. leveldb ``lru_cache_size``)."""
    coins_cache_mb: int = Field(default=64, ge=0, le=1 << 20)
    """Memory for recently read and created coins (Bitcoin Core's ``dbcache``, which
    defaults to 450): a hit spares a store read, which also hands the interpreter
    lock to the other threads and waits to get it back. 0 turns it off."""


class P2PSection(_Section):
    enabled: bool = True
    """Run the peer listener and dial peers (off: a node that never talks to peers)."""
    listen: str = ""
    """host:port of the peer listener; empty means the network's P2P port
    (0.0.0.0 on mainnet/testnet, 127.0.0.1 on devnet)."""
    external_address: str = ""
    """Address advertised to peers; empty means the listen address."""
    seeds: list[str] = Field(default_factory=list)
    """host:port dialed at start to learn addresses (peer exchange)."""
    persistent_peers: list[str] = Field(default_factory=list)
    """host:port kept connected at all times (reconnect with backoff)."""
    max_inbound: int = Field(default=40, ge=0, le=1000)
    max_outbound: int = Field(default=10, ge=0, le=1000)
    allow_local_addresses: bool = False
    """Accept loopback/private addresses from peer exchange (local testnets)."""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_root_cert_file: str = ""
    """CA that peers' certificates chain to; set it to dial peers over TLS."""


class ApiConfig(_Section):
    listen: str = ""
    """host:port of the client listener; empty means 127.0.0.1 and the network's API port."""
    cookie_file: str = ".cookie"
    """Credential file written on start; wallet and admin calls must present its token."""
    tls_cert_file: str = ""
    """PEM certificate; with ``tls_key_file`` serves TLS (required beyond loopback)."""
    tls_key_file: str = ""


class ConsensusConfig(_Section):
    """Tendermint timing; every value left out takes the network's default (docs/consensus.md)."""

    block_interval_ms: int | None = Field(default=None, ge=100, le=600_000)
    """Target time between blocks (30 s mainnet/testnet, 1 s devnet)."""
    timeout_propose_ms: int | None = Field(default=None, ge=10)
    timeout_propose_delta_ms: int | None = Field(default=None, ge=0)
    timeout_prevote_ms: int | None = Field(default=None, ge=10)
    timeout_prevote_delta_ms: int | None = Field(default=None, ge=0)
    timeout_precommit_ms: int | None = Field(default=None, ge=10)
    timeout_precommit_delta_ms: int | None = Field(default=None, ge=0)


class MempoolConfig(_Section):
    max_txs: int = Field(default=10_000, ge=1)
    max_bytes: int = Field(default=300_000_000, ge=1_000)
    expiry_s: int = Field(default=14 * 24 * 3600, ge=1)


class TelemetryConfig(_Section):
    log_format: str = Field(default="text", pattern="^(text|json)$")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    metrics_listen: str = ""
    """host:port of the Prometheus endpoint; empty disables it."""
    otlp_endpoint: str = ""
    """OTLP/gRPC collector for traces (e.g. http://localhost:4317, Jaeger); empty: the
    standard OTEL_EXPORTER_OTLP_ENDPOINT variable, else no tracing."""
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces recorded; spans continuing a peer's trace follow its decision."""


class NodeConfig(_Section):
    """The whole ``timed`` configuration file."""

    network: NetworkName = NetworkName.MAINNET
    chain_id: str = ""
    """Empty means the network's default chain id."""
    moniker: str = "timed"
    genesis_file: str = "genesis.json"
    node_key_file: str = "node_key.json"
    validator_key_file: str = "validator_key.json"
    worker_processes: int | None = Field(default=None, ge=0, le=64)
    """Worker processes for signature checks of submitted transactions and the UTXO
    commitment's hashing; unset: one fewer than the CPUs (at least one); 0: all of it
    in the node process, signatures on threads (timecoin/node/workers.py)."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    p2p: P2PSection = Field(default_factory=P2PSection)
    api: ApiConfig = Field(default_factory=ApiConfig)
    consensus: ConsensusConfig = Field(default_factory=ConsensusConfig)
    mempool: MempoolConfig = Field(default_factory=MempoolConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)

    @model_validator(mode="after")
    def _fill_network_defaults(self) -> NodeConfig:
        p2p_port, api_port = DEFAULT_PORTS[self.network]
        if not self.chain_id:
            self.chain_id = DEFAULT_CHAIN_IDS[self.network]
        if not self.p2p.listen:
            host = "127.0.0.1" if self.network == NetworkName.DEVNET else "0.0.0.0"
            self.p2p.listen = f"{host}:{p2p_port}"
        if not self.api.listen:
            self.api.listen = f"127.0.0.1:{api_port}"
        for key, value in DEFAULT_CONSENSUS_TIMING[self.network].items():
            if getattr(self.consensus, key) is None:
                setattr(self.consensus, key, value)
        return self


def parse_config(data: dict[str, Any], source: str = "<config>") -> NodeConfig:
    """Validate *data*; raise ConfigError naming each bad key and *source*."""
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "<root>"
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}'")
            else:
                problems.append(f"'{key}': {err['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems), problems=problems) from None


def load_config(path: Path) -> NodeConfig:
    """Read and validate a TOML config file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, str(path))


def dump_config(cfg: NodeConfig) -> str:
    """TOML text for *cfg* (written by ``timed init`` and ``timed testnet``)."""
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))


def resolve(home: Path, value: str) -> Path:
    """Return a config path: absolute as given, relative to *home* otherwise."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else home / p
