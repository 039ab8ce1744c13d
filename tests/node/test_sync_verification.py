"""Blocks fetched during sync are applied only with a commit this node verifies itself."""

import shutil

import pytest
from dependency_injector import providers

from timecoin.container import NodeContainer
from timecoin.core.errors import BadCommit, BadHeight, TimecoinError
from timecoin.core.types import Commit, CommitSig
from timecoin.wire.codec import encode_commit

from .test_chainstate import open_chain, produce


@pytest.fixture
def source_chain(dev_home):
    """Three blocks and their commits, produced on a node that has the validator key."""
    chain = open_chain(dev_home)
    out, last = [], None
    for _ in range(3):
        p, last = produce(chain, dev_home, [], last)
        out.append((p.block_bytes, last))
    chain.store.close()
    return out


def _follower(dev_home, tmp_path):
    """A second node of the same chain (same genesis), with an empty store."""
    home = tmp_path / "follower"
    home.mkdir()
    for name in ("config.toml", "genesis.json", "node_key.json", "validator_key.json"):
        shutil.copy(dev_home.path / name, home / name)
    c = NodeContainer(config=providers.Object(dev_home.config), home=providers.Object(home))
    c.init_resources()
    return c, c.node()


def test_forged_or_foreign_commits_are_refused_and_nothing_is_applied(
    dev_home, tmp_path, source_chain
):
    c, node = _follower(dev_home, tmp_path)
    try:
        raw1, commit1 = source_chain[0]
        before = node.chain.tip_info()
        # a forged signature
        forged = Commit(
            commit1.height,
            commit1.round,
            commit1.block_hash,
            (CommitSig(commit1.signatures[0].validator_address, bytes(63) + b"\x01"),),
        )
        with pytest.raises(BadCommit):
            node._apply_synced(raw1, encode_commit(forged))
        # a commit for another block (an alternative chain's certificate)
        other = Commit(commit1.height, commit1.round, b"\x42" * 32, commit1.signatures)
        with pytest.raises(BadCommit):
            node._apply_synced(raw1, encode_commit(other))
        # a block that does not extend the tip
        raw2, commit2 = source_chain[1]
        with pytest.raises(BadHeight):
            node._apply_synced(raw2, encode_commit(commit2))
        assert node.chain.tip_info() == before  # nothing half-applied

        # the genuine blocks with their genuine commits are applied in order
        for raw, commit in source_chain:
            block, applied = node._apply_synced(raw, encode_commit(commit))
            assert applied == commit
        assert node.chain.height == 3
    finally:
        c.shutdown_resources()


def test_garbage_block_bytes_are_a_typed_error(dev_home, tmp_path, source_chain):
    c, node = _follower(dev_home, tmp_path)
    try:
        _, commit1 = source_chain[0]
        with pytest.raises(TimecoinError):
            node._apply_synced(b"\x0a\xff\xff garbage", encode_commit(commit1))
        assert node.chain.height == 0
    finally:
        c.shutdown_resources()


def test_parallel_sync_path_refuses_a_swapped_signature_and_applies_the_real_block(
    dev_home, tmp_path
):
    """Signatures are not covered by the block hash: a peer can swap one under a real commit."""
    import asyncio
    import time

    from timecoin.core.errors import BadSignature
    from timecoin.core.genesis import genesis_hash
    from timecoin.core.types import OutPoint
    from timecoin.txbuilder import build_transfer
    from timecoin.wire.codec import block_to_pb, encode_block

    from .test_chainstate import commit_for

    chain = open_chain(dev_home)
    g = OutPoint(genesis_hash(dev_home.genesis), 0)
    coin = chain.store.get_coin(g)
    pay = build_transfer(
        dev_home.params, dev_home.wallet, [g], [(b"\x01" * 20, coin.amount - 10_000)]
    )
    now = int(time.time() * 1000)
    p = chain.build_block(dev_home.validator.address_payload, now, None, [pay])
    genuine = (p.block_bytes, encode_commit(commit_for(dev_home, p.block)))
    chain.store.close()

    msg = block_to_pb(p.block)
    sig = bytearray(msg.txs[1].signatures[0])
    sig[5] ^= 1
    msg.txs[1].signatures[0] = bytes(sig)
    swapped = msg.SerializeToString()

    c, node = _follower(dev_home, tmp_path)
    try:
        with pytest.raises(BadSignature):
            asyncio.run(node._fetch_synced(swapped, genuine[1]))
        assert node.chain.height == 0  # nothing applied
        block, commit = asyncio.run(node._fetch_synced(*genuine))
        assert node.chain.height == 1 and block.hash == p.block.hash
        assert encode_block(block) == p.block_bytes
        assert node.chain.store.get_coin(g) is None
    finally:
        c.shutdown_resources()
