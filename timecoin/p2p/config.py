"""Settings of the peer-to-peer layer: listener, peers, limits, bans, TLS, faults.

Every bound the layer enforces is a field here so a test (or an operator) can
tighten it; the defaults are sized for blocks of up to 4 MB and a few hundred
transactions per second per peer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from timecoin.p2p.faults import FaultSchedule

PROTOCOL_VERSION = 1
"""Bumped when the peer protocol changes incompatibly; peers must match exactly."""

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: *rate_per_s* tokens refill per second up to *burst*."""

    rate_per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """Configuration of one ``PeerNetwork``."""

    listen: str = "0.0.0.0:24000"
    """host:port of the peer listener; port 0 picks a free port (tests)."""
    external_address: str | None = None
    """Address advertised in Hello and PEX; defaults to the listen address."""
    seeds: tuple[str, ...] = ()
    """host:port dialed at start for addresses; dropped when outbound slots are full."""
    persistent_peers: tuple[str, ...] = ()
    """host:port always kept connected (reconnect with backoff forever)."""
    max_inbound: int = 40
    max_outbound: int = 10
    """Outbound connections made from seeds and the address book (persistent peers extra)."""
    max_pending_handshakes: int = 16
    """Inbound streams still handshaking; more are refused before any allocation."""
    handshake_timeout_s: float = 5.0
    dial_timeout_s: float = 5.0
    reconnect_base_s: float = 0.5
    reconnect_max_s: float = 30.0
    ping_interval_s: float = 5.0
    ping_timeout_s: float = 20.0
    """A peer that sends nothing (not even a Pong) for this long is disconnected."""

    max_frame_bytes: int = 8 * MIB
    """gRPC max send/receive message size: a proposal with a 4 MB block, a block and its commit."""
    max_gossip_frame_bytes: int = 2 * MIB
    """Cap on one Gossip frame (a transaction batch), checked before decoding."""
    max_consensus_frame_bytes: int = 5 * MIB
    """Cap on one Exchange frame (a proposal carries a full block), checked before decoding."""
    max_small_message_bytes: int = 4096
    """Cap on every message other than a proposal or a transaction batch."""
    max_txs_per_batch: int = 256
    max_pex_addresses: int = 32
    max_address_len: int = 262
    """host (253) + ':' + port (5) + brackets for IPv6."""

    tx_rate: RateLimit = RateLimit(rate_per_s=5000.0, burst=10000.0)
    """Gossiped transactions per second from one peer (a batch costs one token per tx)."""
    consensus_rate: RateLimit = RateLimit(rate_per_s=1000.0, burst=2000.0)
    control_rate: RateLimit = RateLimit(rate_per_s=10.0, burst=30.0)
    """Ping, Pong, PEX and evidence on the Gossip stream."""
    blocks_rate: RateLimit = RateLimit(rate_per_s=20.0, burst=40.0)
    """GetBlocks and GetPeerStatus calls from one peer."""
    max_concurrent_block_requests: int = 2

    consensus_queue: int = 4096
    """Outbound consensus messages queued per peer; a peer this far behind is disconnected."""
    gossip_queue: int = 256
    """Outbound transaction batches queued per peer; when full new batches are dropped."""
    control_queue: int = 64

    seen_tx_cache: int = 100_000
    """Transaction ids remembered for gossip dedup (oldest forgotten first)."""

    ban_threshold: int = 100
    """Misbehaviour score at which a peer is disconnected and banned."""
    ban_duration_s: float = 600.0
    ban_loopback_ips: bool = False
    """Ban by IP also for 127.0.0.0/8 and ::1 (off by default: local testnets share it)."""
    allow_local_addresses: bool = False
    """Accept loopback/private addresses from PEX and dial them (local testnets, tests)."""
    address_book_size: int = 1000

    sync_chunk: int = 64
    """Blocks per GetBlocks request made by ``fetch_blocks``."""
    sync_in_flight: int = 8
    """GetBlocks requests in flight at once (over all peers)."""
    sync_request_timeout_s: float = 20.0
    max_blocks_per_request: int = 256
    max_blocks_response_bytes: int = 64 * MIB
    """Bytes one GetBlocks call may return in total (server stops early beyond it)."""

    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_root_cert_file: Path | None = None
    """Root certificate peers' certificates chain to; enables TLS when dialing."""
    tls_server_name: str | None = None
    """Override of the name checked in peers' certificates (peers are dialed by IP)."""

    faults: FaultSchedule | None = None
    """Test-only send-path fault injection (``FaultSchedule.from_env()``)."""
    extra_grpc_options: tuple[tuple[str, int | str], ...] = field(default=())
