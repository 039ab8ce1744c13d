"""ChainService over a real grpc.aio server on 127.0.0.1 (port 0) backed by the fake node."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from api_fake_node import TIME, FakeNode, pay, running, test_key, until

from timecoin._proto.chain.v1 import chain_pb2
from timecoin.api.chain_service import SubscriptionLimits
from timecoin.core.address import encode_address
from timecoin.core.commit import verify_commit
from timecoin.core.errors import (
    BadAddress,
    DecodeError,
    DoubleSpend,
    NotFound,
    RateLimited,
    Reason,
)
from timecoin.core.merkle import verify_merkle_proof
from timecoin.core.types import OutPoint
from timecoin.wire.codec import (
    commit_from_pb,
    decode_header,
    encode_block,
    transaction_from_pb,
    validator_set_from_pb,
)

ALICE = test_key(1)
BOB = test_key(2)


def addr(key) -> str:  # type: ignore[no-untyped-def]
    return encode_address(key.address_payload, FakeNode().params.network)


async def test_status_reports_the_tip(tmp_path) -> None:
    async with running(tmp_path) as r:
        s = await r.client.status()
        assert (s.chain_id, s.network, s.height) == ("timecoin-devnet-1", "devnet", 0)
        info = r.node.commit_block()
        s = await r.client.status()
        assert s.height == 1 and s.tip_hash == info.hash and s.node_version


async def test_get_block_by_height_and_hash_with_a_verifiable_commit(tmp_path) -> None:
    async with running(tmp_path) as r:
        r.node.commit_block()
        info = r.node.commit_block()
        by_height = await r.client.get_block(height=2)
        by_hash = await r.client.get_block(block_hash=info.hash)
        assert by_height == by_hash
        assert by_height.block_hash == info.hash and by_height.height == 2
        commit = commit_from_pb(by_height.commit)
        vs = validator_set_from_pb((await r.client.validator_set(2)).validator_set)
        params = r.node.params
        assert verify_commit(params.chain_id, commit, vs, height=2, block_hash=info.hash) == 100
        with pytest.raises(NotFound):
            await r.client.get_block(height=3)
        with pytest.raises(NotFound):
            await r.client.get_block(block_hash=bytes(32))
        with pytest.raises(DecodeError):  # a hash that is not 32 bytes
            await r.client.get_block(block_hash=b"\x01\x02")


async def test_get_transaction_is_verifiable_offline(tmp_path) -> None:
    node = FakeNode()
    coins = node.fund(ALICE, [10 * TIME, 20 * TIME, 30 * TIME])
    txs = [
        pay(node, ALICE, c, TIME, BOB.address_payload, change=c.index * TIME + 8 * TIME)
        for c in coins
    ]
    async with running(tmp_path, node) as r:
        for tx in txs:
            assert await r.client.submit(tx) == tx.txid
        r.node.commit_block()
        target = txs[1]
        resp = await r.client.get_transaction(target.txid)
        # Everything below uses only the response and the validator set.
        tx = transaction_from_pb(resp.transaction, node.params.network)
        assert tx.txid == target.txid
        header = decode_header(resp.header_bytes)
        from timecoin.core.hashing import sha256

        assert sha256(resp.header_bytes) == resp.block_hash
        assert resp.tx_count == 3
        assert verify_merkle_proof(
            tx.txid, resp.position, resp.tx_count, list(resp.merkle_proof), header.tx_root
        )
        vs = validator_set_from_pb((await r.client.validator_set(resp.height)).validator_set)
        verify_commit(
            node.params.chain_id,
            commit_from_pb(resp.commit),
            vs,
            height=resp.height,
            block_hash=resp.block_hash,
        )
        with pytest.raises(NotFound):
            await r.client.get_transaction(bytes(32))


async def test_list_unspent_pages_and_validates_the_address(tmp_path) -> None:
    node = FakeNode()
    node.fund(ALICE, [TIME * (i + 1) for i in range(7)])
    node.fund(BOB, [5 * TIME])
    async with running(tmp_path, node) as r:
        seen: list[OutPoint] = []
        after = None
        pages = 0
        while True:
            page = await r.client.list_unspent(addr(ALICE), limit=3, after=after)
            pages += 1
            assert len(page.unspent) <= 3
            assert page.total_amount == sum(u.amount for u in page.unspent)
            seen += [OutPoint(bytes(u.out_point.txid), u.out_point.index) for u in page.unspent]
            if not page.more:
                break
            after = seen[-1]
        assert pages == 3 and len(seen) == 7 and seen == sorted(seen)
        assert all(u.address == addr(ALICE) for u in page.unspent)
        assert await r.client.balance(addr(ALICE)) == (28 * TIME, 7, 0)
        # Limit 0 means the default; huge limits are capped, not honoured.
        page = await r.client.list_unspent(addr(ALICE), limit=10**9)
        assert len(page.unspent) == 7 and not page.more
        with pytest.raises(BadAddress):
            await r.client.list_unspent("TIME0notanaddress")
        mainnet = encode_address(ALICE.address_payload, type(node.params.network)(1))
        with pytest.raises(BadAddress):  # right checksum, wrong network
            await r.client.list_unspent(mainnet)


async def test_validator_set_unknown_height_is_not_found(tmp_path) -> None:
    async with running(tmp_path) as r:
        resp = await r.client.validator_set()
        assert resp.height == 1 and resp.total_power == 100
        with pytest.raises(NotFound):
            await r.client.validator_set(50)


async def test_subscribe_blocks_streams_new_blocks(tmp_path) -> None:
    async with running(tmp_path) as r:
        stream = r.client.subscribe_blocks(include_transactions=False)
        got: list[int] = []

        async def consume() -> None:
            async for msg in stream:
                got.append(msg.height)
                if len(got) == 3:
                    return

        task = asyncio.create_task(consume())
        await until(lambda: r.server.chain.subscribers > 0)
        for _ in range(3):
            r.node.commit_block()
        await asyncio.wait_for(task, 10)
        assert got == [1, 2, 3]
        await stream.aclose()
        # The server notices the cancelled call and frees the slot.
        await until(lambda: r.server.chain.subscribers == 0)


async def test_slow_subscriber_is_dropped_with_notice(tmp_path) -> None:
    limits = SubscriptionLimits(max_queue=2)
    async with running(tmp_path, subscriptions=limits) as r:
        stream = r.client.subscribe_blocks()
        first = asyncio.create_task(anext(stream))
        await until(lambda: r.server.chain.subscribers > 0)
        # Publish far more than the queue holds before the servicer can drain it.
        for _ in range(10):
            r.node.commit_block()
        msgs = [await asyncio.wait_for(first, 10)]
        async for msg in stream:
            msgs.append(msg)
        assert msgs[-1].HasField("dropped")
        assert msgs[-1].dropped.last_height_sent == msgs[-2].height if len(msgs) > 1 else True
        assert len(msgs) < 11  # it did not get everything: it was cut off
        assert len(r.node.broadcaster) == 0


async def test_subscription_count_is_bounded(tmp_path) -> None:
    limits = SubscriptionLimits(max_subscribers=1)
    async with running(tmp_path, subscriptions=limits) as r:
        first = r.client.subscribe_blocks()
        task = asyncio.create_task(anext(first))
        await until(lambda: r.server.chain.subscribers > 0)
        with pytest.raises(RateLimited):
            await anext(r.client.subscribe_blocks())
        r.node.commit_block()
        assert (await asyncio.wait_for(task, 10)).height == 1
        await first.aclose()


async def test_subscribed_blocks_are_whole_or_without_their_transactions(tmp_path) -> None:
    node = FakeNode()
    (coin,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, coin, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        r.node.commit_block()  # height 1; height 2 then carries its commit
        await r.client.submit(tx)
        full = r.client.subscribe_blocks(include_transactions=True)
        bare = r.client.subscribe_blocks(include_transactions=False)
        ids = r.client.subscribe_blocks(include_txids=True)
        tasks = [asyncio.create_task(anext(s)) for s in (full, bare, ids)]
        await until(lambda: r.server.chain.subscribers == 3)
        info = r.node.commit_block()
        # A node publishes the stored bytes with the block; they are served as they are.
        stored = replace(info, block_bytes=encode_block(info.block))
        r.node.broadcaster.publish(stored)
        got_full, got_bare, got_ids = [await asyncio.wait_for(t, 10) for t in tasks]
        more_full, more_bare = await anext(full), await anext(bare)
        # Txids in block order (coinbase first), without the transactions themselves.
        assert list(got_ids.txids) == [t.txid for t in info.block.txs]
        assert list(got_ids.txids) == [tx.txid]
        assert not got_ids.block.txs and got_ids.block.header_bytes == info.block.header_bytes
        assert not got_full.txids and not got_bare.txids
        for got in (got_full, got_bare, more_full, more_bare):
            assert got.height == 2 and got.block_hash == info.hash
            assert got.block.header_bytes == info.block.header_bytes
            assert got.block.HasField("last_commit")
        assert got_full.block.SerializeToString() == encode_block(info.block)
        assert more_full.block.SerializeToString() == stored.block_bytes
        assert not got_bare.block.txs and not more_bare.block.txs
        assert got_bare.block.last_commit == got_full.block.last_commit
        for stream in (full, bare, ids):
            await stream.aclose()


async def test_subscribe_transaction_pending_then_final(tmp_path) -> None:
    node = FakeNode()
    (coin,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, coin, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        await r.client.submit(tx)
        stream = r.client.subscribe_transaction(tx.txid)
        first = await anext(stream)
        assert first.status == chain_pb2.TRANSACTION_STATUS_PENDING
        info = r.node.commit_block()
        final = await anext(stream)
        assert final.status == chain_pb2.TRANSACTION_STATUS_FINAL
        assert (final.height, final.block_hash) == (1, info.hash)
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        # wait_final on a final tx answers at once.
        assert await r.client.wait_final(tx.txid, timeout_s=5) == (1, info.hash)


async def test_subscribe_transaction_reports_rejection_with_reason(tmp_path) -> None:
    node = FakeNode()
    (coin,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, coin, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        await r.client.submit(tx)
        waiter = asyncio.create_task(r.client.wait_final(tx.txid, timeout_s=10))
        await until(lambda: r.server.chain.subscribers > 0)
        r.node.reject_pending(tx.txid, DoubleSpend("conflicting spend was finalized"))
        r.node.commit_block()
        with pytest.raises(DoubleSpend) as info:
            await waiter
        assert info.value.reason == Reason.DOUBLE_SPEND
        assert "conflicting spend" in info.value.message


async def test_wait_final_times_out_with_the_last_status(tmp_path) -> None:
    from timecoin.api.client import NodeUnavailable

    node = FakeNode()
    (coin,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, coin, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        await r.client.submit(tx)
        with pytest.raises(NodeUnavailable, match="TRANSACTION_STATUS_PENDING"):
            await r.client.wait_final(tx.txid, timeout_s=0.3)
        # The server noticed the client left and freed the subscription.
        await until(lambda: r.server.chain.subscribers == 0)
