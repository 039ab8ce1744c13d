"""WalletService: submission with reasons, streaming batches, building and fee estimates."""

from __future__ import annotations

from dataclasses import replace

import pytest
from api_fake_node import TIME, FakeNode, pay, running, sign_tx, test_key

from timecoin.core.address import encode_address
from timecoin.core.errors import (
    AlreadyKnown,
    BadAddress,
    BadSignature,
    DoubleSpend,
    DustOutput,
    FeeTooLow,
    InsufficientFunds,
    MempoolFull,
    MissingInput,
    NonCanonical,
    Reason,
    WrongChain,
    WrongOwner,
)
from timecoin.core.signing import tx_sign_digest
from timecoin.core.types import OutPoint
from timecoin.wire.codec import decode_tx_body, make_transaction, transaction_to_pb

ALICE = test_key(1)
BOB = test_key(2)


def addr(key) -> str:  # type: ignore[no-untyped-def]
    return encode_address(key.address_payload, FakeNode().params.network)


async def test_submit_returns_txid_and_typed_rejections(tmp_path) -> None:
    node = FakeNode()
    a, b = node.fund(ALICE, [10 * TIME, 10 * TIME])
    good = pay(node, ALICE, a, TIME, BOB.address_payload, change=8 * TIME)
    conflict = pay(node, ALICE, a, 2 * TIME, BOB.address_payload, change=7 * TIME)
    async with running(tmp_path, node) as r:
        assert await r.client.submit(good) == good.txid
        with pytest.raises(AlreadyKnown):
            await r.client.submit(good)
        with pytest.raises(DoubleSpend) as e:
            await r.client.submit(conflict)
        assert e.value.reason == Reason.DOUBLE_SPEND
        with pytest.raises(MissingInput):
            await r.client.submit(
                pay(node, ALICE, OutPoint(bytes(32), 0), TIME, BOB.address_payload)
            )
        # Signed by the wrong key: the signature does not verify for the input's pubkey.
        forged = pay(node, ALICE, b, TIME, BOB.address_payload)
        bad_sig = make_transaction(
            forged.body_bytes,
            [BOB.sign(tx_sign_digest(node.params.chain_id, forged.body_bytes))],
            node.params.network,
        )
        with pytest.raises(BadSignature):
            await r.client.submit(bad_sig)
        with pytest.raises(WrongChain):
            await r.client.submit(
                pay(node, ALICE, b, TIME, BOB.address_payload, chain_id="timecoin-mainnet-1")
            )
        # All inputs minus outputs leaves no fee.
        with pytest.raises(FeeTooLow):
            await r.client.submit(pay(node, ALICE, b, 10 * TIME, BOB.address_payload))
        # The node kept working: the good one is still pending and can be final.
        assert (await r.client.status()).mempool_size == 1


async def test_undecodable_transactions_are_typed(tmp_path) -> None:
    node = FakeNode()
    (a,) = node.fund(ALICE, [10 * TIME])
    tx = pay(node, ALICE, a, TIME, BOB.address_payload, change=8 * TIME)
    async with running(tmp_path, node) as r:
        junk = transaction_to_pb(tx)
        junk.body_bytes = b"\xff\xff\xff"
        with pytest.raises(Exception) as e:
            await r.client.submit(junk)
        assert e.value.reason == Reason.MALFORMED
        short_sig = transaction_to_pb(tx)
        short_sig.signatures[0] = b"\x01" * 10
        with pytest.raises(Exception) as e:
            await r.client.submit(short_sig)
        assert e.value.reason == Reason.MALFORMED
        # An unknown field inside the signed body: refused, never half-understood.
        with_unknown = transaction_to_pb(tx)
        with_unknown.body_bytes = tx.body_bytes + b"\xa0\x06\x01"  # field 100, varint 1
        with pytest.raises(NonCanonical):
            await r.client.submit(with_unknown)


async def test_stream_submit_gives_per_tx_results_in_order(tmp_path) -> None:
    node = FakeNode()
    coins = node.fund(ALICE, [10 * TIME] * 5)
    txs = [pay(node, ALICE, c, TIME, BOB.address_payload, change=8 * TIME) for c in coins]
    dup = pay(node, ALICE, coins[0], 2 * TIME, BOB.address_payload, change=7 * TIME)
    junk = transaction_to_pb(txs[0])
    junk.body_bytes = b"\x0a"

    async def batches():  # type: ignore[no-untyped-def]
        yield [transaction_to_pb(t) for t in txs[:3]]
        yield [transaction_to_pb(txs[3]), transaction_to_pb(dup), junk, transaction_to_pb(txs[4])]

    async with running(tmp_path, node) as r:
        results = [batch async for batch in r.client.submit_stream(batches())]
        assert [[t for t, _ in b] for b in results][0] == [t.txid for t in txs[:3]]
        assert all(err is None for _, err in results[0])
        second = results[1]
        assert [err.reason if err else None for _, err in second] == [
            None,
            Reason.DOUBLE_SPEND,
            Reason.MALFORMED,
            None,
        ]
        assert second[1][0] == dup.txid
        assert node.submit_calls == 2  # one backend call per batch, not per tx
        assert len(node.mempool) == 5


async def test_stream_batch_size_is_bounded(tmp_path) -> None:
    node = FakeNode()
    (a,) = node.fund(ALICE, [10 * TIME])
    tx = transaction_to_pb(pay(node, ALICE, a, TIME, BOB.address_payload, change=8 * TIME))

    async def batches():  # type: ignore[no-untyped-def]
        yield [tx] * 1001

    async with running(tmp_path, node) as r:
        with pytest.raises(Exception) as e:
            async for _ in r.client.submit_stream(batches()):
                pass
        assert e.value.reason == Reason.TOO_MANY_ITEMS
        assert node.submit_calls == 0


async def test_build_sign_submit_final(tmp_path) -> None:
    node = FakeNode()
    node.fund(ALICE, [3 * TIME, 5 * TIME, 1 * TIME])
    async with running(tmp_path, node) as r:
        built = await r.client.build_transaction(
            addr(ALICE), ALICE.pubkey, [(addr(BOB), 6 * TIME)], memo=b"thanks"
        )
        body = decode_tx_body(built.body_bytes, node.params.network)
        assert built.sign_digest == tx_sign_digest(node.params.chain_id, built.body_bytes)
        # Largest first: 5 + 3 cover 6 plus the fee; change goes back to Alice.
        assert built.input_count == len(body.inputs) == 2
        assert body.outputs[0].pubkey_hash == BOB.address_payload
        assert body.outputs[0].amount == 6 * TIME
        assert body.outputs[1].pubkey_hash == ALICE.address_payload
        assert body.outputs[1].amount == 8 * TIME - 6 * TIME - built.fee
        assert body.memo == b"thanks" and body.chain_id == node.params.chain_id
        sig = ALICE.sign(built.sign_digest)
        tx = make_transaction(built.body_bytes, [sig] * built.input_count, node.params.network)
        # The fee is the minimum for the exact signed size.
        assert built.fee == node.params.min_fee(tx.size)
        assert await r.client.submit(tx) == built.txid
        # Building again skips the coins the pending transaction spends.
        again = await r.client.build_transaction(
            addr(ALICE), ALICE.pubkey, [(addr(BOB), TIME // 2)]
        )
        body2 = decode_tx_body(again.body_bytes, node.params.network)
        assert {i.prev_out for i in body2.inputs}.isdisjoint({i.prev_out for i in body.inputs})
        node.commit_block()
        assert await r.client.wait_final(tx.txid, timeout_s=5) == (1, node.blocks[0].hash)
        assert (await r.client.balance(addr(BOB)))[0] == 6 * TIME


async def test_build_rejects_bad_requests(tmp_path) -> None:
    node = FakeNode()
    node.fund(ALICE, [TIME])
    async with running(tmp_path, node) as r:
        with pytest.raises(InsufficientFunds):
            await r.client.build_transaction(addr(ALICE), ALICE.pubkey, [(addr(BOB), TIME)])
        with pytest.raises(WrongOwner):
            await r.client.build_transaction(addr(ALICE), BOB.pubkey, [(addr(BOB), 1000)])
        with pytest.raises(DustOutput):
            await r.client.build_transaction(addr(ALICE), ALICE.pubkey, [(addr(BOB), 1)])
        with pytest.raises(BadAddress):
            await r.client.build_transaction(addr(ALICE), ALICE.pubkey, [("TIME0xyz", 5000)])
        # Paying everything but less than dust would be left: the remainder is fee.
        fee_rate = 1000
        built = await r.client.build_transaction(
            addr(ALICE), ALICE.pubkey, [(addr(BOB), TIME - 500)], fee_rate_units_per_kb=fee_rate
        )
        body = decode_tx_body(built.body_bytes, node.params.network)
        assert len(body.outputs) == 1 and built.fee == 500


async def test_estimate_fee(tmp_path) -> None:
    async with running(tmp_path) as r:
        est = await r.client.estimate_fee(1500)
        params = r.node.params
        assert est.fee_rate_units_per_kb == params.min_fee_units_per_kb
        assert est.fee == params.min_fee(1500)
        assert est.dust_limit == params.dust_limit_units


async def test_mempool_full_maps_to_resource_exhausted(tmp_path) -> None:
    node = replace(FakeNode(), max_mempool=1)
    a, b = node.fund(ALICE, [10 * TIME, 10 * TIME])
    async with running(tmp_path, node) as r:
        await r.client.submit(pay(node, ALICE, a, TIME, BOB.address_payload, change=8 * TIME))
        with pytest.raises(MempoolFull):
            await r.client.submit(pay(node, ALICE, b, TIME, BOB.address_payload, change=8 * TIME))


def test_sign_tx_helper_matches_build_digest() -> None:
    node = FakeNode()
    (a,) = node.fund(ALICE, [TIME])
    tx = pay(node, ALICE, a, TIME // 2, BOB.address_payload)
    again = sign_tx(tx.body, ALICE)
    assert again.txid == tx.txid and again.signatures == tx.signatures
