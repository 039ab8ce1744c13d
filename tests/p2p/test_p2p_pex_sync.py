"""Peer exchange with a persisted address book, reconnects, and block sync over GetBlocks."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
from p2p_helpers import Handler, Nets, addr, make_block, wait_for

from timecoin._proto.p2p.v1 import p2p_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.core.errors import NotFound, Reason
from timecoin.core.hashing import sha256
from timecoin.p2p import MemoryStore, PeerNetwork, PeerRefused
from timecoin.p2p.addrbook import ADDRESS_BOOK_KEY
from timecoin.p2p.network import GET_BLOCKS_METHOD, SESSION_HEADER


async def test_pex_fills_and_persists_the_address_book(nets: Nets) -> None:
    async with asyncio.timeout(15):
        hub, _ = await nets.make()
        c, _ = await nets.make()
        await c.connect(addr(hub))
        store = MemoryStore()
        a, _ = await nets.make(store=store)
        await a.connect(addr(hub))
        # A learns C from the hub's PexAddresses and dials it to fill outbound slots.
        await wait_for(lambda: c.node_id in a.book.entries)
        assert a.book.entries[c.node_id].address == addr(c)
        await wait_for(lambda: c.node_id in {p.node_id for p in a.peers()}, limit_s=10)
        await wait_for(lambda: ADDRESS_BOOK_KEY in store.data)
        # A new network over the same store starts with the same book.
        again = PeerNetwork(a.cfg, a.identity, Handler(), address_store=store)
        assert again.book.entries[c.node_id].address == addr(c)
        assert hub.node_id in again.book.entries


async def test_pex_ignores_unroutable_and_too_many_addresses(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make(allow_local_addresses=False, max_pex_addresses=5)
        b, _ = await nets.make()
        await b.connect(addr(a))
        await wait_for(lambda: a.peers())
        peer_b = a._peers[b.node_id]
        msg = p2p_pb2.PexAddresses()
        for host in ("127.0.0.1:5", "10.0.0.1:5", "0.0.0.0:24000", "224.0.0.1:5", "8.8.8.8:24000"):
            msg.addresses.add(node_id=sha256(host.encode())[:20], address=host, last_seen_ms=1)
        a._on_pex(peer_b, msg)
        assert {e.address for e in a.book.entries.values()} == {"8.8.8.8:24000"}
        for i in range(5):
            msg.addresses.add(node_id=bytes([i]) * 20, address="9.9.9.9:1", last_seen_ms=1)
        from timecoin.p2p import Misbehaviour

        with pytest.raises(Misbehaviour):
            a._on_pex(peer_b, msg)


async def test_persistent_peer_reconnects_after_disconnect(nets: Nets) -> None:
    async with asyncio.timeout(15):
        b, _ = await nets.make()
        a, _ = await nets.make(persistent_peers=(addr(b),))
        await wait_for(lambda: b.peers())
        first = b.peers()[0]
        b._peers[a.node_id].close(Reason.UNSPECIFIED, "test kick")
        await wait_for(lambda: b.peers() == [] or b.peers()[0] != first)
        await wait_for(lambda: len(b.peers()) == 1 and len(a.peers()) == 1, limit_s=10)


async def test_ping_keeps_heights_fresh(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(handler=Handler(height=3))
        await a.connect(addr(b))
        await wait_for(lambda: a.peers())
        assert a.peers()[0].height == 3
        hb.height = 9
        await wait_for(lambda: a.peers()[0].height == 9)


async def test_get_blocks_serving_is_bounded(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(handler=Handler(height=40), max_blocks_per_request=16)
        await a.connect(addr(b))
        await wait_for(lambda: a.peers())
        token = a._peers[b.node_id].session_out.hex()
        ch = a._channels[a._peers[b.node_id].session_out]
        md = ((SESSION_HEADER, token),)
        req = p2p_pb2.GetBlocksRequest(from_height=30, count=16).SerializeToString()
        got = [
            p2p_pb2.GetBlocksResponse.FromString(f)
            async for f in ch.unary_stream(GET_BLOCKS_METHOD)(req, metadata=md)
        ]
        # Only the 11 blocks that exist, in order, each with its commit.
        assert [r.commit.height for r in got] == list(range(30, 41))
        assert got[0].block.SerializeToString() == hb.blocks[30][0]
        bad = p2p_pb2.GetBlocksRequest(from_height=1, count=17).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in ch.unary_stream(GET_BLOCKS_METHOD)(bad, metadata=md):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_fetch_blocks_from_two_peers_in_parallel_in_order(nets: Nets) -> None:
    async with asyncio.timeout(20):
        a, _ = await nets.make(sync_chunk=16, sync_in_flight=4)
        b, hb = await nets.make(handler=Handler(height=200))
        c, hc = await nets.make(handler=Handler(height=200))
        hb.slow_s = hc.slow_s = 0.01
        await a.connect(addr(b))  # outbound from A
        await c.connect(addr(a))  # inbound to A: fetched through C's listen address
        await wait_for(lambda: len(a.peers()) == 2)
        got = [fb async for fb in a.fetch_blocks(1, 200)]
        assert [fb.height for fb in got] == list(range(1, 201))
        assert all(fb.block == hb.blocks[fb.height][0] for fb in got)
        assert all(fb.commit == hb.blocks[fb.height][1] for fb in got)
        assert hb.served and hc.served
        assert {fb.peer_id for fb in got} == {b.node_id, c.node_id}


class GarbageHandler(Handler):
    """Serves blocks whose commit is for another block (or at the wrong height)."""

    def __init__(self, height: int) -> None:
        super().__init__(height)
        for h in range(1, height + 1):
            block, _ = self.blocks[h]
            forged = types_pb2.Commit(height=h, block_hash=sha256(b"other block"))
            self.blocks[h] = (block, forged.SerializeToString())


async def test_fetch_blocks_skips_a_peer_sending_garbage(nets: Nets) -> None:
    async with asyncio.timeout(20):
        a, _ = await nets.make(sync_chunk=10, sync_in_flight=4)
        good, hg = await nets.make(handler=Handler(height=60))
        bad, hbad = await nets.make(handler=GarbageHandler(height=60))
        await a.connect(addr(good))
        await a.connect(addr(bad))
        got = [fb async for fb in a.fetch_blocks(1, 60)]
        assert [fb.height for fb in got] == list(range(1, 61))
        assert {fb.peer_id for fb in got} == {good.node_id}
        assert all(fb.commit == make_block(fb.height)[1] for fb in got)
        assert hbad.served, "the bad peer was asked (and failed)"
        assert a.is_banned(bad.node_id)
        assert [p.node_id for p in a.peers()] == [good.node_id]


async def test_node_reported_forgery_bans_and_refetch_uses_another_peer(nets: Nets) -> None:
    """The node verifies commits itself; a forged one it reports bans the sender."""
    async with asyncio.timeout(20):
        a, _ = await nets.make(sync_chunk=8)
        b, _ = await nets.make(handler=Handler(height=20))
        c, _ = await nets.make(handler=Handler(height=20))
        await a.connect(addr(b))
        await a.connect(addr(c))
        it = a.fetch_blocks(1, 20)
        first = await anext(it)
        await it.aclose()
        a.report_misbehaviour(first.peer_id, Reason.BAD_COMMIT, "commit does not verify")
        assert a.is_banned(first.peer_id)
        await wait_for(lambda: len(a.peers()) == 1)
        rest = [fb async for fb in a.fetch_blocks(1, 20)]
        assert [fb.height for fb in rest] == list(range(1, 21))
        assert {fb.peer_id for fb in rest} == {a.peers()[0].node_id}


async def test_fetch_blocks_without_able_peers_raises(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make(handler=Handler(height=5))
        await a.connect(addr(b))
        with pytest.raises(NotFound):
            async for _ in a.fetch_blocks(1, 50, wait_for_peers_s=0.3):
                pass


async def test_inbound_limit_refuses_extra_peers(nets: Nets) -> None:
    async with asyncio.timeout(10):
        hub, _ = await nets.make(max_inbound=1)
        a, _ = await nets.make()
        b, _ = await nets.make()
        await a.connect(addr(hub))
        with pytest.raises(PeerRefused) as info:
            await b.connect(addr(hub))
        assert "too many inbound peers" in info.value.message
        assert [p.node_id for p in hub.peers()] == [a.node_id]


async def test_ban_by_ip_refuses_new_node_ids_from_that_ip(nets: Nets) -> None:
    async with asyncio.timeout(10):
        hub, _ = await nets.make(ban_loopback_ips=True, ban_duration_s=60)
        a, _ = await nets.make()
        await a.connect(addr(hub))
        await wait_for(lambda: hub.peers())
        hub.report_misbehaviour(a.node_id, Reason.BAD_SIGNATURE, "invalid vote signature")
        await wait_for(lambda: hub.peers() == [])
        assert hub.is_banned(a.node_id) and hub.is_banned("127.0.0.1")
        fresh, _ = await nets.make()
        with pytest.raises(PeerRefused):
            await fresh.connect(addr(hub))
        assert hub.unban("127.0.0.1")
        await fresh.connect(addr(hub))
        # The node id ban outlives the IP ban.
        with pytest.raises(PeerRefused):
            await a.connect(addr(hub))


async def test_peer_status_reports_height_and_tip(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(handler=Handler(height=4))
        await b.connect(addr(a))  # A asks its inbound peer through B's listen address
        await wait_for(lambda: a.peers())
        hb.height = 12
        height, tip = await a.peer_status(b.node_id)
        assert (height, tip) == hb.local_status()
        assert a.peers()[0].height == 12
        assert a.best_height() == 12


async def test_peer_listening_on_all_interfaces_is_booked_under_its_ip(nets: Nets) -> None:
    async with asyncio.timeout(10):
        hub, _ = await nets.make()
        wild, _ = await nets.make(listen="0.0.0.0:0")
        assert wild.advertised_address.startswith("0.0.0.0:")
        await wild.connect(addr(hub))
        await wait_for(lambda: wild.node_id in hub.book.entries)
        assert hub.book.entries[wild.node_id].address == f"127.0.0.1:{wild.port}"


async def test_mutual_persistent_peers_settle_without_redial_churn(
    nets: Nets, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket

    caplog.set_level(logging.INFO, logger="timecoin.p2p")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    async with asyncio.timeout(15):
        a, _ = await nets.make(
            listen=f"127.0.0.1:{ports[0]}", persistent_peers=(f"127.0.0.1:{ports[1]}",)
        )
        b, _ = await nets.make(
            listen=f"127.0.0.1:{ports[1]}", persistent_peers=(f"127.0.0.1:{ports[0]}",)
        )
        await wait_for(lambda: len(a.peers()) == 1 and len(b.peers()) == 1)
        await asyncio.sleep(0.5)
        before = len([r for r in caplog.records if r.getMessage() == "Peer refused"])
        await asyncio.sleep(1.5)
        after = len([r for r in caplog.records if r.getMessage() == "Peer refused"])
        assert after == before
        assert len(a.peers()) == 1 and len(b.peers()) == 1


async def test_get_blocks_rate_and_concurrency_are_bounded_per_peer(nets: Nets) -> None:
    from timecoin.p2p import RateLimit

    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(
            handler=Handler(height=5), blocks_rate=RateLimit(rate_per_s=0.001, burst=3)
        )
        await a.connect(addr(b))
        await wait_for(lambda: a.peers())
        p = a._peers[b.node_id]
        ch = a._channels[p.session_out]
        md = ((SESSION_HEADER, p.session_out.hex()),)
        req = p2p_pb2.GetBlocksRequest(from_height=1, count=5).SerializeToString()
        codes = []
        for _ in range(5):
            try:
                n = len([f async for f in ch.unary_stream(GET_BLOCKS_METHOD)(req, metadata=md)])
                codes.append(n)
            except grpc.aio.AioRpcError as err:
                codes.append(err.code())
        assert codes[:3] == [5, 5, 5]
        assert codes[3:] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2


async def test_second_exchange_stream_for_a_session_is_refused(nets: Nets) -> None:
    from timecoin.p2p.network import EXCHANGE_METHOD

    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make()
        await a.connect(addr(b))
        await wait_for(lambda: b.peers() and b._peers[a.node_id].exchange_attached)
        p = a._peers[b.node_id]
        call = a._channels[p.session_out].stream_stream(EXCHANGE_METHOD)(
            metadata=((SESSION_HEADER, p.session_out.hex()),)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call.read()
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert len(b.peers()) == 1
