"""``PeerNetwork``: the peer listener, dialing, handshake, gossip and block sync.

Topology of one connection (docs/p2p.md has the full protocol):

* the dialer opens ``P2PService/Gossip``; both sides send ``Hello``, check the
  other's, answer with ``HelloAck`` (signature over the other's challenge plus
  a session token valid on the sender's listener);
* the dialer then opens ``ConsensusService/Exchange`` with the token in the
  ``x-timecoin-session`` metadata; consensus messages flow both ways on it;
* ``GetBlocks``/``GetPeerStatus`` need a token too; the listener side can
  call its inbound peers by dialing their advertised listen address.

Every peer is served by its own tasks with bounded queues, so a flood from
one peer only costs that peer's budget. Frames are raw bytes: lengths are
checked before protobuf decodes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio
from google.protobuf.message import DecodeError as PbDecodeError

from timecoin._proto.consensus.v1 import consensus_pb2
from timecoin._proto.p2p.v1 import p2p_pb2
from timecoin._proto.types.v1 import types_pb2
from timecoin.core.errors import NotFound, Reason, TimecoinError
from timecoin.core.hashing import sha256
from timecoin.node.logs import event
from timecoin.p2p import handshake as hs
from timecoin.p2p.addrbook import (
    AddressBook,
    AddressBookStore,
    is_loopback_host,
    is_routable_address,
    split_host_port,
)
from timecoin.p2p.config import P2PConfig
from timecoin.p2p.errors import Misbehaviour, PeerRefused
from timecoin.p2p.faults import DROP, FaultSchedule
from timecoin.p2p.limits import BanList, SeenCache
from timecoin.p2p.peer import (
    INBOUND,
    OUTBOUND,
    P2PHandler,
    Peer,
    PeerInfo,
    encode_consensus,
    encode_gossip,
)

log = logging.getLogger("timecoin.p2p")

SESSION_HEADER = "x-timecoin-session"
GOSSIP_METHOD = "/timecoin.p2p.v1.P2PService/Gossip"
GET_BLOCKS_METHOD = "/timecoin.p2p.v1.P2PService/GetBlocks"
STATUS_METHOD = "/timecoin.p2p.v1.P2PService/GetPeerStatus"
EXCHANGE_METHOD = "/timecoin.consensus.v1.ConsensusService/Exchange"

# Handler errors that are normal in a gossiping network (races, old rounds)
# and therefore cost the sender nothing.
BENIGN_REASONS = frozenset(
    {
        Reason.STALE_HEIGHT,
        Reason.FUTURE_HEIGHT,
        Reason.ALREADY_KNOWN,
        Reason.DUPLICATE_VOTE,
        Reason.MEMPOOL_FULL,
        Reason.FEE_TOO_LOW,
        Reason.DOUBLE_SPEND,
        Reason.MISSING_INPUT,
        Reason.NOT_FOUND,
        Reason.RATE_LIMITED,
        Reason.STORAGE,
        Reason.INTERNAL,
    }
)
SCORE_MALFORMED = 50
SCORE_RATE = 5
SCORE_INVALID = 20


class FetchedBlock(NamedTuple):
    """One block from ``fetch_blocks`` with its commit and the peer that sent it."""

    height: int
    block: bytes
    commit: bytes
    peer_id: bytes


def _reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return str(code)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _peer_ip(context_peer: str) -> tuple[str, str]:
    """``ipv4:1.2.3.4:5`` / ``ipv6:[::1]:5`` -> (ip, host:port)."""
    kind, _, rest = context_peer.partition(":")
    if kind == "ipv6":
        host, _, port = rest.rpartition(":")
        ip = host.strip("[]")
        return ip, f"[{ip}]:{port}"
    if kind == "ipv4":
        host, _, port = rest.rpartition(":")
        return host, f"{host}:{port}"
    return rest, rest


def _ld(field_no: int, payload: bytes) -> bytes:
    """Protobuf length-delimited field."""
    n = len(payload)
    out = bytearray([(field_no << 3) | 2])
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            break
    return bytes(out) + payload


def _split_block_response(data: bytes) -> tuple[bytes, bytes]:
    """Exact (block bytes, commit bytes) of a GetBlocksResponse, without re-encoding.

    Strict: only fields 1 and 2, length-delimited, each exactly once.
    """
    fields: dict[int, bytes] = {}
    i, n = 0, len(data)
    while i < n:
        key, i = _varint(data, i)
        if key & 7 != 2 or (key >> 3) not in (1, 2) or (key >> 3) in fields:
            raise Misbehaviour("unexpected field in GetBlocksResponse", score=SCORE_MALFORMED)
        ln, i = _varint(data, i)
        if i + ln > n:
            raise Misbehaviour("truncated GetBlocksResponse", score=SCORE_MALFORMED)
        fields[key >> 3] = data[i : i + ln]
        i += ln
    if 1 not in fields or 2 not in fields:
        raise Misbehaviour("GetBlocksResponse without block or commit", score=SCORE_MALFORMED)
    return fields[1], fields[2]


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(data) or shift > 63:
            raise Misbehaviour("bad varint", score=SCORE_MALFORMED)
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


class PeerNetwork:
    """Listens for and dials peers; gossips; serves and fetches blocks.

    Construct with the node's identity and a ``P2PHandler``; ``await start()``
    binds the listener (``port`` tells which) and starts dialing seeds and
    persistent peers; ``await stop()`` closes everything.
    """

    def __init__(
        self,
        cfg: P2PConfig,
        identity: hs.NodeIdentity,
        handler: P2PHandler,
        *,
        address_store: AddressBookStore | None = None,
        server_interceptors: Sequence[Any] = (),
        client_interceptors: Sequence[Any] = (),
    ) -> None:
        self.cfg = cfg
        self.server_interceptors = tuple(server_interceptors)
        """grpc.aio interceptors on the peer listener (e.g. tracing every call into the node)."""
        self.client_interceptors = tuple(client_interceptors)
        """grpc.aio interceptors on every channel to a peer (e.g. tracing calls out)."""
        self.identity = identity
        self.node_id = identity.node_id
        self.handler = handler
        self.book = AddressBook(address_store, cfg.address_book_size)
        self.bans = BanList(time.monotonic)
        self.seen_txs = SeenCache(cfg.seen_tx_cache)
        self._peers: dict[bytes, Peer] = {}
        self._sessions: dict[bytes, Peer] = {}
        # Tokens sent in our HelloAck whose handshake has not finished: the
        # dialer may open Exchange before we have read its HelloAck.
        self._pending_sessions: dict[bytes, asyncio.Future[Peer | None]] = {}
        self._pending_inbound = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: grpc.aio.Server | None = None
        self._channels: dict[bytes, grpc.aio.Channel] = {}
        self._addr_node: dict[str, bytes] = {}
        self._dialing: set[str] = set()
        self._started_at = time.monotonic()
        self._rng = random.Random()
        self.port = 0
        self._stopping = False
        self._peers_changed = asyncio.Event()
        self._faults = cfg.faults if cfg.faults is not None else FaultSchedule.from_env()
        if self._faults is not None:
            log.warning("P2P fault injection enabled: %d rules", len(self._faults.rules))

    # ------------------------------------------------------------------ lifecycle

    def _options(self) -> list[tuple[str, Any]]:
        return [
            ("grpc.max_send_message_length", self.cfg.max_frame_bytes),
            ("grpc.max_receive_message_length", self.cfg.max_frame_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            *self.cfg.extra_grpc_options,
        ]

    async def start(self) -> None:
        """Bind the listener, then dial seeds and persistent peers in the background."""
        self._started_at = time.monotonic()
        server = grpc.aio.server(
            options=self._options(), interceptors=list(self.server_interceptors) or None
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "timecoin.p2p.v1.P2PService",
                    {
                        "Gossip": grpc.stream_stream_rpc_method_handler(self._serve_gossip),
                        "GetBlocks": grpc.unary_stream_rpc_method_handler(self._serve_get_blocks),
                        "GetPeerStatus": grpc.unary_unary_rpc_method_handler(self._serve_status),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    "timecoin.consensus.v1.ConsensusService",
                    {"Exchange": grpc.stream_stream_rpc_method_handler(self._serve_exchange)},
                ),
            )
        )
        if self.cfg.tls_cert_file is not None and self.cfg.tls_key_file is not None:
            creds = grpc.ssl_server_credentials(
                [(self.cfg.tls_key_file.read_bytes(), self.cfg.tls_cert_file.read_bytes())]
            )
            self.port = server.add_secure_port(self.cfg.listen, creds)
        else:
            self.port = server.add_insecure_port(self.cfg.listen)
        await server.start()
        self._server = server
        for addr in self.cfg.persistent_peers:
            self._spawn(self._dial_loop(addr, persistent=True))
        for addr in self.cfg.seeds:
            self._spawn(self._dial_loop(addr, persistent=False))
        self._spawn(self._maintain())
        log.info("P2P listening on %s", self.advertised_address)

    async def stop(self, grace: float = 1.0) -> None:
        """Disconnect every peer, stop the listener, persist the address book."""
        self._stopping = True
        for p in list(self._peers.values()):
            p.close(Reason.UNSPECIFIED, "shutting down")
        # Peers get a moment to send their Disconnect before the tasks go.
        waits = [asyncio.ensure_future(p.finished.wait()) for p in self._peers.values()]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for w in waits:
                w.cancel()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace)
        for ch in list(self._channels.values()):
            await ch.close()
        self._channels.clear()
        self.book.save()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def advertised_address(self) -> str:
        """host:port peers should dial (external address or the bound listener)."""
        if self.cfg.external_address:
            return self.cfg.external_address
        host, _ = split_host_port(self.cfg.listen, allow_port_zero=True)
        return f"{host}:{self.port}" if ":" not in host else f"[{host}]:{self.port}"

    # ------------------------------------------------------------------ queries

    def peers(self) -> list[PeerInfo]:
        """List connected, authenticated peers."""
        return [p.info() for p in self._peers.values() if not p.closed.is_set()]

    def peer(self, node_id: bytes) -> PeerInfo | None:
        """One connected peer or None."""
        p = self._peers.get(node_id)
        return p.info() if p is not None else None

    async def wait_for_peers(self, n: int) -> None:
        """Return once at least *n* peers are connected (wrap in ``asyncio.timeout``)."""
        while len(self._peers) < n:
            self._peers_changed.clear()
            await self._peers_changed.wait()

    def stats(self) -> dict[str, int]:
        """Counters for metrics: peers by direction, bans, dropped tx batches, book size."""
        return {
            "peers_inbound": self._count(INBOUND),
            "peers_outbound": self._count(OUTBOUND),
            "bans": len(self.bans.entries()),
            "dropped_tx_batches": sum(p.dropped_txs for p in self._peers.values()),
            "address_book": len(self.book.entries),
            "seen_txs": len(self.seen_txs),
        }

    def update_peer_height(self, node_id: bytes, height: int) -> None:
        """Record that *node_id* has committed *height* (e.g. from its RoundStep)."""
        p = self._peers.get(node_id)
        if p is not None and height > p.height:
            p.height = height

    def ban(
        self, node_id: bytes, *, ip: str | None = None, duration_s: float | None = None
    ) -> None:
        """Ban a node id (and an IP) and disconnect it."""
        d = self.cfg.ban_duration_s if duration_s is None else duration_s
        self.bans.ban(node_id, d)
        p = self._peers.get(node_id)
        if ip is None and p is not None:
            ip = p.ip
        if ip is not None and (self.cfg.ban_loopback_ips or not is_loopback_host(ip)):
            self.bans.ban(ip, d)
        self.book.remove(node_id)
        if p is not None:
            p.close(Reason.RATE_LIMITED, "banned")

    def unban(self, key: bytes | str) -> bool:
        """Lift a ban on a node id (bytes) or an IP (str); True if it was banned."""
        return self.bans.unban(key)

    def is_banned(self, key: bytes | str) -> bool:
        """Tell whether a node id or IP is banned now."""
        return self.bans.is_banned(key)

    def report_misbehaviour(
        self, peer_id: bytes, reason: Reason, message: str = "", *, score: int | None = None
    ) -> None:
        """Score *peer_id* for something invalid the node found (e.g. a forged commit).

        The default score reaches the ban threshold: proven misbehaviour bans.
        """
        p = self._peers.get(peer_id)
        s = self.cfg.ban_threshold if score is None else score
        if p is None:
            if s >= self.cfg.ban_threshold:
                self.bans.ban(peer_id, self.cfg.ban_duration_s)
            return
        self._punish(p, reason, s, message or reason.name)

    # ------------------------------------------------------------------ outbound api

    def broadcast_consensus(
        self, msg: consensus_pb2.ConsensusMessage, *, exclude: Iterable[bytes] | None = None
    ) -> int:
        """Queue *msg* to every authenticated peer (but *exclude*); returns how many."""
        frame = encode_consensus(msg)
        skip = set(exclude or ())
        n = 0
        for p in list(self._peers.values()):
            if p.node_id in skip or p.closed.is_set():
                continue
            if self._enqueue_consensus(p, frame):
                n += 1
        return n

    def send_consensus(self, peer_id: bytes, msg: consensus_pb2.ConsensusMessage) -> bool:
        """Queue *msg* to one peer; False if it is not connected."""
        p = self._peers.get(peer_id)
        if p is None or p.closed.is_set():
            return False
        return self._enqueue_consensus(p, encode_consensus(msg))

    def _enqueue_consensus(self, p: Peer, frame: bytes) -> bool:
        if p.enqueue_consensus(frame):
            return True
        # Consensus is never dropped silently: a peer this far behind is cut.
        log.warning("Peer consensus queue full; disconnecting peer=%s", p.node_id.hex())
        p.close(Reason.RATE_LIMITED, "consensus queue overflow")
        return False

    def broadcast_transactions(
        self,
        txs: list[types_pb2.Transaction],
        *,
        exclude: Iterable[bytes] | None = None,
        trace: types_pb2.TraceContext | None = None,
    ) -> int:
        """Gossip *txs* to peers that neither sent nor got them; returns peers queued to.

        Call it for transactions the mempool accepted (local or from a peer,
        with ``exclude=[sender]``); full per-peer queues drop the batch.
        """
        if not txs:
            return 0
        ids = [sha256(t.body_bytes) for t in txs]
        for i in ids:
            self.seen_txs.add(i)
        skip = set(exclude or ())
        n = 0
        for p in list(self._peers.values()):
            if p.node_id in skip or p.closed.is_set():
                continue
            todo = [(t, i) for t, i in zip(txs, ids, strict=True) if i not in p.known_txs]
            if not todo:
                continue
            for start in range(0, len(todo), self.cfg.max_txs_per_batch):
                batch = todo[start : start + self.cfg.max_txs_per_batch]
                gm = p2p_pb2.GossipMessage(
                    transactions=p2p_pb2.TransactionGossip(transactions=[t for t, _ in batch])
                )
                if trace is not None:
                    gm.trace.CopyFrom(trace)
                if p.enqueue_txs(encode_gossip(gm)):
                    for _, i in batch:
                        p.known_txs.add(i)
            n += 1
        return n

    def broadcast_evidence(
        self, ev: types_pb2.Evidence, *, exclude: Iterable[bytes] | None = None
    ) -> int:
        """Gossip evidence on the Gossip stream to every peer (but *exclude*)."""
        frame = encode_gossip(p2p_pb2.GossipMessage(evidence=ev))
        skip = set(exclude or ())
        n = 0
        for p in list(self._peers.values()):
            if p.node_id not in skip and not p.closed.is_set() and p.enqueue_control(frame):
                n += 1
        return n

    # ------------------------------------------------------------------ misbehaviour

    def _punish(self, p: Peer, reason: Reason, score: int, message: str) -> None:
        p.score += score
        event(
            log,
            "Peer misbehaved",
            logging.WARNING,
            peer=p.address,
            node_id=p.node_id.hex(),
            reason=reason.name,
            score=p.score,
            detail=message[:200],
        )
        if p.score >= self.cfg.ban_threshold:
            event(
                log,
                "Peer banned",
                logging.WARNING,
                peer=p.address,
                node_id=p.node_id.hex(),
                reason=reason.name,
                seconds=self.cfg.ban_duration_s,
            )
            self.bans.ban(p.node_id, self.cfg.ban_duration_s)
            if self.cfg.ban_loopback_ips or not is_loopback_host(p.ip):
                self.bans.ban(p.ip, self.cfg.ban_duration_s)
            self.book.remove(p.node_id)
            p.close(reason, f"banned: {message[:200]}")

    # ------------------------------------------------------------------ faults

    def _fault_elapsed(self, f: FaultSchedule) -> float:
        if f.epoch_unix_s is not None:
            return time.time() - f.epoch_unix_s
        return time.monotonic() - self._started_at

    def _fault_delay(self, peer_id: bytes) -> float:
        f = self._faults
        if f is None:
            return 0.0
        return f.decide(peer_id, self._fault_elapsed(f), self.node_id)

    def _partitioned(self, peer_id: bytes) -> bool:
        f = self._faults
        return f is not None and f.is_partitioned(peer_id, self._fault_elapsed(f), self.node_id)

    # ------------------------------------------------------------------ handshake

    async def _read_frame(self, stream: Any, cap: int, deadline_s: float | None) -> bytes | None:
        async with asyncio.timeout(deadline_s):
            data = await stream.read()
        if data is grpc.aio.EOF or data is None:
            return None
        if len(data) > cap:
            raise Misbehaviour(
                f"frame of {len(data)} bytes > {cap}",
                reason=Reason.OVERSIZED,
                score=self.cfg.ban_threshold,
            )
        return bytes(data)

    async def _handshake(self, stream: Any, *, direction: str, address: str, ip: str) -> Peer:
        """Run Hello/HelloAck on *stream*; return a registered Peer or raise PeerRefused."""
        height, _tip = self.handler.local_status()
        ours = hs.make_hello(self.identity, self.advertised_address, height)
        await stream.write(encode_gossip(p2p_pb2.GossipMessage(hello=ours)))
        timeout = self.cfg.handshake_timeout_s
        small = self.cfg.max_small_message_bytes
        try:
            data = await self._read_frame(stream, small, timeout)
        except Misbehaviour as exc:
            raise PeerRefused(exc.message, reason=Reason.OVERSIZED) from None
        theirs = self._decode_gossip(data, expect="hello").hello
        node_id = hs.check_hello(self.identity, theirs)
        if direction == OUTBOUND:
            # A hint for the dial loop (not yet authenticated): do not redial an
            # address whose node is already connected the other way round.
            self._addr_node[address] = node_id
        if self.bans.is_banned(node_id):
            raise PeerRefused("node id is banned", reason=Reason.RATE_LIMITED)
        if self._partitioned(node_id):
            raise PeerRefused("partitioned (fault injection)", reason=Reason.UNSPECIFIED)
        dialer_id = self.node_id if direction == OUTBOUND else node_id
        self._check_duplicate(node_id, dialer_id)
        if direction == INBOUND and self._count(INBOUND) >= self.cfg.max_inbound:
            raise PeerRefused("too many inbound peers", reason=Reason.RATE_LIMITED)
        token = os.urandom(hs.SESSION_TOKEN_LEN)
        pending: asyncio.Future[Peer | None] = asyncio.get_running_loop().create_future()
        self._pending_sessions[token] = pending
        try:
            peer = await self._finish_handshake(
                stream, theirs, ours, token, node_id, dialer_id, direction, address, ip
            )
        except BaseException:
            pending.set_result(None)
            raise
        finally:
            self._pending_sessions.pop(token, None)
        pending.set_result(peer)
        return peer

    async def _finish_handshake(
        self,
        stream: Any,
        theirs: p2p_pb2.Hello,
        ours: p2p_pb2.Hello,
        token: bytes,
        node_id: bytes,
        dialer_id: bytes,
        direction: str,
        address: str,
        ip: str,
    ) -> Peer:
        timeout = self.cfg.handshake_timeout_s
        small = self.cfg.max_small_message_bytes
        ack = p2p_pb2.HelloAck(
            signature=hs.sign_challenge(self.identity, theirs.challenge), session_token=token
        )
        try:
            await stream.write(encode_gossip(p2p_pb2.GossipMessage(hello_ack=ack)))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError):
            # The other side refused and ended the stream while we answered:
            # its Disconnect (already received) says why.
            pass
        data = await self._read_frame(stream, small, timeout)
        their_ack = self._decode_gossip(data, expect="hello_ack").hello_ack
        hs.verify_ack(self.identity, theirs, ours.challenge, their_ack)
        if len(their_ack.session_token) not in (0, hs.SESSION_TOKEN_LEN):
            raise PeerRefused("session token must be 32 bytes", reason=Reason.MALFORMED)
        listen = theirs.listen_address
        if len(listen) > self.cfg.max_address_len:
            listen = ""
        # Authenticated: resolve a duplicate by the dialer tie-break, then register.
        old = self._peers.get(node_id)
        if old is not None:
            if not self._new_wins(old, dialer_id):
                raise PeerRefused(
                    "duplicate connection to this node id", reason=Reason.ALREADY_KNOWN
                )
            old.close(Reason.ALREADY_KNOWN, "duplicate connection replaced")
            self._forget(old)
        if direction == INBOUND and self._count(INBOUND) >= self.cfg.max_inbound:
            raise PeerRefused("too many inbound peers", reason=Reason.RATE_LIMITED)
        peer = Peer(
            cfg=self.cfg,
            node_id=node_id,
            pubkey=bytes(theirs.node_pubkey),
            direction=direction,
            address=address,
            ip=ip,
            listen_address=listen,
            height=theirs.height,
            session_in=token,
            session_out=bytes(their_ack.session_token),
            dialer_id=dialer_id,
        )
        self._peers[node_id] = peer
        self._sessions[token] = peer
        self._peers_changed.set()
        return peer

    def _new_wins(self, old: Peer, new_dialer: bytes) -> bool:
        """Decide whether a new connection to an already connected node replaces the old one.

        Both sides keep the connection dialed by the lower node id. A second
        connection from the same dialer is refused, unless the old one has
        gone quiet (its process restarted or the path broke before our ping
        timeout noticed): the dialer only redials when it lost its side.
        """
        if old.dialer_id == new_dialer:
            return time.monotonic() - old.last_recv > 2 * self.cfg.ping_interval_s
        return new_dialer < old.dialer_id

    def _check_duplicate(self, node_id: bytes, dialer_id: bytes) -> None:
        old = self._peers.get(node_id)
        if old is not None and not self._new_wins(old, dialer_id):
            raise PeerRefused("duplicate connection to this node id", reason=Reason.ALREADY_KNOWN)

    def _count(self, direction: str) -> int:
        return sum(1 for p in self._peers.values() if p.direction == direction)

    def _decode_gossip(
        self, data: bytes | None, *, expect: str | None = None
    ) -> p2p_pb2.GossipMessage:
        if data is None:
            raise PeerRefused("stream closed during handshake", reason=Reason.UNAUTHENTICATED)
        try:
            msg = p2p_pb2.GossipRequest.FromString(data).message
        except PbDecodeError:
            raise Misbehaviour("undecodable gossip frame", score=SCORE_MALFORMED) from None
        kind = msg.WhichOneof("kind")
        if expect is not None and kind != expect:
            if kind == "disconnect":
                d = msg.disconnect
                raise PeerRefused(
                    f"peer disconnected us: reason={_reason_name(d.reason)} {d.message[:200]}",
                    reason=Reason.UNAUTHENTICATED,
                )
            raise PeerRefused(f"expected {expect}, got {kind}", reason=Reason.MALFORMED)
        return msg

    async def _refuse(self, stream: Any, exc: PeerRefused, address: str, direction: str) -> None:
        # Duplicates are routine when peers dial each other; the rest is news.
        level = logging.INFO if exc.reason == Reason.ALREADY_KNOWN else logging.WARNING
        event(
            log,
            "Peer refused",
            level,
            peer=address,
            direction=direction,
            reason=exc.reason.name,
            detail=exc.message,
        )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await stream.write(
                    encode_gossip(
                        p2p_pb2.GossipMessage(
                            disconnect=p2p_pb2.Disconnect(
                                reason=int(exc.reason),  # type: ignore[arg-type]
                                message=exc.message[:256],
                            )
                        )
                    )
                )
                if direction == INBOUND:
                    # Keep the stream open until the dialer has read the
                    # Disconnect and hung up (a bounded drain): ending it at
                    # once would fail the dialer's in-flight HelloAck write and
                    # lose the reason.
                    for _ in range(4):
                        if await stream.read() is grpc.aio.EOF:
                            break

    # ------------------------------------------------------------------ connection run

    async def _run_peer(self, peer: Peer, gossip: Any, exchange_opener: Any = None) -> None:
        """Serve one authenticated peer until it closes; cleans up after itself."""
        event(
            log,
            "Peer connected",
            peer=peer.address,
            node_id=peer.node_id.hex(),
            direction=peer.direction,
            height=peer.height,
            listen=peer.listen_address or "-",
        )
        # A peer listening on 0.0.0.0 is recorded under the IP it came from.
        dialable = self._dialable(peer) if peer.listen_address else ""
        if dialable and is_routable_address(dialable, allow_local=self.cfg.allow_local_addresses):
            self.book.add(peer.node_id, dialable, _now_ms())
        cb = getattr(self.handler, "on_peer_connected", None)
        tasks = [
            asyncio.ensure_future(self._gossip_reader(peer, gossip)),
            asyncio.ensure_future(self._gossip_writer(peer, gossip)),
            asyncio.ensure_future(self._pinger(peer)),
        ]
        if exchange_opener is not None:
            tasks.append(asyncio.ensure_future(exchange_opener(peer)))
        closed = asyncio.ensure_future(peer.closed.wait())
        peer.enqueue_control(encode_gossip(p2p_pb2.GossipMessage(pex_request=p2p_pb2.PexRequest())))
        try:
            if cb is not None:
                try:
                    await cb(peer.info())
                except Exception:
                    log.exception("on_peer_connected failed peer=%s", peer.address)
            done, _ = await asyncio.wait([*tasks, closed], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not closed and not t.cancelled() and t.exception() is not None:
                    exc = t.exception()
                    if isinstance(exc, Misbehaviour):
                        self._punish(peer, exc.reason, exc.score, exc.message)
                    elif not isinstance(exc, (grpc.aio.AioRpcError, asyncio.CancelledError)):
                        # A bug in a handler must not pass silently as a disconnect.
                        log.warning("Peer task failed peer=%s", peer.address, exc_info=exc)
        finally:
            for t in [*tasks, closed]:
                t.cancel()
            await asyncio.gather(*tasks, closed, return_exceptions=True)
            if peer.close_reason is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(0.5):
                        await gossip.write(
                            encode_gossip(p2p_pb2.GossipMessage(disconnect=peer.close_reason))
                        )
            peer.closed.set()
            self._forget(peer)
            peer.finished.set()
            event(
                log,
                "Peer disconnected",
                peer=peer.address,
                node_id=peer.node_id.hex(),
                direction=peer.direction,
                reason=(
                    peer.close_reason.message
                    if peer.close_reason
                    else peer.remote_reason or "stream closed"
                ),
            )
            dcb = getattr(self.handler, "on_peer_disconnected", None)
            if dcb is not None:
                with contextlib.suppress(Exception):
                    await dcb(peer.info())

    def _forget(self, peer: Peer) -> None:
        if self._peers.get(peer.node_id) is peer:
            del self._peers[peer.node_id]
            self._peers_changed.set()
        self._sessions.pop(peer.session_in, None)
        ch = self._channels.pop(peer.session_out, None) if peer.direction == INBOUND else None
        if ch is not None:
            self._spawn(ch.close())

    def _dialable(self, peer: Peer) -> str:
        """Return the peer's listen address with an unspecified host replaced by its IP."""
        try:
            host, port = split_host_port(peer.listen_address)
        except ValueError:
            return peer.listen_address
        try:
            if ipaddress.ip_address(host).is_unspecified:
                return f"{peer.ip}:{port}" if ":" not in peer.ip else f"[{peer.ip}]:{port}"
        except ValueError:
            pass
        return peer.listen_address

    async def _gossip_writer(self, peer: Peer, stream: Any) -> None:
        while True:
            frame = peer.next_gossip_frame()
            if frame is None:
                peer.gossip_wakeup.clear()
                await peer.gossip_wakeup.wait()
                continue
            delay = self._fault_delay(peer.node_id)
            if delay == DROP:
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.write(frame)

    async def _consensus_writer(self, peer: Peer, stream: Any) -> None:
        while True:
            frame = await peer.consensus_q.get()
            delay = self._fault_delay(peer.node_id)
            if delay == DROP:
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.write(frame)

    async def _pinger(self, peer: Peer) -> None:
        nonce = 0
        while True:
            await asyncio.sleep(self.cfg.ping_interval_s)
            if time.monotonic() - peer.last_recv > self.cfg.ping_timeout_s:
                peer.close(Reason.UNSPECIFIED, "ping timeout")
                return
            nonce += 1
            height, _ = self.handler.local_status()
            peer.enqueue_control(
                encode_gossip(p2p_pb2.GossipMessage(ping=p2p_pb2.Ping(nonce=nonce, height=height)))
            )

    async def _gossip_reader(self, peer: Peer, stream: Any) -> None:
        cap = self.cfg.max_gossip_frame_bytes
        while True:
            data = await self._read_frame(stream, cap, None)
            if data is None:
                return
            peer.last_recv = time.monotonic()
            try:
                msg = self._decode_gossip(data)
                await self._on_gossip(peer, msg, len(data))
            except Misbehaviour as exc:
                self._punish(peer, exc.reason, exc.score, exc.message)
            except PeerRefused as exc:
                self._punish(peer, exc.reason, SCORE_MALFORMED, exc.message)
            if peer.closed.is_set():
                return

    async def _on_gossip(self, peer: Peer, msg: p2p_pb2.GossipMessage, size: int) -> None:
        kind = msg.WhichOneof("kind")
        small = self.cfg.max_small_message_bytes
        if kind == "transactions":
            if not peer.tx_bucket.take(max(1, len(msg.transactions.transactions))):
                raise Misbehaviour(
                    "transaction gossip over its rate", reason=Reason.RATE_LIMITED, score=SCORE_RATE
                )
            txs = msg.transactions.transactions
            if len(txs) > self.cfg.max_txs_per_batch:
                raise Misbehaviour(
                    f"{len(txs)} transactions in one batch",
                    reason=Reason.TOO_MANY_ITEMS,
                    score=SCORE_MALFORMED,
                )
            fresh: list[types_pb2.Transaction] = []
            for t in txs:
                txid = sha256(t.body_bytes)
                peer.known_txs.add(txid)
                if self.seen_txs.add(txid):
                    fresh.append(t)
            if fresh:
                traced = getattr(self.handler, "on_traced_transactions", None)
                try:
                    if traced is not None:
                        # Optional: the batch's TraceContext, so one trace follows a tx.
                        trace = msg.trace if msg.HasField("trace") else None
                        await traced(peer.info(), fresh, trace)
                    else:
                        await self.handler.on_transactions(peer.info(), fresh)
                except TimecoinError as exc:
                    if exc.reason not in BENIGN_REASONS:
                        raise Misbehaviour(
                            exc.message, reason=exc.reason, score=SCORE_INVALID
                        ) from None
            return
        if size > small:
            raise Misbehaviour(
                f"{kind} of {size} bytes", reason=Reason.OVERSIZED, score=self.cfg.ban_threshold
            )
        if not peer.control_bucket.take():
            raise Misbehaviour(
                f"{kind} over its rate", reason=Reason.RATE_LIMITED, score=SCORE_RATE
            )
        if kind == "ping":
            peer.height = max(peer.height, msg.ping.height)
            h, _ = self.handler.local_status()
            peer.enqueue_control(
                encode_gossip(
                    p2p_pb2.GossipMessage(pong=p2p_pb2.Pong(nonce=msg.ping.nonce, height=h))
                )
            )
        elif kind == "pong":
            peer.height = max(peer.height, msg.pong.height)
        elif kind == "pex_request":
            peer.enqueue_control(
                encode_gossip(p2p_pb2.GossipMessage(pex_addresses=self._pex_addresses(peer)))
            )
        elif kind == "pex_addresses":
            self._on_pex(peer, msg.pex_addresses)
        elif kind == "evidence":
            try:
                await self.handler.on_evidence(peer.info(), msg.evidence)
            except TimecoinError as exc:
                if exc.reason not in BENIGN_REASONS:
                    raise Misbehaviour(
                        exc.message, reason=exc.reason, score=SCORE_INVALID
                    ) from None
        elif kind == "disconnect":
            d = msg.disconnect
            peer.remote_reason = f"peer: {_reason_name(d.reason)} {d.message[:200]}"
            peer.closed.set()
        else:
            raise Misbehaviour(f"unexpected gossip message {kind}", score=SCORE_MALFORMED)

    def _pex_addresses(self, peer: Peer) -> p2p_pb2.PexAddresses:
        out = p2p_pb2.PexAddresses()
        now = _now_ms()
        seen: set[bytes] = {peer.node_id}
        for p in self._peers.values():
            if len(out.addresses) >= self.cfg.max_pex_addresses:
                break
            if p.node_id in seen or not p.listen_address:
                continue
            addr = self._dialable(p)
            if is_routable_address(addr, allow_local=self.cfg.allow_local_addresses):
                seen.add(p.node_id)
                out.addresses.add(node_id=p.node_id, address=addr, last_seen_ms=now)
        for nid, e in self.book.sample(self.cfg.max_pex_addresses * 2):
            if len(out.addresses) >= self.cfg.max_pex_addresses:
                break
            if nid not in seen:
                seen.add(nid)
                out.addresses.add(node_id=nid, address=e.address, last_seen_ms=e.last_seen_ms)
        return out

    def _on_pex(self, peer: Peer, msg: p2p_pb2.PexAddresses) -> None:
        if len(msg.addresses) > self.cfg.max_pex_addresses:
            raise Misbehaviour(
                f"{len(msg.addresses)} PEX addresses",
                reason=Reason.TOO_MANY_ITEMS,
                score=SCORE_MALFORMED,
            )
        now = _now_ms()
        for a in msg.addresses:
            if len(a.node_id) != 20 or a.node_id == self.node_id or self.bans.is_banned(a.node_id):
                continue
            if not is_routable_address(
                a.address,
                allow_local=self.cfg.allow_local_addresses,
                max_len=self.cfg.max_address_len,
            ):
                continue
            # A peer cannot claim addresses are fresher than now.
            self.book.add(bytes(a.node_id), a.address, min(a.last_seen_ms, now))
        self.book.save()

    # ------------------------------------------------------------------ consensus stream

    async def _exchange_loop(self, peer: Peer, stream: Any) -> None:
        """Read and write the consensus stream until either side of it ends."""
        tasks = [
            asyncio.ensure_future(self._consensus_reader(peer, stream)),
            asyncio.ensure_future(self._consensus_writer(peer, stream)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            # Retrieve every outcome: a closed stream is the normal way out.
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _consensus_reader(self, peer: Peer, stream: Any) -> None:
        cap = self.cfg.max_consensus_frame_bytes
        small = self.cfg.max_small_message_bytes
        while not peer.closed.is_set():
            try:
                data = await self._read_frame(stream, cap, None)
            except Misbehaviour as exc:
                self._punish(peer, exc.reason, exc.score, exc.message)
                return
            if data is None:
                return
            peer.last_recv = time.monotonic()
            try:
                try:
                    msg = consensus_pb2.ExchangeRequest.FromString(data).message
                except PbDecodeError:
                    raise Misbehaviour(
                        "undecodable consensus frame", score=SCORE_MALFORMED
                    ) from None
                kind = msg.WhichOneof("kind")
                if kind is None:
                    raise Misbehaviour("empty consensus message", score=SCORE_MALFORMED)
                if kind != "proposal" and len(data) > small:
                    raise Misbehaviour(
                        f"{kind} of {len(data)} bytes",
                        reason=Reason.OVERSIZED,
                        score=self.cfg.ban_threshold,
                    )
                if not peer.consensus_bucket.take():
                    raise Misbehaviour(
                        "consensus messages over their rate",
                        reason=Reason.RATE_LIMITED,
                        score=SCORE_RATE,
                    )
                if kind == "round_step" and msg.round_step.height > 0:
                    peer.height = max(peer.height, msg.round_step.height - 1)
                try:
                    await self.handler.on_consensus(peer.info(), msg)
                except TimecoinError as exc:
                    if exc.reason not in BENIGN_REASONS:
                        raise Misbehaviour(
                            exc.message, reason=exc.reason, score=SCORE_INVALID
                        ) from None
            except Misbehaviour as exc:
                self._punish(peer, exc.reason, exc.score, exc.message)

    async def _open_exchange(self, peer: Peer) -> None:
        """Dialer side: open Exchange on the peer's listener and run it."""
        ch = self._channels.get(peer.session_out)
        if ch is None:
            raise PeerRefused("no channel", reason=Reason.INTERNAL)
        call = ch.stream_stream(EXCHANGE_METHOD)(
            metadata=((SESSION_HEADER, peer.session_out.hex()),)
        )
        peer.exchange_attached = True
        peer.exchange_ready.set()
        try:
            await self._exchange_loop(peer, call)
        finally:
            call.cancel()
        # The consensus stream is part of the connection: without it the peer goes.
        peer.close(Reason.UNSPECIFIED, "consensus stream closed")

    # ------------------------------------------------------------------ server handlers

    async def _session_peer(self, context: grpc.aio.ServicerContext) -> Peer | None:
        """Return the authenticated peer whose session token the call carries, or None."""
        for k, v in context.invocation_metadata() or ():
            if k == SESSION_HEADER and isinstance(v, str) and len(v) == 2 * hs.SESSION_TOKEN_LEN:
                try:
                    token = bytes.fromhex(v)
                except ValueError:
                    return None
                peer = self._sessions.get(token)
                if peer is not None:
                    return peer
                pending = self._pending_sessions.get(token)
                if pending is None:
                    return None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.handshake_timeout_s):
                        return await asyncio.shield(pending)
                return None
        return None

    async def _serve_gossip(self, _requests: Any, context: grpc.aio.ServicerContext) -> None:
        ip, address = _peer_ip(context.peer())
        if self.bans.is_banned(ip):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "banned")
        if self._pending_inbound >= self.cfg.max_pending_handshakes:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many handshakes")
        self._pending_inbound += 1
        try:
            peer = await self._handshake(context, direction=INBOUND, address=address, ip=ip)
        except PeerRefused as exc:
            await self._refuse(context, exc, address, INBOUND)
            return
        except (Misbehaviour, TimeoutError) as exc:
            await self._refuse(
                context,
                PeerRefused(f"handshake failed: {exc!r}", reason=Reason.MALFORMED),
                address,
                INBOUND,
            )
            return
        finally:
            # Counted until a refused stream is drained, so refusals stay bounded too.
            self._pending_inbound -= 1
        await self._run_peer(peer, context)

    async def _serve_exchange(self, _requests: Any, context: grpc.aio.ServicerContext) -> None:
        peer = await self._session_peer(context)
        if peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown session")
            return
        if peer.closed.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "peer is disconnecting")
        if peer.exchange_attached:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "consensus stream already open")
            return
        peer.exchange_attached = True
        peer.exchange_ready.set()
        closed = asyncio.ensure_future(peer.closed.wait())
        loop = asyncio.ensure_future(self._exchange_loop(peer, context))
        try:
            await asyncio.wait([closed, loop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
            loop.cancel()
            await asyncio.gather(closed, loop, return_exceptions=True)
        peer.close(Reason.UNSPECIFIED, "consensus stream closed")

    async def _serve_status(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peer = await self._session_peer(context)
        if peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown session")
        assert peer is not None
        if not peer.blocks_bucket.take():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited")
        if len(request) > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "oversized")
        h, tip = self.handler.local_status()
        return p2p_pb2.GetPeerStatusResponse(
            height=h, tip_hash=tip, base_height=0
        ).SerializeToString()

    async def _serve_get_blocks(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        peer = await self._session_peer(context)
        if peer is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown session")
        assert peer is not None
        if not peer.blocks_bucket.take():
            self._punish(peer, Reason.RATE_LIMITED, SCORE_RATE, "GetBlocks over its rate")
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limited")
        if len(request) > 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "oversized request")
        try:
            req = p2p_pb2.GetBlocksRequest.FromString(request)
        except PbDecodeError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "malformed request")
        if req.count == 0 or req.count > self.cfg.max_blocks_per_request:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"count must be 1..{self.cfg.max_blocks_per_request}",
            )
        if peer.block_requests.locked():
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many block requests")
        async with peer.block_requests:
            sent_bytes = 0
            height = req.from_height
            end = req.from_height + req.count
            while height < end:
                n = min(16, end - height)
                items = await self.handler.get_blocks(height, n)
                for block, commit in items[:n]:
                    frame = _ld(1, block) + _ld(2, commit)
                    sent_bytes += len(frame)
                    if (
                        sent_bytes > self.cfg.max_blocks_response_bytes
                        or len(frame) > self.cfg.max_frame_bytes
                    ):
                        return
                    yield frame
                if len(items) < n:
                    return
                height += n

    # ------------------------------------------------------------------ dialing

    def _channel(self, address: str) -> grpc.aio.Channel:
        opts = self._options()
        if self.cfg.tls_root_cert_file is not None:
            if self.cfg.tls_server_name:
                opts.append(("grpc.ssl_target_name_override", self.cfg.tls_server_name))
            creds = grpc.ssl_channel_credentials(
                root_certificates=self.cfg.tls_root_cert_file.read_bytes()
            )
            return grpc.aio.secure_channel(
                address, creds, options=opts, interceptors=list(self.client_interceptors) or None
            )
        return grpc.aio.insecure_channel(
            address, options=opts, interceptors=list(self.client_interceptors) or None
        )

    async def connect(self, address: str) -> PeerInfo:
        """Dial *address*, handshake, and serve the peer in the background.

        Returns the authenticated peer; raises PeerRefused if either side refused
        (the reason says why) or the dial failed.
        """
        try:
            host, _ = split_host_port(address)
        except ValueError:
            raise PeerRefused(f"bad address {address!r}", reason=Reason.BAD_ADDRESS) from None
        if self.bans.is_banned(host):
            raise PeerRefused("address is banned", reason=Reason.RATE_LIMITED)
        ch = self._channel(address)
        call = ch.stream_stream(GOSSIP_METHOD)()
        try:
            async with asyncio.timeout(self.cfg.dial_timeout_s + self.cfg.handshake_timeout_s):
                peer = await self._handshake(call, direction=OUTBOUND, address=address, ip=host)
        except PeerRefused as exc:
            await self._refuse(call, exc, address, OUTBOUND)
            call.cancel()
            await ch.close()
            raise
        except (Misbehaviour, TimeoutError, grpc.aio.AioRpcError, grpc.aio.UsageError) as exc:
            call.cancel()
            await ch.close()
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
            raise PeerRefused(
                f"dial {address} failed: {detail}", reason=Reason.UNAUTHENTICATED
            ) from None
        self._channels[peer.session_out] = ch
        self._addr_node[address] = peer.node_id

        async def run() -> None:
            try:
                await self._run_peer(peer, call, self._open_exchange)
            finally:
                call.cancel()
                self._channels.pop(peer.session_out, None)
                await ch.close()

        self._spawn(run())
        return peer.info()

    async def _dial_loop(self, address: str, *, persistent: bool) -> None:
        """Keep *address* connected (persistent) or connect once with retries (seed)."""
        if address in self._dialing:
            return
        self._dialing.add(address)
        backoff = self.cfg.reconnect_base_s
        attempts = 0
        try:
            while not self._stopping:
                nid = self._addr_node.get(address)
                if nid is not None and nid in self._peers:
                    await self._peers[nid].closed.wait()
                    await asyncio.sleep(self._rng.uniform(0, self.cfg.reconnect_base_s))
                    backoff = self.cfg.reconnect_base_s
                    continue
                if not persistent and self._count(OUTBOUND) >= self.cfg.max_outbound:
                    return
                try:
                    info = await self.connect(address)
                    attempts = 0
                    backoff = self.cfg.reconnect_base_s
                    if not persistent:
                        return
                    p = self._peers.get(info.node_id)
                    if p is not None:
                        await p.closed.wait()
                    continue
                except PeerRefused as exc:
                    attempts += 1
                    log.debug("dial %s failed: %s", address, exc)
                    if nid is not None:
                        self.book.mark_failed(nid)
                    if not persistent and attempts >= 5:
                        return
                # Exponential backoff with full jitter so restarts do not synchronize.
                await asyncio.sleep(self._rng.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, self.cfg.reconnect_max_s)
        finally:
            self._dialing.discard(address)

    async def _maintain(self) -> None:
        """Fill free outbound slots from the address book; persist it now and then."""
        while not self._stopping:
            await asyncio.sleep(max(1.0, self.cfg.reconnect_base_s * 4))
            free = self.cfg.max_outbound - self._count(OUTBOUND) - len(self._dialing)
            if free > 0:
                for nid, e in self.book.sample(64):
                    if free <= 0:
                        break
                    if nid in self._peers or nid == self.node_id or self.bans.is_banned(nid):
                        continue
                    if e.address in self._dialing:
                        continue
                    self._addr_node.setdefault(e.address, nid)
                    self._spawn(self._dial_loop(e.address, persistent=False))
                    free -= 1
            if self._count(OUTBOUND) < self.cfg.max_outbound and self._peers:
                # Short of peers: ask one connected peer for more addresses.
                if self._rng.random() < 0.25:
                    p = self._rng.choice(list(self._peers.values()))
                    p.enqueue_control(
                        encode_gossip(p2p_pb2.GossipMessage(pex_request=p2p_pb2.PexRequest()))
                    )
            self.book.save()

    # ------------------------------------------------------------------ block sync client

    def _sync_channel(self, peer: Peer) -> grpc.aio.Channel | None:
        ch = self._channels.get(peer.session_out)
        if ch is not None:
            return ch
        if peer.direction == INBOUND and peer.session_out and peer.listen_address:
            ch = self._channel(self._dialable(peer))
            self._channels[peer.session_out] = ch
            return ch
        return None

    async def peer_status(self, peer_id: bytes) -> tuple[int, bytes]:
        """Ask a peer for its (height, tip hash) via GetPeerStatus; updates its height."""
        p = self._peers.get(peer_id)
        ch = self._sync_channel(p) if p is not None else None
        if p is None or ch is None:
            raise NotFound(f"peer {peer_id.hex()} not connected or not dialable")
        data = await ch.unary_unary(STATUS_METHOD)(
            b"",
            metadata=((SESSION_HEADER, p.session_out.hex()),),
            timeout=self.cfg.sync_request_timeout_s,
        )
        if len(data) > 256:
            raise Misbehaviour("oversized status", reason=Reason.OVERSIZED, score=SCORE_MALFORMED)
        resp = p2p_pb2.GetPeerStatusResponse.FromString(data)
        p.height = max(p.height, resp.height)
        return resp.height, resp.tip_hash

    async def _fetch_range(self, peer: Peer, lo: int, hi: int) -> list[FetchedBlock]:
        ch = self._sync_channel(peer)
        if ch is None:
            raise NotFound("peer not dialable for sync")
        req = p2p_pb2.GetBlocksRequest(from_height=lo, count=hi - lo + 1).SerializeToString()
        out: list[FetchedBlock] = []
        call = ch.unary_stream(GET_BLOCKS_METHOD)(
            req, metadata=((SESSION_HEADER, peer.session_out.hex()),)
        )
        try:
            async with asyncio.timeout(self.cfg.sync_request_timeout_s):
                async for frame in call:
                    if len(out) > hi - lo:
                        raise Misbehaviour("more blocks than requested", score=SCORE_MALFORMED)
                    block, commit = _split_block_response(frame)
                    h = lo + len(out)
                    self._check_block(block, commit, h)
                    out.append(FetchedBlock(h, block, commit, peer.node_id))
        finally:
            call.cancel()
        if len(out) != hi - lo + 1:
            raise NotFound(f"peer returned {len(out)} of {hi - lo + 1} blocks")
        return out

    def _check_block(self, block: bytes, commit: bytes, height: int) -> None:
        """Cheap structural checks; commit signatures are the node's to verify."""
        try:
            b = types_pb2.Block.FromString(block)
            header = types_pb2.BlockHeader.FromString(b.header_bytes)
            c = types_pb2.Commit.FromString(commit)
        except PbDecodeError:
            raise Misbehaviour(
                "undecodable block or commit", score=self.cfg.ban_threshold
            ) from None
        if header.height != height or c.height != height:
            raise Misbehaviour(
                f"asked for height {height}, got block {header.height} commit {c.height}",
                reason=Reason.BAD_HEIGHT,
                score=self.cfg.ban_threshold,
            )
        if c.block_hash != sha256(b.header_bytes):
            raise Misbehaviour(
                "commit is for another block",
                reason=Reason.BAD_COMMIT,
                score=self.cfg.ban_threshold,
            )

    async def fetch_blocks(
        self, from_height: int, to_height: int, *, wait_for_peers_s: float | None = None
    ) -> AsyncIterator[FetchedBlock]:
        """Blocks *from_height*..*to_height* with their commits, strictly in height order.

        Ranges of ``sync_chunk`` blocks go to peers whose reported height covers
        them, at most ``sync_in_flight`` at once; a range that fails (error,
        timeout, garbage) is retried on another peer and the bad peer scored.
        The node must still verify each commit and call ``report_misbehaviour``
        on ``FetchedBlock.peer_id`` if it is forged, then restart from there.
        Raises NotFound if no peer can serve a range for *wait_for_peers_s*.
        """
        chunk = max(1, min(self.cfg.sync_chunk, self.cfg.max_blocks_per_request))
        ranges = [
            (s, min(s + chunk - 1, to_height)) for s in range(from_height, to_height + 1, chunk)
        ]
        wait_s = self.cfg.sync_request_timeout_s if wait_for_peers_s is None else wait_for_peers_s
        todo: list[int] = list(range(len(ranges)))
        excluded: dict[int, set[bytes]] = {}
        results: dict[int, list[FetchedBlock]] = {}
        in_flight: dict[asyncio.Task[list[FetchedBlock]], tuple[int, Peer]] = {}
        next_yield = 0
        window = max(self.cfg.sync_in_flight * 2, 2)
        idle_since = time.monotonic()
        try:
            while next_yield < len(ranges):
                todo.sort()
                for idx in list(todo):
                    if len(in_flight) >= self.cfg.sync_in_flight or idx >= next_yield + window:
                        break
                    lo, hi = ranges[idx]
                    cands = [
                        p
                        for p in self._peers.values()
                        if not p.closed.is_set()
                        and p.height >= hi
                        and p.node_id not in excluded.get(idx, set())
                        and (p.direction == OUTBOUND or p.listen_address)
                    ]
                    if not cands and excluded.get(idx):
                        # Every able peer failed this range once: let them try again.
                        excluded[idx].clear()
                        continue
                    if not cands:
                        continue
                    peer = min(cands, key=lambda p: (p.sync_in_flight, self._rng.random()))
                    peer.sync_in_flight += 1
                    task = asyncio.ensure_future(self._fetch_range(peer, lo, hi))
                    in_flight[task] = (idx, peer)
                    todo.remove(idx)
                if not in_flight:
                    if time.monotonic() - idle_since > wait_s:
                        lo, hi = ranges[todo[0]]
                        raise NotFound(f"no peer can serve blocks {lo}..{hi}")
                    await asyncio.sleep(0.1)
                    continue
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    idx, peer = in_flight.pop(task)
                    peer.sync_in_flight -= 1
                    # A call on a channel closed under it (its peer was just
                    # banned or left) ends cancelled: that is a failure too.
                    exc = (
                        ConnectionError("request cancelled")
                        if task.cancelled()
                        else task.exception()
                    )
                    if exc is None:
                        results[idx] = task.result()
                        idle_since = time.monotonic()
                        continue
                    excluded.setdefault(idx, set()).add(peer.node_id)
                    todo.append(idx)
                    if isinstance(exc, Misbehaviour):
                        self._punish(peer, exc.reason, exc.score, exc.message)
                    else:
                        log.info(
                            "Block range %d..%d from %s failed: %r", *ranges[idx], peer.address, exc
                        )
                while next_yield in results:
                    for fb in results.pop(next_yield):
                        yield fb
                    next_yield += 1
        finally:
            for task in in_flight:
                task.cancel()
            for _idx, peer in in_flight.values():
                peer.sync_in_flight -= 1
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def best_height(self) -> int:
        """Return the highest committed height a connected peer reports (0 without peers)."""
        return max((p.height for p in self._peers.values()), default=0)
