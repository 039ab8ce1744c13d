"""``timed testnet``: files for an N-validator network on one machine (or N machines).

Layout written under ``--out DIR``::

    DIR/genesis.json         shared genesis: N gold masternodes, a funded faucet
    DIR/faucet.json          key of the funded faucet wallet
    DIR/node1.toml ...       one config per node; paths are relative to DIR
    DIR/node1/               node1's keys, data directory and cookie

so the operator flow is ``timed --config DIR/node1.toml`` in N terminals. Every
node lists all others as persistent peers on distinct loopback ports
(P2P base-port + 2k, API base-port + 2k + 1, Prometheus base-port + 1000 + k).
"""

from __future__ import annotations

import time
from pathlib import Path

from timecoin.config import NetworkName, dump_config, parse_config
from timecoin.core.errors import ConfigError
from timecoin.core.genesis import Genesis, GenesisAllocation, GenesisValidator
from timecoin.core.keys import KeyPair
from timecoin.core.types import UNITS_PER_TIME, MasternodeTier
from timecoin.genesis import genesis_to_json, network_of
from timecoin.keyfile import write_key

FAUCET_FUNDS_UNITS = 10_000_000 * UNITS_PER_TIME


def write_testnet(
    out: Path,
    validators: int,
    *,
    network: NetworkName = NetworkName.DEVNET,
    base_port: int = 26600,
    host: str = "127.0.0.1",
    block_interval_ms: int | None = None,
    tier: MasternodeTier = MasternodeTier.GOLD,
    observers: int = 0,
) -> list[Path]:
    """Write configs, keys and a shared genesis for *validators* nodes (+ *observers*)."""
    if validators < 1:
        raise ConfigError("a testnet needs at least one validator")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; refusing to overwrite a network")
    out.mkdir(parents=True, exist_ok=True)
    net = network_of(network)
    total = validators + observers
    names = [f"node{i + 1}" for i in range(total)]
    p2p = [f"{host}:{base_port + 2 * i}" for i in range(total)]
    keys = []
    for name in names:
        node_key, val_key = KeyPair.generate(), KeyPair.generate()
        write_key(out / name / "node_key.json", node_key, net)
        write_key(out / name / "validator_key.json", val_key, net)
        keys.append(val_key)
    faucet = KeyPair.generate()
    write_key(out / "faucet.json", faucet, net)
    chain_id = f"timecoin-{network.value}-local-{int(time.time())}"
    genesis = Genesis(
        chain_id=chain_id,
        network=net,
        genesis_time_ms=int(time.time() * 1000),
        allocations=(GenesisAllocation(faucet.address_payload, FAUCET_FUNDS_UNITS),),
        validators=tuple(
            GenesisValidator(
                pubkey=keys[i].pubkey,
                tier=tier,
                reward_pubkey_hash=keys[i].address_payload,
                name=names[i],
            )
            for i in range(validators)
        ),
    )
    (out / "genesis.json").write_text(genesis_to_json(genesis, network))
    configs = []
    for i, name in enumerate(names):
        data: dict[str, object] = {
            "network": network.value,
            "chain_id": chain_id,
            "moniker": name,
            "genesis_file": "genesis.json",
            "node_key_file": f"{name}/node_key.json",
            "validator_key_file": f"{name}/validator_key.json",
            "storage": {"path": f"{name}/data"},
            "p2p": {
                "listen": p2p[i],
                "persistent_peers": [a for j, a in enumerate(p2p) if j != i],
                "allow_local_addresses": True,
            },
            "api": {
                "listen": f"{host}:{base_port + 2 * i + 1}",
                "cookie_file": f"{name}/.cookie",
            },
            "telemetry": {"metrics_listen": f"{host}:{base_port + 1000 + i}"},
        }
        if block_interval_ms is not None:
            data["consensus"] = {"block_interval_ms": block_interval_ms}
        cfg = parse_config(data, f"{name}.toml")
        path = out / f"{name}.toml"
        path.write_text(dump_config(cfg))
        configs.append(path)
    return configs
