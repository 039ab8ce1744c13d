"""The node's home directory: config, keys, genesis and data in one place.

``timed init`` creates it; ``timed serve --dev`` creates a devnet home on first
run. Default location: the user data dir (platformdirs) + ``/<network>``, e.g.
``~/.local/share/timed/devnet`` on Linux; ``--home`` overrides it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from timecoin.config import (
    DEFAULT_CHAIN_IDS,
    NetworkName,
    NodeConfig,
    dump_config,
    parse_config,
    resolve,
)
from timecoin.core.errors import ConfigError
from timecoin.core.genesis import Genesis, GenesisAllocation, GenesisValidator
from timecoin.core.keys import KeyPair
from timecoin.core.types import UNITS_PER_TIME, MasternodeTier
from timecoin.genesis import genesis_to_json, network_of
from timecoin.keyfile import read_key, write_key

CONFIG_FILE = "config.toml"
DEV_WALLET_FILE = "dev_wallet.json"
DEV_WALLET_FUNDS_UNITS = 1_000_000 * UNITS_PER_TIME


def default_home(network: NetworkName) -> Path:
    """Return the per-user default home for *network*."""
    return Path(platformdirs.user_data_dir("timed", appauthor=False)) / network.value


@dataclass(frozen=True, slots=True)
class InitResult:
    home: Path
    config_path: Path
    created: list[Path]


def init_home(
    home: Path, network: NetworkName, *, dev: bool = False, moniker: str = "timed"
) -> InitResult:
    """Create config and keys under *home*; for a dev home also a one-validator genesis.

    Existing files are kept (init is idempotent), so re-running never replaces
    a key or a genesis file that a chain already depends on.
    """
    home.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    cfg_path = home / CONFIG_FILE
    if cfg_path.exists():
        from timecoin.config import load_config

        cfg = load_config(cfg_path)
    else:
        cfg = parse_config({"network": network.value, "moniker": moniker})
        cfg_path.write_text(dump_config(cfg))
        created.append(cfg_path)
    net = network_of(cfg.network)
    for name in (cfg.node_key_file, cfg.validator_key_file):
        path = resolve(home, name)
        if not path.exists():
            write_key(path, KeyPair.generate(), net)
            created.append(path)
    genesis_path = resolve(home, cfg.genesis_file)
    if dev and not genesis_path.exists():
        if cfg.network != NetworkName.DEVNET:
            raise ConfigError("a dev genesis is only made for network = devnet")
        wallet_path = home / DEV_WALLET_FILE
        if not wallet_path.exists():
            write_key(wallet_path, KeyPair.generate(), net)
            created.append(wallet_path)
        validator = read_key(resolve(home, cfg.validator_key_file))
        wallet = read_key(wallet_path)
        genesis = Genesis(
            chain_id=cfg.chain_id or DEFAULT_CHAIN_IDS[NetworkName.DEVNET],
            network=net,
            genesis_time_ms=int(time.time() * 1000),
            allocations=(GenesisAllocation(wallet.address_payload, DEV_WALLET_FUNDS_UNITS),),
            validators=(
                GenesisValidator(
                    pubkey=validator.pubkey,
                    tier=MasternodeTier.GOLD,
                    reward_pubkey_hash=wallet.address_payload,
                    name=cfg.moniker,
                ),
            ),
        )
        genesis_path.write_text(genesis_to_json(genesis, cfg.network))
        created.append(genesis_path)
    return InitResult(home=home, config_path=cfg_path, created=created)


def load_home_config(home: Path) -> NodeConfig:
    """Load the config of an initialised home."""
    from timecoin.config import load_config

    return load_config(home / CONFIG_FILE)
