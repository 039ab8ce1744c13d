"""Node state kept for peers: catch-up precommits for a lagging peer, the evidence pool."""

from dependency_injector import providers

from timecoin.consensus.engine import NewHeight
from timecoin.container import NodeContainer
from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import VoteType
from timecoin.wire.codec import decode_vote

from .test_chainstate import open_chain, produce


def _node(dev_home):
    c = NodeContainer(
        config=providers.Object(dev_home.config), home=providers.Object(dev_home.path)
    )
    c.init_resources()
    return c, c.node()


class _Net:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def send_consensus(self, peer_id: bytes, msg: object) -> bool:
        self.sent.append((peer_id, msg))
        return True

    def peers(self) -> list:
        return []


def test_lagging_peer_gets_the_last_commit_as_precommits(dev_home):
    chain = open_chain(dev_home)
    last = None
    for _ in range(3):
        _, last = produce(chain, dev_home, [], last)
    chain.store.close()

    c, node = _node(dev_home)
    try:
        assert node.chain.height == 3
        node._last_commit = node.chain.seen_commit(3)
        assert node._last_commit == last
        node.engine.step(
            NewHeight(4, node.chain.validators(4), node.chain.priorities.priorities, 0)
        )
        node.network = net = _Net()
        peer = b"\x07" * 32

        node._answer_vote_request(peer, 3, 0)  # the peer is one height behind
        votes = [decode_vote(m.vote) for _, m in net.sent]
        assert len(votes) == len(last.signatures) >= 1
        for v in votes:
            assert v.type is VoteType.PRECOMMIT and v.height == 3
            assert v.block_hash == last.block_hash and v.round == last.round
            signer = node.chain.validators(3).get(v.validator_address)
            assert signer is not None
            digest = vote_sign_digest(dev_home.params.chain_id, v)
            assert is_valid_signature(signer.pubkey, v.signature, digest)

        net.sent.clear()
        node._answer_vote_request(peer, 2, 0)  # further behind: that is block sync's job
        node._answer_vote_request(peer, 9, 0)  # ahead of us: nothing to give
        assert net.sent == []
    finally:
        c.shutdown_resources()


def _signed_prevote(dev_home, height: int, block_hash: bytes):
    from timecoin.core.types import Vote

    v = Vote(VoteType.PREVOTE, height, 0, block_hash, dev_home.validator.address_payload)
    sig = dev_home.validator.sign(vote_sign_digest(dev_home.params.chain_id, v))
    return Vote(v.type, v.height, v.round, v.block_hash, v.validator_address, sig)


def test_evidence_is_proposed_once_and_not_again_after_its_block(dev_home):
    import asyncio

    from timecoin.core.types import DuplicateVoteEvidence
    from timecoin.wire.codec import evidence_to_pb

    chain = open_chain(dev_home)
    last = None
    for _ in range(2):
        _, last = produce(chain, dev_home, [], last)
    chain.store.close()
    c, node = _node(dev_home)
    try:
        node._last_commit = last
        ev = DuplicateVoteEvidence(
            _signed_prevote(dev_home, 2, b""), _signed_prevote(dev_home, 2, b"\x01" * 32)
        )
        # The same evidence twice in the pool (two peers raced past the check):
        # the block carries it once instead of failing as "included twice".
        node._evidence = [ev, ev]
        proposed = asyncio.run(node._propose(3))
        assert proposed is not None and proposed.block.evidence == (ev,)
        assert proposed.result.culprits

        # Once committed, a late copy from a peer is not taken into the pool again.
        node._after_commit(proposed.block, last)
        assert node._evidence == []

        class Peer:
            node_id = b"\x05" * 32

        asyncio.run(node.on_evidence(Peer(), evidence_to_pb(ev)))
        assert node._evidence == []
    finally:
        c.shutdown_resources()


def test_next_height_waits_the_interval_minus_the_time_the_height_took(dev_home):
    import time

    c, node = _node(dev_home)
    try:
        interval = node.engine.config.timeouts.commit_ms
        node._round0_at = time.monotonic() - interval * 0.3 / 1000  # decided 30% in
        assert interval * 0.6 <= node._next_start_delay_ms() <= interval * 0.7 + 1
        node._round0_at = time.monotonic() - interval * 5 / 1000  # a slow height
        assert node._next_start_delay_ms() == interval // 10  # the floor, not zero
        # Every precommit in: no late one to wait for, a slow height goes straight on.
        node._round0_at = time.monotonic() - interval * 5 / 1000
        assert node._next_start_delay_ms(keep_pause=False) == 0
        node._round0_at = time.monotonic() - interval * 0.3 / 1000  # the interval still holds
        assert interval * 0.6 <= node._next_start_delay_ms(keep_pause=False) <= interval * 0.7 + 1
    finally:
        c.shutdown_resources()


def test_accepted_txs_are_relayed_in_one_gather(dev_home):
    import asyncio

    class Net:
        def __init__(self) -> None:
            self.batches: list[tuple[list, object]] = []

        def peers(self) -> list:
            return [object()]

        def broadcast_transactions(self, txs, *, exclude=None, trace=None) -> int:
            self.batches.append((list(txs), exclude))
            return 1

    c, node = _node(dev_home)
    try:
        node.network = net = Net()
        peer = b"\x09" * 32

        async def main() -> None:
            node._queue_relay(["a", "b"], peer)
            node._queue_relay(["c"], peer)
            node._queue_relay(["d"], None)
            assert net.batches == []  # nothing sent before the gather closes
            await asyncio.sleep(0.1)

        asyncio.run(main())
        assert sorted(net.batches, key=lambda b: len(b[0])) == [
            (["d"], None),
            (["a", "b", "c"], [peer]),
        ]
    finally:
        c.shutdown_resources()


def test_a_proposals_transaction_trace_contexts_are_taken_within_bounds(dev_home):
    from timecoin._proto.types.v1 import types_pb2
    from timecoin.core.genesis import genesis_hash
    from timecoin.core.types import OutPoint
    from timecoin.txbuilder import build_transfer

    chain = open_chain(dev_home)
    coin = OutPoint(genesis_hash(dev_home.genesis), 0)
    amount = chain.store.get_coin(coin).amount
    pay = build_transfer(
        dev_home.params,
        dev_home.wallet,
        [coin],
        [(b"\x01" * 20, 10**8), (dev_home.wallet.address_payload, amount - 10**8 - 10_000)],
    )
    p, _ = produce(chain, dev_home, [pay])
    chain.store.close()
    c, node = _node(dev_home)
    try:
        parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"

        def trace(txid, traceparent=parent, tracestate=""):
            return types_pb2.TxTrace(
                txid=txid,
                trace=types_pb2.TraceContext(traceparent=traceparent, tracestate=tracestate),
            )

        coinbase = p.block.txs[0].txid
        node._tx_traces[coinbase] = {"traceparent": "kept", "tracestate": ""}
        node._adopt_tx_traces(
            p.block,
            [
                trace(b"\x09" * 32),  # not a transaction of this block
                trace(pay.txid, traceparent="0" * 129),  # longer than any traceparent
                trace(pay.txid, tracestate="x" * 513),  # longer than W3C allows
                trace(coinbase, traceparent=parent),  # already traced here: kept
                trace(pay.txid),  # beyond one entry per transaction of the block
            ],
        )
        assert node._tx_traces == {coinbase: {"traceparent": "kept", "tracestate": ""}}
        node._adopt_tx_traces(p.block, [trace(pay.txid, tracestate="k=v")])
        assert node._tx_traces[pay.txid] == {"traceparent": parent, "tracestate": "k=v"}
    finally:
        c.shutdown_resources()
