"""One authenticated peer connection: identity, bounded queues, rate limits, score.

Frames travel as raw bytes: the network encodes and decodes them itself so it
can check a frame's length before protobuf sees it. ``GossipRequest`` and
``GossipResponse`` (and the two Exchange wrappers) have the same wire form, so
one encoder serves both directions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

from timecoin._proto.consensus.v1 import consensus_pb2
from timecoin._proto.p2p.v1 import p2p_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.p2p.config import P2PConfig
from timecoin.p2p.limits import SeenCache, TokenBucket

INBOUND = "inbound"
OUTBOUND = "outbound"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What the node sees of a connected peer."""

    node_id: bytes
    """20-byte node id (hash of the node public key), proven in the handshake."""
    address: str
    """host:port we dialed (outbound) or the remote socket address (inbound)."""
    listen_address: str
    """The address the peer advertises for dialing (may be empty)."""
    direction: str
    """``inbound`` or ``outbound``."""
    height: int
    """The peer's committed height as it last reported it."""
    pubkey: bytes = b""


class P2PHandler(Protocol):
    """What the node gives the network: message sinks and chain access.

    Optional extra methods, called when present: ``on_peer_connected(peer)``
    and ``on_peer_disconnected(peer)`` (e.g. to send a RoundStep or a
    VoteSetRequest to a new peer), and ``on_traced_transactions(peer, txs,
    trace)`` which replaces ``on_transactions`` and also gets the batch's
    ``TraceContext`` (or None).
    """

    async def on_consensus(self, peer: PeerInfo, msg: consensus_pb2.ConsensusMessage) -> None:
        """Take a consensus message from *peer*; a TimecoinError counts as misbehaviour."""

    async def on_transactions(self, peer: PeerInfo, txs: list[types_pb2.Transaction]) -> None:
        """Take new (not seen before) gossiped transactions; errors count as misbehaviour."""

    async def on_evidence(self, peer: PeerInfo, ev: types_pb2.Evidence) -> None:
        """Evidence gossiped on the Gossip stream."""

    def local_status(self) -> tuple[int, bytes]:
        """Return (committed height, tip hash) for Hello, Ping and GetPeerStatus."""

    async def get_blocks(self, from_height: int, count: int) -> list[tuple[bytes, bytes]]:
        """Up to *count* (block bytes, commit bytes) from *from_height*; fewer at the tip."""


class Stream(Protocol):
    """The read/write half both ``grpc.aio`` calls and server contexts offer."""

    async def read(self) -> Any:
        """Return the next frame or ``grpc.aio.EOF``."""

    async def write(self, message: Any) -> None:
        """Send one frame."""


def encode_gossip(msg: p2p_pb2.GossipMessage) -> bytes:
    """Encode a Gossip frame (valid as GossipRequest and as GossipResponse)."""
    return p2p_pb2.GossipRequest(message=msg).SerializeToString()


def encode_consensus(msg: consensus_pb2.ConsensusMessage) -> bytes:
    """Encode an Exchange frame (valid as ExchangeRequest and as ExchangeResponse)."""
    return consensus_pb2.ExchangeRequest(message=msg).SerializeToString()


class Peer:
    """State of one authenticated connection, owned by ``PeerNetwork``."""

    def __init__(
        self,
        *,
        cfg: P2PConfig,
        node_id: bytes,
        pubkey: bytes,
        direction: str,
        address: str,
        ip: str,
        listen_address: str,
        height: int,
        session_in: bytes,
        session_out: bytes,
        dialer_id: bytes,
    ) -> None:
        self.node_id = node_id
        self.pubkey = pubkey
        self.direction = direction
        self.address = address
        self.ip = ip
        self.listen_address = listen_address
        self.height = height
        self.session_in = session_in
        """Token we issued: the peer's Exchange/GetBlocks calls to us carry it."""
        self.session_out = session_out
        """Token the peer issued: our calls to its listener carry it."""
        self.dialer_id = dialer_id
        """Node id of the side that dialed this connection (duplicate tie-break)."""
        self.score = 0
        self.last_recv = time.monotonic()
        self.close_reason: p2p_pb2.Disconnect | None = None
        """The Disconnect we send when we end the connection."""
        self.remote_reason = ""
        """Why the peer said it disconnected us (from its Disconnect)."""
        self.closed = asyncio.Event()
        self.finished = asyncio.Event()
        """Set when the connection's tasks are done and it is unregistered."""
        self.exchange_attached = False
        self.exchange_ready = asyncio.Event()
        self.control_q: asyncio.Queue[bytes] = asyncio.Queue(cfg.control_queue)
        self.tx_q: asyncio.Queue[bytes] = asyncio.Queue(cfg.gossip_queue)
        self.consensus_q: asyncio.Queue[bytes] = asyncio.Queue(cfg.consensus_queue)
        self.gossip_wakeup = asyncio.Event()
        clock = time.monotonic
        self.tx_bucket = TokenBucket(cfg.tx_rate.rate_per_s, cfg.tx_rate.burst, clock)
        self.consensus_bucket = TokenBucket(
            cfg.consensus_rate.rate_per_s, cfg.consensus_rate.burst, clock
        )
        self.control_bucket = TokenBucket(
            cfg.control_rate.rate_per_s, cfg.control_rate.burst, clock
        )
        self.blocks_bucket = TokenBucket(cfg.blocks_rate.rate_per_s, cfg.blocks_rate.burst, clock)
        self.block_requests = asyncio.Semaphore(cfg.max_concurrent_block_requests)
        self.known_txs = SeenCache(10_000)
        """Transaction ids this peer sent us or we sent it: never sent to it again."""
        self.dropped_txs = 0
        self.sync_in_flight = 0

    def info(self) -> PeerInfo:
        """Snapshot the peer for the node."""
        return PeerInfo(
            node_id=self.node_id,
            address=self.address,
            listen_address=self.listen_address,
            direction=self.direction,
            height=self.height,
            pubkey=self.pubkey,
        )

    def close(self, reason: int, message: str) -> None:
        """Ask the connection to end, sending a Disconnect with *reason* first."""
        if self.close_reason is None:
            self.close_reason = p2p_pb2.Disconnect(reason=reason, message=message[:256])  # type: ignore[arg-type]
        self.closed.set()

    def enqueue_control(self, frame: bytes) -> bool:
        """Queue a control frame (ping, pong, PEX, evidence); False if the queue is full."""
        try:
            self.control_q.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        self.gossip_wakeup.set()
        return True

    def enqueue_txs(self, frame: bytes) -> bool:
        """Queue a transaction batch; when full it is dropped (tx gossip is best effort)."""
        try:
            self.tx_q.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped_txs += 1
            return False
        self.gossip_wakeup.set()
        return True

    def enqueue_consensus(self, frame: bytes) -> bool:
        """Queue a consensus frame; False (and the caller disconnects) if the peer is stuck."""
        try:
            self.consensus_q.put_nowait(frame)
        except asyncio.QueueFull:
            return False
        return True

    def next_gossip_frame(self) -> bytes | None:
        """Control frames first, then transaction batches."""
        if not self.control_q.empty():
            return self.control_q.get_nowait()
        if not self.tx_q.empty():
            return self.tx_q.get_nowait()
        return None
