"""The peer-to-peer layer of ``timed``: listener, handshake, peers, gossip, block sync.

The node builds one ``PeerNetwork(P2PConfig, NodeIdentity, handler)`` and
implements ``P2PHandler``; see docs/p2p.md.
"""

from timecoin.p2p.addrbook import AddressBook, AddressBookStore, MemoryStore, is_routable_address
from timecoin.p2p.config import PROTOCOL_VERSION, P2PConfig, RateLimit
from timecoin.p2p.errors import Misbehaviour, PeerRefused
from timecoin.p2p.faults import FaultRule, FaultSchedule
from timecoin.p2p.handshake import NodeIdentity
from timecoin.p2p.network import SESSION_HEADER, FetchedBlock, PeerNetwork
from timecoin.p2p.peer import INBOUND, OUTBOUND, P2PHandler, PeerInfo

__all__ = [
    "INBOUND",
    "OUTBOUND",
    "PROTOCOL_VERSION",
    "SESSION_HEADER",
    "AddressBook",
    "AddressBookStore",
    "FaultRule",
    "FaultSchedule",
    "FetchedBlock",
    "MemoryStore",
    "Misbehaviour",
    "NodeIdentity",
    "P2PConfig",
    "P2PHandler",
    "PeerInfo",
    "PeerNetwork",
    "PeerRefused",
    "RateLimit",
    "is_routable_address",
]
