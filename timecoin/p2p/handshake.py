"""The Gossip-stream handshake: Hello each way, then HelloAck signing the other's challenge.

Each side sends ``Hello`` with a fresh 32-byte challenge, checks the peer's
Hello against its own identity (chain id, genesis hash, protocol version,
rules fingerprint), then signs the *peer's* challenge with its node key over
``hello_sign_digest(chain_id, challenge)``. A replayed Hello/HelloAck fails
because the challenge it would have to sign is new on every connection.
The node id is ``pubkey_hash(node_pubkey)`` (20 bytes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from timecoin._proto.p2p.v1 import p2p_pb2
from timecoin.core.errors import BadPubkey, Reason
from timecoin.core.keys import KeyPair, is_valid_signature, pubkey_hash, validate_pubkey
from timecoin.core.signing import hello_sign_digest
from timecoin.p2p.config import PROTOCOL_VERSION
from timecoin.p2p.errors import PeerRefused

CHALLENGE_LEN = 32
SESSION_TOKEN_LEN = 32
MAX_PLUGINS = 64


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """What a node asserts about itself in every Hello."""

    chain_id: str
    genesis_hash: bytes
    rules_fingerprint: bytes
    key: KeyPair
    rules_plugins: tuple[tuple[str, str], ...] = ()
    protocol_version: int = PROTOCOL_VERSION

    @property
    def node_id(self) -> bytes:
        """20-byte node id: the hash of the node public key."""
        return pubkey_hash(self.key.pubkey)


def new_challenge() -> bytes:
    """32 bytes from the OS CSPRNG."""
    return os.urandom(CHALLENGE_LEN)


def make_hello(ident: NodeIdentity, listen_address: str, height: int) -> p2p_pb2.Hello:
    """Our Hello with a fresh challenge (kept by the caller to check the peer's ack)."""
    return p2p_pb2.Hello(
        chain_id=ident.chain_id,
        genesis_hash=ident.genesis_hash,
        protocol_version=ident.protocol_version,
        rules_fingerprint=ident.rules_fingerprint,
        rules_plugins=[p2p_pb2.PluginVersion(name=n, version=v) for n, v in ident.rules_plugins],
        node_pubkey=ident.key.pubkey,
        listen_address=listen_address,
        challenge=new_challenge(),
        height=height,
    )


def _plugins(h: p2p_pb2.Hello) -> str:
    return ",".join(f"{p.name}=={p.version}" for p in h.rules_plugins) or "-"


def check_hello(ident: NodeIdentity, theirs: p2p_pb2.Hello) -> bytes:
    """Return the peer's node id, or raise PeerRefused naming what differs."""
    if theirs.chain_id != ident.chain_id:
        raise PeerRefused(
            f"chain id differs: peer {theirs.chain_id[:64]!r}, ours {ident.chain_id!r}",
            reason=Reason.WRONG_CHAIN,
        )
    if theirs.genesis_hash != ident.genesis_hash:
        raise PeerRefused(
            f"genesis hash differs: peer {theirs.genesis_hash[:32].hex()}, "
            f"ours {ident.genesis_hash.hex()}",
            reason=Reason.WRONG_CHAIN,
        )
    if theirs.protocol_version != ident.protocol_version:
        raise PeerRefused(
            f"protocol version differs: peer {theirs.protocol_version}, "
            f"ours {ident.protocol_version}",
            reason=Reason.BAD_VERSION,
        )
    if theirs.rules_fingerprint != ident.rules_fingerprint:
        ours = ",".join(f"{n}=={v}" for n, v in ident.rules_plugins) or "-"
        plugins = _plugins(theirs) if len(theirs.rules_plugins) <= MAX_PLUGINS else "(too many)"
        raise PeerRefused(
            f"rules fingerprint differs: peer {theirs.rules_fingerprint[:32].hex()} "
            f"[{plugins[:512]}], ours {ident.rules_fingerprint.hex()} [{ours}]",
            reason=Reason.RULES_REJECTED,
        )
    if len(theirs.challenge) != CHALLENGE_LEN:
        raise PeerRefused("challenge must be 32 bytes", reason=Reason.MALFORMED)
    try:
        validate_pubkey(theirs.node_pubkey)
    except BadPubkey as exc:
        raise PeerRefused(f"bad node public key: {exc.message}", reason=Reason.BAD_PUBKEY) from None
    node_id = pubkey_hash(theirs.node_pubkey)
    if node_id == ident.node_id:
        raise PeerRefused("connection to self", reason=Reason.ALREADY_KNOWN)
    return node_id


def sign_challenge(ident: NodeIdentity, their_challenge: bytes) -> bytes:
    """Our HelloAck signature over the peer's challenge."""
    return ident.key.sign(hello_sign_digest(ident.chain_id, their_challenge))


def verify_ack(
    ident: NodeIdentity, their_hello: p2p_pb2.Hello, our_challenge: bytes, ack: p2p_pb2.HelloAck
) -> None:
    """Raise PeerRefused unless *ack* signs our challenge with the key of *their_hello*."""
    digest = hello_sign_digest(ident.chain_id, our_challenge)
    if not is_valid_signature(their_hello.node_pubkey, ack.signature, digest):
        raise PeerRefused(
            "cannot prove its node id: HelloAck signature does not verify",
            reason=Reason.BAD_SIGNATURE,
        )
