"""The container builds storage -> chain state from a config; tests override providers."""

from dependency_injector import providers

from timecoin.container import NodeContainer
from timecoin.storage.backends import open_store


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
