"""Worker processes (timecoin/node/workers.py): signature checks and MuHash products.

The process path must give every transaction the verdict and the reason the
thread path gives, every block the commitment the node process computes, and
a node whose workers die keeps admitting on threads and hashing itself.
"""

import asyncio
import time

import pytest
from dependency_injector import providers

from timecoin.container import NodeContainer
from timecoin.core.errors import BadHeight
from timecoin.core.genesis import genesis_hash
from timecoin.core.keys import KeyPair
from timecoin.core.muhash import coin_elements, elements_product
from timecoin.core.signing import tx_sign_digest
from timecoin.core.tx import signatures_valid
from timecoin.core.types import Coin, OutPoint, TxBody, TxIn, TxOut
from timecoin.node.chainstate import ChainState
from timecoin.node.workers import MIN_REMOTE_ELEMENTS, WorkerProcesses, item_of, verify_items
from timecoin.rules.manager import PluggyRules, build_plugin_manager
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import ChainStore
from timecoin.txbuilder import build_transfer, sign_body
from timecoin.wire.codec import encode_tx_body, make_transaction

from .test_chainstate import commit_for, recompute_commitment


def _mixed_txs(home):
    """A valid payment, a forged signature, a key off the curve, a stranger's coin, no signature."""
    params, wallet = home.params, home.wallet
    coin = OutPoint(genesis_hash(home.genesis), 0)
    good = build_transfer(params, wallet, [coin], [(b"\x01" * 20, 10**8)])
    forged = build_transfer(params, wallet, [coin], [(b"\x02" * 20, 10**8)])._replace(
        signatures=good.signatures,  # a valid signature, but of another body
    )
    off_curve = TxBody(
        version=params.tx_version,
        chain_id=params.chain_id,
        inputs=(TxIn(coin, b"\x02" + b"\xff" * 32),),
        outputs=(TxOut(10**8, b"\x03" * 20),),
    )
    bad_key = make_transaction(
        encode_tx_body(off_curve, params.network), [b"\x01" * 64], params.network
    )
    stranger = build_transfer(params, KeyPair.generate(), [coin], [(b"\x04" * 20, 10**8)])
    body = encode_tx_body(stranger.body._replace(memo=b"unsigned"), params.network)
    unsigned = sign_body(body, [], params)
    return [good, forged, bad_key, stranger, unsigned]


def _node(home, processes: int):
    home.config.worker_processes = processes
    c = NodeContainer(config=providers.Object(home.config), home=providers.Object(home.path))
    c.init_resources()
    return c, c.node()


def _reasons(results):
    return [None if r is None else (r.reason.name, r.details.get("index")) for r in results]


def test_worker_verdicts_equal_check_signatures(dev_home):
    txs = _mixed_txs(dev_home)
    chain_id = dev_home.params.chain_id
    flags = verify_items(chain_id, [item_of(tx) for tx in txs])
    assert list(flags) == [signatures_valid(tx, chain_id) for tx in txs] == [1, 0, 0, 1, 0]
    # The worker signs over the chain id it is given: another chain's node refuses them all.
    assert verify_items("timecoin-other-1", [item_of(tx) for tx in txs]) == bytes(5)


def test_admission_through_worker_processes_gives_the_thread_path_reasons(dev_home):
    c, node = _node(dev_home, 1)
    try:
        txs = _mixed_txs(dev_home)
        expected = _reasons([node._precheck(tx) for tx in txs])  # the thread path's checks

        async def main():
            return await node.submit(txs)

        got = _reasons(asyncio.run(main()))
        assert node._workers is not None and node._workers._pool is not None
        # The stranger's signature is fine; its admission fails on ownership.
        assert got[:3] == [None, *expected[1:3]]
        assert expected[1][0] == "BAD_SIGNATURE" and expected[2][0] == "BAD_PUBKEY"
        assert got[3] is not None and got[3][0] not in ("BAD_SIGNATURE", "BAD_PUBKEY")
        assert got[4] == expected[4]
        assert node.mempool.get(txs[0].txid) is not None
    finally:
        c.shutdown_resources()


def test_killed_workers_fall_back_to_threads():
    key = KeyPair.generate()
    body = b"\x07" * 32
    sig = key.sign(tx_sign_digest("c", body))
    items = [(body, (key.pubkey,), (sig,)), (body, (key.pubkey,), (b"\x01" * 64,))]

    async def main():
        procs = WorkerProcesses(1)
        try:
            assert await procs.verify("c", items) == b"\x01\x00"
            assert procs._pool is not None
            for p in procs._pool._procs:
                p.kill()
                p.join()
            for _ in range(50):
                if await procs.verify("c", items) is None:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            procs.close()

    assert asyncio.run(main())


def test_workers_leave_when_the_node_is_killed(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "node.py"
    script.write_text(
        "import asyncio, os, sys\n"
        "from timecoin.node.workers import WorkerProcesses\n"
        "async def main():\n"
        "    procs = WorkerProcesses(1)\n"
        "    assert await procs.verify('c', [(bytes(32), (), ())]) == b'\\x00'\n"
        "    print(*procs._pool.pids, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    asyncio.run(main())\n"
    )
    node = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        (worker,) = (int(p) for p in node.stdout.readline().split())
        os.kill(node.pid, signal.SIGKILL)
        node.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the signature worker outlived its killed node")
    finally:
        node.kill()


def test_a_worker_error_reaches_the_caller_and_the_pool_keeps_working():
    async def main():
        workers = WorkerProcesses(1)
        try:
            pool = await workers._executor(hashing=True)
            with pytest.raises(ValueError, match="multiple of"):
                await pool.call(elements_product, b"\x00" * 5)  # raised in the worker
            assert await pool.call(elements_product, b"") == 1
            assert not workers._broken
        finally:
            workers.close()

    asyncio.run(main())


def test_each_event_loop_gets_its_own_workers():
    workers = WorkerProcesses(1)
    items = [(bytes(32), (), ())]

    async def verify():
        assert await workers.verify("c", items) == b"\x00"
        return workers._pool

    try:
        first = asyncio.run(verify())
        second = asyncio.run(verify())  # the first loop is closed: its pool is replaced
        assert first is not second
        for p in first._procs:
            p.join(10)  # its socket closed, the worker left by itself
            assert p.exitcode == 0
    finally:
        workers.close()


def test_closing_the_workers_answers_waiting_calls_with_none():
    key = KeyPair.generate()
    body = b"\x07" * 32
    items = [(body, (key.pubkey,), (key.sign(tx_sign_digest("c", body)),))] * 20_000

    async def main():
        workers = WorkerProcesses(1)
        waiting = asyncio.ensure_future(workers.verify("c", items))  # about a second of ECDSA
        await asyncio.sleep(0.2)
        workers.close()
        result = await waiting
        assert not workers._broken  # closed, not broken: no warning, no fallback forever
        return result

    assert asyncio.run(main()) is None


def _elements(n: int) -> bytes:
    return coin_elements(
        [
            (
                OutPoint(bytes([i % 251]) * 32, i),
                Coin(1_000 + i, bytes([i % 7]) * 20, i % 5, i % 3 == 0),
            )
            for i in range(n)
        ]
    )


def test_products_in_workers_equal_the_products_here():
    async def main():
        workers = WorkerProcesses(2)
        try:
            few = _elements(MIN_REMOTE_ELEMENTS - 1)
            assert await workers.products([few]) is None  # too few: the caller hashes them
            assert workers._hash_pool is None
            parts = [_elements(MIN_REMOTE_ELEMENTS), _elements(301), b""]  # even, uneven, empty
            got = await workers.products(parts)
            assert got == [elements_product(p) for p in parts]
            assert workers._hash_pool is not None and workers._pool is None
            with pytest.raises(ValueError):
                await workers.products([parts[1][:-1]])  # not whole elements
        finally:
            workers.close()
        assert await workers.products(parts) is None  # closed: nothing new starts
        assert workers._hash_pool is None

    asyncio.run(main())


def test_killed_hashing_workers_leave_the_products_to_the_node():
    async def main():
        workers = WorkerProcesses(1)
        parts = [_elements(200)]
        try:
            assert await workers.products(parts) == [elements_product(parts[0])]
            for p in workers._hash_pool._procs:
                p.kill()
                p.join()
            for _ in range(50):
                if await workers.products(parts) is None:
                    return workers._broken
                await asyncio.sleep(0.05)
            return False
        finally:
            workers.close()

    assert asyncio.run(main())


def _chain(home, path):
    pm = build_plugin_manager()
    kv = open_store("leveldb", path, {}, pm)
    return ChainState(home.params, home.genesis, ChainStore(kv), PluggyRules(pm))


def test_a_block_hashed_in_the_workers_validates_on_a_node_without_them(dev_home, tmp_path):
    built = _chain(dev_home, tmp_path / "a")
    plain = _chain(dev_home, tmp_path / "b")
    try:
        coin = OutPoint(genesis_hash(dev_home.genesis), 0)
        amount = built.store.get_coin(coin).amount
        outputs = [(bytes([i]) * 20, 10**6) for i in range(1, 121)]
        change = amount - 120 * 10**6 - 100_000
        tx = build_transfer(
            dev_home.params,
            dev_home.wallet,
            [coin],
            [*outputs, (dev_home.wallet.address_payload, change)],
        )
        now = int(time.time() * 1000)
        pending = built.draft_block(dev_home.validator.address_payload, now, None, [tx])

        async def hash_in_workers():
            workers = WorkerProcesses(1)
            try:
                return await workers.products((pending.spent_elements, pending.created_elements))
            finally:
                workers.close()

        products = asyncio.run(hash_in_workers())
        assert products is not None
        p = built.finish_block(pending, tuple(products))
        assert p.result.utxo_commitment == built.finish_block(pending).result.utxo_commitment
        result = plain.validate(p.block, now)  # raises BadUtxoCommitment on any difference
        assert result.utxo_commitment == p.result.utxo_commitment
        c = commit_for(dev_home, p.block)
        built.commit(p.block, p.block_bytes, p.result, c)
        plain.commit(p.block, p.block_bytes, result, c)
        assert built.tip_info() == plain.tip_info()
        assert built.tip_info().utxo_commitment == recompute_commitment(built.store)
        with pytest.raises(BadHeight):
            built.finish_block(pending)  # its tip is gone
    finally:
        built.store.close()
        plain.store.close()
