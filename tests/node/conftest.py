from pathlib import Path

import pytest

from timecoin.config import NetworkName
from timecoin.core.params import ChainParams
from timecoin.genesis import load_genesis
from timecoin.home import init_home, load_home_config
from timecoin.keyfile import read_key


class DevHome:
    def __init__(self, path: Path) -> None:
        init_home(path, NetworkName.DEVNET, dev=True)
        self.path = path
        self.config = load_home_config(path)
        self.genesis = load_genesis(path / "genesis.json")
        self.validator = read_key(path / "validator_key.json")
        self.wallet = read_key(path / "dev_wallet.json")
        self.params = ChainParams.for_network("devnet")


@pytest.fixture
def dev_home(tmp_path) -> DevHome:
    return DevHome(tmp_path / "home")


@pytest.fixture
def make_home():
    return DevHome
