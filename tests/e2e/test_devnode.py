"""`timed serve --dev` as a real process: blocks, transactions, rejections, restarts, crashes."""

from __future__ import annotations

import asyncio
import signal
import time
import tomllib

import pytest
import tomli_w

from timecoin.core.errors import DoubleSpend, MempoolFull, Reason, TimecoinError
from timecoin.core.muhash import MuHash3072, coin_element
from timecoin.core.types import OutPoint
from timecoin.txbuilder import build_transfer

pytestmark = pytest.mark.e2e
OTHER = b"\x07" * 20


async def _coins(c, node):
    resp = await c.list_unspent(node.address)
    return [(OutPoint(u.out_point.txid, u.out_point.index), u.amount) for u in resp.unspent]


async def _genesis_coin(c, node):
    coins = await _coins(c, node)
    return max(coins, key=lambda x: x[1])


def _pay(node, op, amount, to=OTHER, value=10**8, fee=1_000):
    return build_transfer(
        node.params,
        node.wallet,
        [op],
        [(to, value), (node.wallet.address_payload, amount - value - fee)],
    )


async def test_send_final_double_spend_and_graceful_restart(dev_node):
    node = dev_node()
    node.start()
    async with asyncio.timeout(90):
        await node.wait_ready()
        async with node.client() as c:
            op, amount = await _genesis_coin(c, node)
            tx = _pay(node, op, amount)
            conflict = _pay(node, op, amount, to=b"\x09" * 20, fee=2_000)
            txid = await c.submit(tx)
            assert txid == tx.txid
            with pytest.raises(DoubleSpend) as ei:
                await c.submit(conflict)
            assert ei.value.reason == Reason.DOUBLE_SPEND
            height, block_hash = await c.wait_final(txid, timeout_s=30)
            assert height >= 1
            info = await c.get_transaction(txid)
            assert info.height == height and info.block_hash == block_hash
            assert len(info.commit.signatures) == 1
            total_before, _, _ = await c.balance(node.address)
            status_before = await c.status()

        started = time.monotonic()
        assert node.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        assert "Node stopped" in node.log()

        node.start()
        await node.wait_ready()
        async with node.client() as c:
            status = await c.status()
            assert status.height >= status_before.height
            total_after, _, _ = await c.balance(node.address)
            # the dev wallet also receives every block reward; it never loses coins
            assert total_after >= total_before
            assert await c.get_transaction(txid)
    assert node.stop() == 0


async def test_full_mempool_rejects_then_evicts_for_higher_fee(dev_node):
    # one block per 15 s: the pool fills up before the next block
    node = dev_node(mempool={"max_txs": 3}, consensus={"block_interval_ms": 15_000})
    node.start()
    async with asyncio.timeout(90):
        await node.wait_ready()
        async with node.client() as c:
            coins = await _coins(c, node)
            assert len(coins) >= 1
            op, amount = await _genesis_coin(c, node)
            # split the genesis coin into several coins first
            split = build_transfer(
                node.params,
                node.wallet,
                [op],
                [(node.wallet.address_payload, 10**10)] * 6
                + [(node.wallet.address_payload, amount - 6 * 10**10 - 5_000)],
            )
            await c.submit(split)
            # the first block (immediately after start) was already produced; wait for the next
            await c.wait_final(split.txid, timeout_s=40)
            outs = [OutPoint(split.txid, i) for i in range(6)]
            for o in outs[:3]:
                await c.submit(_pay(node, o, 10**10, fee=1_000))
            with pytest.raises(MempoolFull) as ei:
                await c.submit(_pay(node, outs[3], 10**10, fee=1_000))
            assert ei.value.reason == Reason.MEMPOOL_FULL
            rich = _pay(node, outs[4], 10**10, fee=500_000)
            assert await c.submit(rich) == rich.txid
            st = await c.status()
            assert st.mempool_size == 3
    node.stop()


def _replayed_commitment(home) -> tuple[int, bytes, bytes]:
    """Replay every stored block into a fresh memory store; return (height, stored, replayed)."""
    from timecoin.core.params import ChainParams
    from timecoin.genesis import load_genesis
    from timecoin.node.chainstate import ChainState
    from timecoin.rules.manager import PluggyRules, build_plugin_manager
    from timecoin.storage.backends import open_store
    from timecoin.storage.chainstore import ChainStore
    from timecoin.wire.codec import decode_block

    params = ChainParams.for_network("devnet")
    genesis = load_genesis(home / "genesis.json")
    pm = build_plugin_manager()
    stored = ChainState(
        params, genesis, ChainStore(open_store("leveldb", home / "data", {}, pm)), PluggyRules(pm)
    )
    replay = ChainState(
        params, genesis, ChainStore(open_store("memory", home / "mem", {}, pm)), PluggyRules(pm)
    )
    for h in range(1, stored.height + 1):
        block = decode_block(stored.store.get_block_bytes(h), params.network)
        result = replay.validate(block, block.header.time_ms)
        replay.commit(block, stored.store.get_block_bytes(h), result, stored.seen_commit(h))
    h = MuHash3072()
    for op, coin in stored.store.iter_all_coins():
        h.insert(coin_element(op, coin))
    assert h.digest() == stored.tip_info().utxo_commitment
    out = (stored.height, stored.tip_info().utxo_commitment, replay.tip_info().utxo_commitment)
    stored.store.close()
    return out


async def test_kill_9_during_burst_then_replay_matches(dev_node):
    node = dev_node(consensus={"block_interval_ms": 200})
    node.start()
    async with asyncio.timeout(120):
        await node.wait_ready()
        async with node.client() as c:
            op, amount = await _genesis_coin(c, node)
            txids = []
            for _ in range(8):
                tx = _pay(node, op, amount, value=10**8, fee=1_000)
                try:
                    txids.append(await c.submit(tx))
                except TimecoinError:
                    break
                height, _ = await c.wait_final(tx.txid, timeout_s=30)
                op, amount = OutPoint(tx.txid, 1), amount - 10**8 - 1_000
            final_height = (await c.status()).height
        assert node.stop(signal.SIGKILL) == -signal.SIGKILL
    height, stored, replayed = _replayed_commitment(node.home)
    assert height >= final_height
    assert stored == replayed
    # and the node restarts from there
    node.start()
    async with asyncio.timeout(60):
        await node.wait_ready()
        async with node.client() as c:
            for txid in txids:
                assert await c.get_transaction(txid)
    node.stop()


async def test_prometheus_endpoint_reports_the_chain(dev_node):
    import socket
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    node = dev_node(telemetry={"metrics_listen": f"127.0.0.1:{port}"})
    node.start()
    async with asyncio.timeout(60):
        await node.wait_ready()
        await asyncio.sleep(2.5)

        def scrape() -> dict[str, list]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            return {f.name: f.samples for f in text_string_to_metric_families(text)}

        fams = await asyncio.to_thread(scrape)
        height = fams["timed_chain_height"][0].value
        assert height >= 2
        # every validator has a missed-blocks series from the start, at 0 here
        missed = [s for s in fams["timed_consensus_missed_blocks"] if s.name.endswith("_total")]
        assert len(missed) == 1 and missed[0].value == 0
        assert fams["timed_blocks_committed"][0].value >= 2
        steps = {
            smp.labels["step"]: smp.value
            for smp in fams["timed_consensus_step_duration_seconds"]
            if smp.name.endswith("_count")
        }
        # one validator passes prevote and precommit inside a single engine step, so
        # only the steps seen between events are timed here (all of them on a network)
        assert steps["propose"] >= 2
        # a payment through the API shows up in the submit->final latency histogram
        async with node.client() as c:
            op, amount = await _genesis_coin(c, node)
            tx = _pay(node, op, amount)
            await c.submit(tx)
            await c.wait_final(tx.txid, timeout_s=30)
        fams = await asyncio.to_thread(scrape)
        latency = [s for s in fams["timed_tx_submit_to_final_seconds"] if s.name.endswith("_count")]
        assert latency[0].value == 1
    node.stop()


async def test_bad_input_is_rejected_with_reasons_and_blocks_keep_coming(dev_node):
    """A real process: garbage, oversized, unauthenticated, wrong chain, bad signature, flood."""
    from dataclasses import replace

    import grpc

    from timecoin.api.client import ApiClient
    from timecoin.core.errors import BadSignature, Unauthenticated, WrongChain
    from timecoin.wire.codec import transaction_to_pb

    node = dev_node()
    node.start()
    async with asyncio.timeout(90):
        await node.wait_ready()
        async with node.client() as c:
            start_height = (await c.status()).height
            op, amount = await _genesis_coin(c, node)
            token = (node.home / ".cookie").read_text().strip()
            meta = (("authorization", f"Bearer {token}"),)

            async with grpc.aio.insecure_channel(node.target) as ch:
                raw = ch.unary_unary("/timecoin.wallet.v1.WalletService/SubmitTransaction")
                for payload, code, reason in [
                    (b"\xff\xff\xff garbage", grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED"),
                    (b"\x0a" + b"\xff" * 2_000_000, grpc.StatusCode.RESOURCE_EXHAUSTED, None),
                ]:
                    with pytest.raises(grpc.aio.AioRpcError) as ei:
                        await raw(payload, metadata=meta)
                    assert ei.value.code() == code, ei.value
                    if reason is not None:
                        trailers = dict(ei.value.trailing_metadata() or ())
                        assert trailers.get("timecoin-reason") == reason

            tx = _pay(node, op, amount)
            async with ApiClient(node.target) as anon:  # no cookie
                with pytest.raises(Unauthenticated):
                    await anon.submit(tx)

            other_chain = replace(node.params, chain_id="timecoin-devnet-other")
            from timecoin.txbuilder import build_transfer as bt

            wrong = bt(
                other_chain,
                node.wallet,
                [op],
                [(OTHER, 10**8), (node.wallet.address_payload, amount - 10**8 - 1000)],
            )
            with pytest.raises(WrongChain):
                await c.submit(wrong)

            forged = transaction_to_pb(tx)
            forged.signatures[0] = bytes(64 - 1) + b"\x01"
            with pytest.raises(BadSignature):
                await c.submit(forged)

            # a flood of junk through the streaming method: one typed result each
            junk = [
                transaction_to_pb(_pay(node, OutPoint(bytes([i % 256]) * 32, i), 10**9))
                for i in range(2_000)
            ]

            async def batches():
                for i in range(0, len(junk), 500):
                    yield junk[i : i + 500]

            results = []
            async for part in c.submit_stream(batches()):
                results.extend(part)
            assert len(results) == len(junk)
            assert all(err is not None and err.reason == Reason.MISSING_INPUT for _, err in results)

            # and the chain went on the whole time
            await asyncio.sleep(2.0)
            assert (await c.status()).height >= start_height + 2
            assert await c.submit(tx) == tx.txid  # the honest payment still goes through
    node.stop()


async def test_backup_while_running_then_reindex_and_restore(dev_node, tmp_path):
    import subprocess
    import sys

    node = dev_node()
    node.start()

    def cli(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "timecoin.cli", *args, "--home", str(node.home)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    backup_dir = tmp_path / "backup"
    async with asyncio.timeout(120):
        await node.wait_ready()
        async with node.client() as c:
            op, amount = await _genesis_coin(c, node)
            tx = _pay(node, op, amount)
            await c.submit(tx)
            await c.wait_final(tx.txid, timeout_s=30)
            out = await asyncio.to_thread(cli, "backup", "--out", str(backup_dir))
            backed_up = int(out.split("height:")[1].split()[0])
            assert "0 peers" in await asyncio.to_thread(cli, "peers")
            assert "no such ban" in await asyncio.to_thread(cli, "unban", "10.1.2.3")
            await asyncio.sleep(2.5)  # the node keeps committing after the snapshot
            assert (await c.status()).height > backed_up
    assert node.stop() == 0

    out = await asyncio.to_thread(cli, "reindex")
    assert "matches" in out
    out = await asyncio.to_thread(cli, "restore", "--from", str(backup_dir))
    assert f"restored height {backed_up}" in out
    # the double-sign guard was kept, not rolled back with the store
    assert (node.home / "data" / "priv_validator_state.json").exists()

    node.start()
    async with asyncio.timeout(60):
        await node.wait_ready()
        async with node.client() as c:
            assert (await c.status()).height == backed_up
            assert await c.get_transaction(tx.txid)
    node.stop()


async def test_a_block_with_many_coins_is_hashed_in_the_workers(dev_node):
    # 64 coins or more in a block go to the hashing workers (workers.MIN_REMOTE_ELEMENTS),
    # whose products then cross into the compiled chain state: the path the small
    # blocks of the other tests never take.
    node = dev_node()
    cfg_path = node.home / "config.toml"
    cfg = tomllib.loads(cfg_path.read_text())
    cfg["worker_processes"] = 1
    cfg_path.write_text(tomli_w.dumps(cfg))
    node.start()
    async with asyncio.timeout(90):
        await node.wait_ready()
        async with node.client() as c:
            op, amount = await _genesis_coin(c, node)
            outputs = [(bytes([i]) * 20, 10**6) for i in range(1, 101)]
            change = amount - 100 * 10**6 - 100_000
            tx = build_transfer(
                node.params,
                node.wallet,
                [op],
                [*outputs, (node.wallet.address_payload, change)],
            )
            await c.submit(tx)
            height, _ = await c.wait_final(tx.txid, timeout_s=30)
            status = await c.status()
            assert status.height >= height
    log = node.log()
    (line,) = [ln for ln in log.splitlines() if f"Block produced height={height} " in ln]
    assert " txs=2 " in line  # the coinbase and the payment: 103 coins
    assert node.stop() == 0, log
