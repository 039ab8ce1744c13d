"""Helpers for the peer-to-peer tests: real PeerNetworks on 127.0.0.1, a recording handler."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from timecoin._proto.consensus.v1 import consensus_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair
from timecoin.p2p import MemoryStore, NodeIdentity, P2PConfig, PeerInfo, PeerNetwork

CHAIN = "timecoin-p2p-test"
GENESIS = sha256(b"genesis")
RULES = sha256(b"rules")


def make_block(height: int, *, chain: str = CHAIN, salt: bytes = b"") -> tuple[bytes, bytes]:
    """(block bytes, commit bytes) at *height* whose commit names the block's hash."""
    header = types_pb2.BlockHeader(version=1, chain_id=chain, height=height).SerializeToString()
    header += (
        salt and types_pb2.BlockHeader(time_ms=int.from_bytes(salt[:4], "big")).SerializeToString()
    )
    block = types_pb2.Block(header_bytes=header)
    commit = types_pb2.Commit(height=height, round=0, block_hash=sha256(header))
    return block.SerializeToString(), commit.SerializeToString()


class Handler:
    """Records what the network delivers; serves a synthetic chain of *height* blocks."""

    def __init__(self, height: int = 0) -> None:
        self.height = height
        self.consensus: list[tuple[bytes, consensus_pb2.ConsensusMessage]] = []
        self.txs: list[tuple[bytes, types_pb2.Transaction]] = []
        self.evidence: list[tuple[bytes, types_pb2.Evidence]] = []
        self.blocks = {h: make_block(h) for h in range(1, height + 1)}
        self.served: list[tuple[int, int]] = []
        self.consensus_error: Exception | None = None
        self.changed = asyncio.Event()
        self.slow_s = 0.0

    async def on_consensus(self, peer: PeerInfo, msg: consensus_pb2.ConsensusMessage) -> None:
        if self.consensus_error is not None:
            raise self.consensus_error
        self.consensus.append((peer.node_id, msg))
        self.changed.set()

    async def on_transactions(self, peer: PeerInfo, txs: list[types_pb2.Transaction]) -> None:
        self.txs.extend((peer.node_id, t) for t in txs)
        self.changed.set()

    async def on_evidence(self, peer: PeerInfo, ev: types_pb2.Evidence) -> None:
        self.evidence.append((peer.node_id, ev))
        self.changed.set()

    def local_status(self) -> tuple[int, bytes]:
        return self.height, sha256(self.height.to_bytes(8, "big"))

    async def get_blocks(self, from_height: int, count: int) -> list[tuple[bytes, bytes]]:
        self.served.append((from_height, count))
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        out = []
        for h in range(from_height, from_height + count):
            if h not in self.blocks:
                break
            out.append(self.blocks[h])
        return out


async def wait_for(cond: Callable[[], Any], limit_s: float = 5.0) -> Any:
    """Poll *cond* until truthy (bounded)."""
    async with asyncio.timeout(limit_s):
        while True:
            v = cond()
            if v:
                return v
            await asyncio.sleep(0.02)


def test_config(**kw: Any) -> P2PConfig:
    base = P2PConfig(
        listen="127.0.0.1:0",
        allow_local_addresses=True,
        ping_interval_s=0.5,
        ping_timeout_s=5.0,
        reconnect_base_s=0.05,
        reconnect_max_s=0.5,
        handshake_timeout_s=2.0,
        dial_timeout_s=2.0,
        sync_request_timeout_s=3.0,
    )
    return dataclasses.replace(base, **kw)


def identity(
    key: KeyPair | None = None,
    *,
    chain: str = CHAIN,
    genesis: bytes = GENESIS,
    rules: bytes = RULES,
    plugins: tuple[tuple[str, str], ...] = (("timecoin-default", "1.0"),),
) -> NodeIdentity:
    return NodeIdentity(
        chain_id=chain,
        genesis_hash=genesis,
        rules_fingerprint=rules,
        key=key or KeyPair.generate(),
        rules_plugins=plugins,
    )


class Nets:
    """Factory that starts PeerNetworks and stops them all at the end."""

    def __init__(self) -> None:
        self.started: list[PeerNetwork] = []

    async def make(
        self,
        *,
        handler: Handler | None = None,
        ident: NodeIdentity | None = None,
        store: MemoryStore | None = None,
        **cfg: Any,
    ) -> tuple[PeerNetwork, Handler]:
        h = handler or Handler()
        net = PeerNetwork(test_config(**cfg), ident or identity(), h, address_store=store)
        await net.start()
        self.started.append(net)
        return net, h


def addr(net: PeerNetwork) -> str:
    return f"127.0.0.1:{net.port}"


class RawPeer:
    """A hand-driven Gossip client for handshakes a PeerNetwork would never send."""

    def __init__(self, address: str) -> None:
        import grpc.aio

        from timecoin.p2p.network import GOSSIP_METHOD

        self.channel = grpc.aio.insecure_channel(address)
        self.call = self.channel.stream_stream(GOSSIP_METHOD)()

    async def send(self, msg: Any) -> None:
        from timecoin.p2p.peer import encode_gossip

        await self.call.write(encode_gossip(msg))

    async def recv(self) -> Any:
        import grpc.aio

        from timecoin._proto.p2p.v1 import p2p_pb2

        data = await self.call.read()
        if data is grpc.aio.EOF:
            return None
        return p2p_pb2.GossipRequest.FromString(data).message

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()

    async def handshake(self, ident: Any) -> Any:
        """Run a genuine handshake as *ident*; return the answer (HelloAck or Disconnect)."""
        from timecoin._proto.p2p.v1 import p2p_pb2
        from timecoin.core.signing import hello_sign_digest
        from timecoin.p2p.handshake import make_hello

        await self.send(p2p_pb2.GossipMessage(hello=make_hello(ident, "127.0.0.1:1", 0)))
        theirs = (await self.recv()).hello
        sig = ident.key.sign(hello_sign_digest(ident.chain_id, theirs.challenge))
        await self.send(p2p_pb2.GossipMessage(hello_ack=p2p_pb2.HelloAck(signature=sig)))
        return await self.recv()
