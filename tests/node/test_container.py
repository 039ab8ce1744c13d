"""The container builds storage -> chain state from a config; tests override providers."""

from dependency_injector import providers

from timecoin.container import NodeContainer
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import UNSPENT_CACHE_ENTRY_BYTES


def test_container_builds_chain_state_on_leveldb(dev_home):
    c = NodeContainer(
        config=providers.Object(dev_home.config), home=providers.Object(dev_home.path)
    )
    c.init_resources()
    try:
        chain = c.chain_state()
        assert chain.height == 0
        assert (dev_home.path / "data" / "CURRENT").exists()  # a LevelDB directory
        node = c.node()
        assert node.chain is chain
        assert node.engine.config.address == dev_home.validator.address_payload
        assert node.engine.config.timeouts.commit_ms == 1_000  # devnet pace
    finally:
        c.shutdown_resources()


def test_override_storage_with_memory_backend(dev_home, tmp_path):
    mem = open_store("memory", tmp_path / "mem", {})
    c = NodeContainer(
        config=providers.Object(dev_home.config), home=providers.Object(dev_home.path)
    )
    with c.kv_store.override(providers.Object(mem)):
        chain = c.chain_state()
        assert chain.store.kv is mem
        assert chain.store.tip().height == 0
    assert not (dev_home.path / "data" / "CURRENT").exists()


def test_coins_cache_and_workers_follow_the_config(dev_home):
    dev_home.config.storage.coins_cache_mb = 1
    dev_home.config.worker_processes = 0
    c = NodeContainer(
        config=providers.Object(dev_home.config), home=providers.Object(dev_home.path)
    )
    c.init_resources()
    try:
        store = c.chain_store()
        assert store._unspent_max == 2**20 // UNSPENT_CACHE_ENTRY_BYTES
        assert c.workers() is None and c.node()._workers is None
    finally:
        c.shutdown_resources()
    dev_home.config.storage.coins_cache_mb = 0
    dev_home.config.worker_processes = 2
    c = NodeContainer(
        config=providers.Object(dev_home.config), home=providers.Object(dev_home.path)
    )
    c.init_resources()
    try:
        assert c.chain_store()._unspent_max == 0
        assert c.node()._workers is c.workers() and c.workers().workers == 2
    finally:
        c.shutdown_resources()
