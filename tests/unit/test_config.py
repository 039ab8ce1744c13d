import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from timecoin.config import (
    DEFAULT_PORTS,
    NetworkName,
    NodeConfig,
    dump_config,
    load_config,
    parse_config,
)
from timecoin.core.errors import ConfigError, Reason

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "deploy/config").glob("config.*.toml"))


@pytest.mark.parametrize(
    ("network", "chain_id", "api", "p2p_port"),
    [
        ("mainnet", "timecoin-mainnet-1", "127.0.0.1:24001", 24000),
        ("testnet", "timecoin-testnet-1", "127.0.0.1:24101", 24100),
        ("devnet", "timecoin-devnet-1", "127.0.0.1:24201", 24200),
    ],
)
def test_network_defaults(network, chain_id, api, p2p_port):
    cfg = parse_config({"network": network})
    assert (cfg.chain_id, cfg.api.listen) == (chain_id, api)
    assert DEFAULT_PORTS[NetworkName(network)][0] == p2p_port


def test_unknown_key_names_key_and_file():
    with pytest.raises(ConfigError) as ei:
        parse_config({"storage": {"bakend": "leveldb"}}, "node1.toml")
    assert "node1.toml" in str(ei.value) and "storage.bakend" in str(ei.value)
    assert ei.value.reason == Reason.CONFIG


def test_bad_value_is_rejected():
    with pytest.raises(ConfigError, match="network"):
        parse_config({"network": "moonnet"})


def test_bad_toml(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("network = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)


def test_dump_and_load_round_trip(tmp_path):
    cfg = parse_config({"network": "testnet", "mempool": {"max_txs": 5}})
    p = tmp_path / "c.toml"
    p.write_text(dump_config(cfg))
    assert load_config(p) == cfg


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k != "options":
            out |= _keys(v, prefix + k + ".")
    return out


def _model_keys(model=NodeConfig, prefix=""):
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _model_keys(ann, prefix + name + ".")
    return out


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"config.mainnet.toml", "config.testnet.toml"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_documents_every_key(path):
    """The example files load and name every key of the model (and no other)."""
    cfg = load_config(path)
    assert cfg.network in set(NetworkName)
    assert _keys(tomllib.loads(path.read_text())) == _model_keys()
