"""Signatures of submitted transactions checked in worker processes (timecoin/node/sigprocs.py).

The process path must give every transaction the verdict and the reason the
thread path gives, and a node whose workers die keeps admitting on threads.
"""

import asyncio
import dataclasses

from dependency_injector import providers

from timecoin.container import NodeContainer
from timecoin.core.genesis import genesis_hash
from timecoin.core.keys import KeyPair
from timecoin.core.tx import signatures_valid
from timecoin.core.types import OutPoint, TxBody, TxIn, TxOut
from timecoin.node.sigprocs import SignatureProcesses, item_of, verify_items
from timecoin.txbuilder import build_transfer, sign_body
from timecoin.wire.codec import encode_tx_body, make_transaction


def _mixed_txs(home):
    """A valid payment, a forged signature, a key off the curve, a stranger's coin, no signature."""
    params, wallet = home.params, home.wallet
    coin = OutPoint(genesis_hash(home.genesis), 0)
    good = build_transfer(params, wallet, [coin], [(b"\x01" * 20, 10**8)])
    forged = dataclasses.replace(
        build_transfer(params, wallet, [coin], [(b"\x02" * 20, 10**8)]),
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
    body = encode_tx_body(dataclasses.replace(stranger.body, memo=b"unsigned"), params.network)
    unsigned = sign_body(body, [], params)
    return [good, forged, bad_key, stranger, unsigned]


def _node(home, processes: int):
    home.config.mempool.signature_processes = processes
    c = NodeContainer(config=providers.Object(home.config), home=providers.Object(home.path))
    c.init_resources()
    return c, c.node()


def _reasons(results):
    return [None if r is None else (r.reason.name, r.details.get("index")) for r in results]


def test_worker_verdicts_equal_check_signatures(dev_home):
    txs = _mixed_txs(dev_home)
    chain_id = dev_home.params.chain_id
    flags = verify_items([item_of(tx, chain_id) for tx in txs])
    assert list(flags) == [signatures_valid(tx, chain_id) for tx in txs] == [1, 0, 0, 1, 0]


def test_admission_through_worker_processes_gives_the_thread_path_reasons(dev_home):
    c, node = _node(dev_home, 1)
    try:
        txs = _mixed_txs(dev_home)
        expected = _reasons([node._precheck(tx) for tx in txs])  # the thread path's checks

        async def main():
            return await node.submit(txs)

        got = _reasons(asyncio.run(main()))
        assert node._sig_procs is not None and node._sig_procs._pool is not None
        # The stranger's signature is fine; its admission fails on ownership.
        assert got[:3] == [None, *expected[1:3]]
        assert expected[1][0] == "BAD_SIGNATURE" and expected[2][0] == "BAD_PUBKEY"
        assert got[3] is not None and got[3][0] not in ("BAD_SIGNATURE", "BAD_PUBKEY")
        assert got[4] == expected[4]
        assert node.mempool.get(txs[0].txid) is not None
    finally:
        node._sig_procs.close()
        c.shutdown_resources()


def test_killed_workers_fall_back_to_threads():
    key = KeyPair.generate()
    digest = b"\x07" * 32
    items = [(digest, (key.pubkey,), (key.sign(digest),)), (digest, (key.pubkey,), (b"\x01" * 64,))]

    async def main():
        procs = SignatureProcesses(1)
        try:
            assert await procs.verify(items) == b"\x01\x00"
            assert procs._pool is not None
            for p in list(procs._pool._processes.values()):
                p.kill()
                p.join()
            for _ in range(50):
                if await procs.verify(items) is None:
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
        "from timecoin.node.sigprocs import SignatureProcesses\n"
        "async def main():\n"
        "    procs = SignatureProcesses(1)\n"
        "    assert await procs.verify([(bytes(32), (), ())]) == b'\\x00'\n"
        "    print(*procs._pool._processes, flush=True)\n"
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
