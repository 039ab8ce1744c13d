import json
import stat

import pytest
from click.testing import CliRunner

from timecoin.cli import main
from timecoin.config import NetworkName
from timecoin.core.errors import ConfigError
from timecoin.core.genesis import genesis_changes, genesis_hash, genesis_validator_set
from timecoin.core.keys import KeyPair
from timecoin.core.types import MasternodeTier
from timecoin.genesis import genesis_from_json, genesis_to_json, load_genesis
from timecoin.home import DEV_WALLET_FUNDS_UNITS, init_home, load_home_config
from timecoin.keyfile import read_key, write_key


def test_dev_home_has_funded_wallet_and_single_validator(tmp_path):
    res = init_home(tmp_path, NetworkName.DEVNET, dev=True)
    cfg = load_home_config(tmp_path)
    g = load_genesis(tmp_path / cfg.genesis_file)
    wallet = read_key(tmp_path / "dev_wallet.json")
    validator = read_key(tmp_path / cfg.validator_key_file)
    vs = genesis_validator_set(g)
    assert [v.pubkey for v in vs.validators] == [validator.pubkey]
    assert vs.total_power == MasternodeTier.GOLD.power
    coins = genesis_changes(g).created
    assert [(c.pubkey_hash, c.amount) for _, c in coins] == [
        (wallet.address_payload, DEV_WALLET_FUNDS_UNITS)
    ]
    assert coins[0][0].txid == genesis_hash(g)
    assert len(res.created) == 5
    # key files are private
    assert stat.S_IMODE((tmp_path / "dev_wallet.json").stat().st_mode) == 0o600


def test_init_is_idempotent_and_never_replaces_keys(tmp_path):
    init_home(tmp_path, NetworkName.DEVNET, dev=True)
    before = (tmp_path / "validator_key.json").read_bytes()
    res = init_home(tmp_path, NetworkName.DEVNET, dev=True)
    assert res.created == []
    assert (tmp_path / "validator_key.json").read_bytes() == before


def test_write_key_refuses_overwrite(tmp_path):
    p = tmp_path / "k.json"
    write_key(p, KeyPair.generate(), 0)
    with pytest.raises(ConfigError, match="exists"):
        write_key(p, KeyPair.generate(), 0)


def test_corrupt_key_file_is_a_config_error(tmp_path):
    p = tmp_path / "k.json"
    p.write_text('{"secret": "00"}')
    with pytest.raises(ConfigError, match="not a valid key file"):
        read_key(p)


def test_genesis_json_round_trip_and_hash_is_stable(tmp_path):
    init_home(tmp_path, NetworkName.DEVNET, dev=True)
    g = load_genesis(tmp_path / "genesis.json")
    text = genesis_to_json(g, NetworkName.DEVNET)
    g2 = genesis_from_json(text)
    assert g2 == g and genesis_hash(g2) == genesis_hash(g)
    # whitespace and key order do not change the hash; content does
    g3 = genesis_from_json(json.dumps(json.loads(text), sort_keys=True))
    assert genesis_hash(g3) == genesis_hash(g)
    doc = json.loads(text)
    doc["allocations"][0]["amount"] += 1
    assert genesis_hash(genesis_from_json(json.dumps(doc))) != genesis_hash(g)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(validators=[]), "no validators"),
        (lambda d: d.update(extra=1), "Extra inputs"),
        (lambda d: d["allocations"][0].update(address="TIME1abc"), "invalid genesis"),
        (lambda d: d["validators"][0].update(tier="platinum"), "tier"),
        (lambda d: d["validators"].append(dict(d["validators"][0])), "listed twice"),
    ],
)
def test_bad_genesis_rejected(tmp_path, mutate, message):
    init_home(tmp_path, NetworkName.DEVNET, dev=True)
    doc = json.loads((tmp_path / "genesis.json").read_text())
    mutate(doc)
    with pytest.raises(ConfigError, match=message):
        genesis_from_json(json.dumps(doc))


def test_cli_init_and_error_without_traceback(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["init", "--dev", "--home", str(tmp_path / "h")])
    assert res.exit_code == 0, res.output
    assert "created" in res.output
    (tmp_path / "h" / "config.toml").write_text("netwrk = 1\n")
    res = runner.invoke(main, ["init", "--dev", "--home", str(tmp_path / "h")])
    assert res.exit_code == 1
    assert "unknown key 'netwrk'" in res.output
    assert "Traceback" not in res.output
