"""Gossip over real streams: delivery, dedup, priorities, floods, oversized frames, bans."""

from __future__ import annotations

import asyncio
import logging

import pytest
from p2p_helpers import Nets, addr, wait_for

from timecoin._proto.consensus.v1 import consensus_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.core.errors import BadSignature, StaleHeight
from timecoin.p2p import PeerRefused, RateLimit


def vote(height: int, rnd: int = 0) -> consensus_pb2.ConsensusMessage:
    return consensus_pb2.ConsensusMessage(
        vote=types_pb2.Vote(height=height, round=rnd, signature=b"\x01" * 64)
    )


def tx(i: int, pad: int = 0) -> types_pb2.Transaction:
    return types_pb2.Transaction(
        body_bytes=i.to_bytes(8, "big") + b"\x00" * pad, signatures=[b"s" * 64]
    )


async def test_consensus_messages_flow_both_ways_with_trace(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, ha = await nets.make()
        b, hb = await nets.make()
        c, hc = await nets.make()
        await a.connect(addr(b))
        await c.connect(addr(a))
        await wait_for(lambda: len(a.peers()) == 2 and len(b.peers()) == 1 and len(c.peers()) == 1)
        msg = vote(7)
        msg.trace.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert a.broadcast_consensus(msg) == 2
        await wait_for(lambda: hb.consensus and hc.consensus)
        assert hb.consensus[0] == (a.node_id, msg)
        assert hc.consensus[0][1].trace.traceparent == msg.trace.traceparent
        # The listener side sends on the dialer's stream too.
        assert b.send_consensus(a.node_id, vote(8))
        assert c.broadcast_consensus(vote(9), exclude=[a.node_id]) == 0
        await wait_for(lambda: [m.vote.height for _, m in ha.consensus] == [8])
        assert not b.send_consensus(b"\x00" * 20, vote(1))


async def test_transaction_gossip_is_deduplicated(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, ha = await nets.make()
        b, hb = await nets.make()
        c, hc = await nets.make()
        await a.connect(addr(b))
        await b.connect(addr(c))
        await wait_for(lambda: len(b.peers()) == 2)
        txs = [tx(i) for i in range(5)]
        assert a.broadcast_transactions(txs) == 1
        await wait_for(lambda: len(hb.txs) == 5)
        assert {s for s, _ in hb.txs} == {a.node_id}
        # The node forwards what its mempool accepted: only C still lacks them.
        assert b.broadcast_transactions([t for _, t in hb.txs], exclude=[a.node_id]) == 1
        await wait_for(lambda: len(hc.txs) == 5)
        # A resend (or C gossiping back) is not delivered again anywhere.
        a.broadcast_transactions(txs + [tx(99)])
        c.broadcast_transactions(txs)
        await wait_for(lambda: len(hb.txs) == 6)
        await asyncio.sleep(0.3)
        assert sorted(t.body_bytes for _, t in hb.txs) == sorted(
            t.body_bytes for t in [*txs, tx(99)]
        )
        assert ha.txs == [] and len(hc.txs) == 5
        # B knows C has them, so a re-broadcast by B sends nothing to C.
        assert b.broadcast_transactions(txs) == 0


async def test_evidence_gossip_delivered(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make()
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        ev = types_pb2.Evidence()
        ev.duplicate_vote.vote_a.height = 3
        assert a.broadcast_evidence(ev) == 1
        await wait_for(lambda: hb.evidence)
        assert hb.evidence[0] == (a.node_id, ev)


async def test_tx_frame_flood_is_rate_limited_disconnected_and_banned(
    nets: Nets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timecoin.p2p")
    async with asyncio.timeout(15):
        a, _ = await nets.make(gossip_queue=10_000)
        b, hb = await nets.make(tx_rate=RateLimit(rate_per_s=5, burst=10), ban_threshold=50)
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        for i in range(400):
            a.broadcast_transactions([tx(i)])
        await wait_for(lambda: b.peers() == [] and a.peers() == [])
        assert b.is_banned(a.node_id)
        assert len(hb.txs) < 100
        assert any(
            r.getMessage() == "Peer banned" and r.fields["reason"] == "RATE_LIMITED"  # type: ignore[attr-defined]
            for r in caplog.records
        )
        # While banned it cannot come back; unban lets it.
        with pytest.raises(PeerRefused):
            await a.connect(addr(b))
        assert b.unban(a.node_id)
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())


async def test_oversized_consensus_message_bans(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make()
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        big = vote(1)
        big.vote.signature = b"\x00" * 10_000  # a vote is a few hundred bytes
        a.broadcast_consensus(big)
        await wait_for(lambda: b.peers() == [])
        assert b.is_banned(a.node_id)
        assert hb.consensus == []


async def test_oversized_gossip_frame_is_rejected_before_decoding(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(max_gossip_frame_bytes=50_000)
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        a.broadcast_transactions([tx(1, pad=60_000)])
        await wait_for(lambda: b.peers() == [])
        assert b.is_banned(a.node_id)
        assert hb.txs == []


async def test_grpc_frame_cap_refuses_huge_frames(nets: Nets) -> None:
    """Above the gRPC max message size the transport itself refuses the frame."""
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(max_frame_bytes=100_000)
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        a.broadcast_transactions([tx(1, pad=200_000)])
        await wait_for(lambda: b.peers() == [])
        assert hb.txs == []


async def test_invalid_consensus_messages_score_until_ban_but_benign_ones_do_not(
    nets: Nets,
) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(ban_threshold=60)
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        hb.consensus_error = StaleHeight("old height")
        for h in range(20):
            a.broadcast_consensus(vote(h))
        await asyncio.sleep(0.3)
        assert b.peers() and not b.is_banned(a.node_id)
        hb.consensus_error = BadSignature("forged vote")
        for h in range(3):
            a.broadcast_consensus(vote(h))
        await wait_for(lambda: b.peers() == [])
        assert b.is_banned(a.node_id)


async def test_consensus_is_not_starved_by_a_tx_flood(nets: Nets) -> None:
    """A full tx queue drops tx batches; every consensus message still arrives."""
    async with asyncio.timeout(15):
        a, _ = await nets.make(gossip_queue=4)
        b, hb = await nets.make(tx_rate=RateLimit(rate_per_s=1e6, burst=1e6))
        flood, _ = await nets.make(gossip_queue=100_000)
        await a.connect(addr(b))
        await flood.connect(addr(b))
        await wait_for(lambda: len(b.peers()) == 2)
        peer_a = a._peers[b.node_id]

        async def spam() -> None:
            i = 10_000
            while True:
                flood.broadcast_transactions([tx(j, pad=200) for j in range(i, i + 50)])
                i += 50
                await asyncio.sleep(0)

        spammer = asyncio.ensure_future(spam())
        try:
            for h in range(200):
                a.broadcast_transactions([tx(h, pad=1000)])
                a.broadcast_consensus(vote(h))
            await wait_for(
                lambda: len([1 for s, _ in hb.consensus if s == a.node_id]) == 200, limit_s=10
            )
        finally:
            spammer.cancel()
        heights = [m.vote.height for s, m in hb.consensus if s == a.node_id]
        assert heights == list(range(200))
        assert peer_a.dropped_txs > 0
        assert len(b.peers()) == 2


async def test_send_path_faults_drop_and_partition(nets: Nets) -> None:
    from timecoin.p2p import FaultRule, FaultSchedule

    async with asyncio.timeout(10):
        b, hb = await nets.make()
        c, _ = await nets.make()
        sched = FaultSchedule(
            seed=1,
            rules=(
                FaultRule(kind="drop", peers=frozenset({b.node_id.hex()}), end_s=1.0),
                FaultRule(kind="partition", peers=frozenset({c.node_id.hex()})),
            ),
        )
        a, _ = await nets.make(faults=sched)
        await a.connect(addr(b))
        with pytest.raises(PeerRefused) as info:
            await a.connect(addr(c))
        assert "partition" in info.value.message
        a.broadcast_consensus(vote(1))
        await asyncio.sleep(0.2)
        assert hb.consensus == []
        # After the drop window ends (1 s after start) messages flow again.
        await asyncio.sleep(1.0)
        a.broadcast_consensus(vote(2))
        await wait_for(lambda: [m.vote.height for _, m in hb.consensus] == [2])


def test_fault_schedule_from_env_is_seeded() -> None:
    from timecoin.p2p import FaultSchedule

    text = (
        '{"seed": 3, "rules": [{"kind": "drop", "probability": 0.5},'
        ' {"kind": "delay", "delay_ms": 20}]}'
    )
    s1 = FaultSchedule.from_env({"TIMECOIN_P2P_FAULTS": text})
    s2 = FaultSchedule.from_env({"TIMECOIN_P2P_FAULTS": text})
    assert s1 is not None and s2 is not None
    d1 = [s1.decide(b"\x01" * 20, 0.0) for _ in range(50)]
    d2 = [s2.decide(b"\x01" * 20, 0.0) for _ in range(50)]
    assert d1 == d2
    assert -1.0 in d1 and 0.02 in d1
    assert FaultSchedule.from_env({}) is None
    with pytest.raises(ValueError):
        FaultSchedule.from_json('{"rules": [{"kind": "explode"}]}')


async def test_faults_from_env_partition_on_a_shared_clock(
    nets: Nets, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import time

    async with asyncio.timeout(10):
        b, _ = await nets.make()
        sched = {
            "seed": 5,
            "epoch_unix_s": time.time(),
            "rules": [{"kind": "partition", "peers": [b.node_id.hex()], "end_s": 0.5}],
        }
        monkeypatch.setenv("TIMECOIN_P2P_FAULTS", json.dumps(sched))
        a, _ = await nets.make()
        with pytest.raises(PeerRefused):
            await a.connect(addr(b))
        await asyncio.sleep(0.6)
        await a.connect(addr(b))  # the partition healed


async def test_dial_to_a_closed_port_fails_fast(nets: Nets) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with asyncio.timeout(5):
        a, _ = await nets.make()
        with pytest.raises(PeerRefused):
            await a.connect(f"127.0.0.1:{port}")
        with pytest.raises(PeerRefused):
            await a.connect("not-an-address")


async def test_tx_batch_trace_reaches_a_tracing_handler(nets: Nets) -> None:
    from p2p_helpers import Handler

    class Tracing(Handler):
        def __init__(self) -> None:
            super().__init__()
            self.traces: list[types_pb2.TraceContext | None] = []

        async def on_traced_transactions(self, peer, txs, trace) -> None:  # type: ignore[no-untyped-def]
            self.traces.append(trace)
            await self.on_transactions(peer, txs)

    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, hb = await nets.make(handler=Tracing())
        await a.connect(addr(b))
        await wait_for(lambda: b.peers())
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        a.broadcast_transactions([tx(1)], trace=types_pb2.TraceContext(traceparent=tp))
        a.broadcast_transactions([tx(2)])
        await wait_for(lambda: len(hb.txs) == 2)
        assert isinstance(hb, Tracing)
        assert [t.traceparent if t else None for t in hb.traces] == [tp, None]


async def test_group_partition_cuts_and_heals(nets: Nets) -> None:
    import dataclasses
    import time

    from p2p_helpers import identity

    from timecoin.core.keys import KeyPair
    from timecoin.p2p import FaultRule, FaultSchedule

    ids = [identity(KeyPair.generate()) for _ in range(3)]
    hexes = [i.node_id.hex() for i in ids]
    rule = FaultRule(
        kind="partition",
        start_s=1.0,
        end_s=2.0,
        groups=(frozenset({hexes[0]}), frozenset(hexes[1:])),
    )
    epoch = time.time()
    async with asyncio.timeout(15):
        nodes = []
        for ident in ids:
            sched = FaultSchedule(seed=1, rules=(dataclasses.replace(rule),), epoch_unix_s=epoch)
            nodes.append(await nets.make(ident=ident, faults=sched))
        (a, ha), (b, hb), (c, hc) = nodes
        await a.connect(addr(b))
        await b.connect(addr(c))
        await a.connect(addr(c))
        await wait_for(lambda: all(len(n.peers()) == 2 for n, _ in nodes))
        await asyncio.sleep(max(0.0, epoch + 1.1 - time.time()))
        b.broadcast_consensus(vote(1))
        a.broadcast_consensus(vote(2))
        await wait_for(lambda: [m.vote.height for _, m in hc.consensus] == [1])
        await asyncio.sleep(0.2)
        assert ha.consensus == [] and hb.consensus == []
        await asyncio.sleep(max(0.0, epoch + 2.1 - time.time()))
        b.broadcast_consensus(vote(3))
        await wait_for(lambda: [m.vote.height for _, m in ha.consensus] == [3])
        assert all(len(n.peers()) == 2 for n, _ in nodes)
