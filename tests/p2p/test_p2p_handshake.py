"""Handshake over real grpc.aio on loopback: authentication and every refusal."""

from __future__ import annotations

import asyncio

from p2p_helpers import Nets, addr, wait_for

from timecoin.p2p import OUTBOUND


async def test_two_networks_connect_and_authenticate(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make()
        info = await a.connect(addr(b))
        assert info.node_id == b.node_id
        assert info.direction == OUTBOUND
        await wait_for(lambda: [p.node_id for p in b.peers()] == [a.node_id])
        assert b.peers()[0].direction == "inbound"
        assert b.peers()[0].listen_address == addr(a)
