"""Handshake over real grpc.aio on loopback: authentication and every refusal."""

from __future__ import annotations

import asyncio
import logging

import grpc
import grpc.aio
import pytest
from p2p_helpers import (
    CHAIN,
    Nets,
    RawPeer,
    addr,
    identity,
    wait_for,
)

from timecoin._proto.p2p.v1 import p2p_pb2
from timecoin.core.errors import Reason
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair
from timecoin.core.signing import hello_sign_digest
from timecoin.p2p import INBOUND, OUTBOUND, SESSION_HEADER, PeerRefused
from timecoin.p2p.handshake import make_hello
from timecoin.p2p.network import EXCHANGE_METHOD, GET_BLOCKS_METHOD


async def test_two_networks_connect_and_authenticate(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make()
        info = await a.connect(addr(b))
        assert info.node_id == b.node_id
        assert info.direction == OUTBOUND
        await b.wait_for_peers(1)
        assert b.stats()["peers_inbound"] == 1 and a.stats()["peers_outbound"] == 1
        await wait_for(lambda: [p.node_id for p in b.peers()] == [a.node_id])
        assert b.peers()[0].direction == INBOUND
        assert b.peers()[0].listen_address == addr(a)


async def test_three_networks_connect_pairwise(
    nets: Nets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="timecoin.p2p")
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make()
        c, _ = await nets.make()
        await a.connect(addr(b))
        await b.connect(addr(c))
        await c.connect(addr(a))
        for n, others in ((a, {b, c}), (b, {a, c}), (c, {a, b})):
            want = {o.node_id for o in others}
            await wait_for(lambda n=n, want=want: {p.node_id for p in n.peers()} == want)
        connected = await wait_for(
            lambda: (
                [r for r in caplog.records if r.getMessage() == "Peer connected"][5:]
                and [r for r in caplog.records if r.getMessage() == "Peer connected"]
            )
        )
        assert len(connected) == 6
        assert all(r.fields["direction"] in (INBOUND, OUTBOUND) for r in connected)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kw", "reason", "what"),
    [
        ({"chain": "other-chain"}, Reason.WRONG_CHAIN, "chain id differs"),
        ({"genesis": sha256(b"other genesis")}, Reason.WRONG_CHAIN, "genesis hash differs"),
        (
            {"rules": sha256(b"other rules"), "plugins": (("evil-rules", "6.6"),)},
            Reason.RULES_REJECTED,
            "rules fingerprint differs",
        ),
    ],
)
async def test_mismatched_peer_is_refused_with_a_log_line(
    nets: Nets, caplog: pytest.LogCaptureFixture, kw: dict, reason: Reason, what: str
) -> None:
    caplog.set_level(logging.INFO, logger="timecoin.p2p")
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make(ident=identity(**kw))
        with pytest.raises(PeerRefused) as info:
            await a.connect(addr(b))
        assert what in info.value.message
        assert info.value.reason == reason
        # The listener refuses too and names the peer and what differs.
        refused = await wait_for(
            lambda: [
                r
                for r in caplog.records
                if r.getMessage() == "Peer refused" and r.fields["direction"] == INBOUND  # type: ignore[attr-defined]
            ]
        )
        fields = refused[0].fields  # type: ignore[attr-defined]
        assert what in fields["detail"]
        assert fields["peer"].startswith("127.0.0.1:")
        if "plugins" in kw:
            assert (
                "evil-rules==6.6" in fields["detail"] or "timecoin-default==1.0" in fields["detail"]
            )
        assert a.peers() == [] and b.peers() == []


async def test_protocol_version_mismatch_refused(nets: Nets) -> None:
    from dataclasses import replace

    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make(ident=replace(identity(), protocol_version=99))
        with pytest.raises(PeerRefused) as info:
            await a.connect(addr(b))
        assert info.value.reason == Reason.BAD_VERSION


async def test_forged_hello_ack_is_refused(nets: Nets, caplog: pytest.LogCaptureFixture) -> None:
    """A peer claiming someone else's public key cannot sign the challenge for it."""
    caplog.set_level(logging.INFO, logger="timecoin.p2p")
    async with asyncio.timeout(10):
        b, _ = await nets.make()
        victim = identity()
        forger = KeyPair.generate()
        raw = RawPeer(addr(b))
        try:
            hello = make_hello(victim, "127.0.0.1:1", 0)
            await raw.send(p2p_pb2.GossipMessage(hello=hello))
            theirs = (await raw.recv()).hello
            sig = forger.sign(hello_sign_digest(CHAIN, theirs.challenge))
            await raw.send(p2p_pb2.GossipMessage(hello_ack=p2p_pb2.HelloAck(signature=sig)))
            _ack = await raw.recv()
            disc = await raw.recv()
            assert disc is not None and disc.WhichOneof("kind") == "disconnect"
            assert disc.disconnect.reason == Reason.BAD_SIGNATURE
        finally:
            await raw.close()
        assert b.peers() == []
        assert any(
            r.getMessage() == "Peer refused" and "cannot prove its node id" in r.fields["detail"]  # type: ignore[attr-defined]
            for r in caplog.records
        )


async def test_replayed_handshake_fails(nets: Nets) -> None:
    """A recorded Hello + HelloAck of a genuine peer does not authenticate a second time."""
    async with asyncio.timeout(10):
        b, _ = await nets.make()
        genuine = identity()
        raw = RawPeer(addr(b))
        hello = make_hello(genuine, "127.0.0.1:1", 0)
        await raw.send(p2p_pb2.GossipMessage(hello=hello))
        theirs = (await raw.recv()).hello
        sig = genuine.key.sign(hello_sign_digest(CHAIN, theirs.challenge))
        recorded = [
            p2p_pb2.GossipMessage(hello=hello),
            p2p_pb2.GossipMessage(hello_ack=p2p_pb2.HelloAck(signature=sig)),
        ]
        await raw.send(recorded[1])
        ack = (await raw.recv()).hello_ack
        assert len(ack.session_token) == 32
        await wait_for(lambda: [p.node_id for p in b.peers()] == [genuine.node_id])
        await raw.close()
        await wait_for(lambda: b.peers() == [])

        replay = RawPeer(addr(b))
        try:
            await replay.send(recorded[0])
            fresh = (await replay.recv()).hello
            assert fresh.challenge != theirs.challenge
            await replay.send(recorded[1])
            _ack = await replay.recv()
            disc = await replay.recv()
            assert disc.WhichOneof("kind") == "disconnect"
            assert disc.disconnect.reason == Reason.BAD_SIGNATURE
        finally:
            await replay.close()
        assert b.peers() == []


async def test_self_and_duplicate_connections_refused(nets: Nets) -> None:
    async with asyncio.timeout(10):
        key = KeyPair.generate()
        a, _ = await nets.make(ident=identity(key))
        with pytest.raises(PeerRefused) as info:
            await a.connect(addr(a))
        assert "self" in info.value.message
        b, _ = await nets.make()
        await a.connect(addr(b))
        with pytest.raises(PeerRefused) as info:
            await a.connect(addr(b))
        assert info.value.reason == Reason.ALREADY_KNOWN
        # Another process with the same node key is also a duplicate.
        twin, _ = await nets.make(ident=identity(key))
        with pytest.raises(PeerRefused):
            await twin.connect(addr(b))
        await asyncio.sleep(0.2)
        assert [p.node_id for p in a.peers()] == [b.node_id]
        assert [p.node_id for p in b.peers()] == [a.node_id]


async def test_simultaneous_dials_settle_on_one_connection(nets: Nets) -> None:
    async with asyncio.timeout(10):
        a, _ = await nets.make()
        b, _ = await nets.make()
        results = await asyncio.gather(
            a.connect(addr(b)), b.connect(addr(a)), return_exceptions=True
        )
        assert any(not isinstance(r, Exception) for r in results)
        await wait_for(lambda: len(a.peers()) == 1 and len(b.peers()) == 1)
        await asyncio.sleep(0.3)
        assert len(a.peers()) == 1 and len(b.peers()) == 1
        assert a.peers()[0].direction != b.peers()[0].direction


async def test_exchange_and_get_blocks_need_a_session(nets: Nets) -> None:
    async with asyncio.timeout(10):
        b, _ = await nets.make()
        async with grpc.aio.insecure_channel(addr(b)) as ch:
            call = ch.stream_stream(EXCHANGE_METHOD)(metadata=((SESSION_HEADER, "00" * 32),))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            req = p2p_pb2.GetBlocksRequest(from_height=1, count=1).SerializeToString()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in ch.unary_stream(GET_BLOCKS_METHOD)(req):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tls_listener_and_dial(nets: Nets, tmp_path) -> None:
    from timecoin.testing.tls import self_signed_pem

    cert_pem, key_pem = self_signed_pem("timecoin-peer")
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    tls = {
        "tls_cert_file": tmp_path / "cert.pem",
        "tls_key_file": tmp_path / "key.pem",
        "tls_root_cert_file": tmp_path / "cert.pem",
        "tls_server_name": "timecoin-peer",
    }
    async with asyncio.timeout(10):
        a, _ = await nets.make(**tls)
        b, _ = await nets.make(**tls)
        await a.connect(addr(b))
        await wait_for(lambda: len(b.peers()) == 1)
        # A plaintext dialer cannot talk to the TLS listener.
        c, _ = await nets.make()
        with pytest.raises(PeerRefused):
            await c.connect(addr(b))


async def test_silent_peer_is_dropped_after_the_ping_timeout(nets: Nets) -> None:
    async with asyncio.timeout(10):
        b, _ = await nets.make(ping_interval_s=0.1, ping_timeout_s=0.5)
        raw = RawPeer(addr(b))
        try:
            await raw.handshake(identity())
            await wait_for(lambda: len(b.peers()) == 1)
            kinds = []
            while True:  # we never answer: pings arrive, then the Disconnect
                msg = await raw.recv()
                if msg is None:
                    break
                kinds.append(msg.WhichOneof("kind"))
                if kinds[-1] == "disconnect":
                    assert "ping timeout" in msg.disconnect.message
                    break
            assert "ping" in kinds and kinds[-1] == "disconnect"
            await wait_for(lambda: b.peers() == [])
        finally:
            await raw.close()


async def test_hello_after_the_handshake_is_misbehaviour(nets: Nets) -> None:
    async with asyncio.timeout(10):
        b, _ = await nets.make(ban_threshold=100)
        ident = identity()
        raw = RawPeer(addr(b))
        try:
            await raw.handshake(ident)
            await wait_for(lambda: len(b.peers()) == 1)
            for _ in range(2):
                await raw.send(p2p_pb2.GossipMessage(hello=make_hello(ident, "x:1", 0)))
            await wait_for(lambda: b.peers() == [])
            assert b.is_banned(ident.node_id)
        finally:
            await raw.close()


async def test_redial_replaces_a_connection_that_went_quiet(nets: Nets) -> None:
    """A restarted node (same key) is not locked out until the stale link times out."""
    async with asyncio.timeout(10):
        b, _ = await nets.make(ping_interval_s=0.5, ping_timeout_s=30)
        ident = identity()
        stale = RawPeer(addr(b))
        try:
            await stale.handshake(ident)  # then never speaks again
            await wait_for(lambda: len(b.peers()) == 1)
            fresh = RawPeer(addr(b))
            try:
                # Right away the same dialer is a duplicate ...
                disc = await fresh.handshake(ident)
                assert disc.WhichOneof("kind") == "disconnect"
                assert disc.disconnect.reason == Reason.ALREADY_KNOWN
            finally:
                await fresh.close()
            await asyncio.sleep(1.2)
            # ... once the old link is quiet for two ping intervals it is replaced.
            again = RawPeer(addr(b))
            try:
                ack = (await again.handshake(ident)).hello_ack
                assert len(ack.session_token) == 32
                # The listener registers after it has checked our ack.
                await wait_for(
                    lambda: (
                        ident.node_id in b._peers
                        and b._peers[ident.node_id].session_in == ack.session_token
                    )
                )
                assert len(b.peers()) == 1
            finally:
                await again.close()
        finally:
            await stale.close()
