"""Node benchmark: signed transactions through gRPC into a real `timed serve --dev` process.

Prints, in one run:
- raw ECDSA verifies/s on one core (the baseline) and the ratio finalized tx/s : verifies/s
  (target >= 0.5: a finalized transaction costs at most about two signature checks of CPU);
- finalized tx/s, p50/p99 submit->final latency, node RSS;
- node RSS per 100K UTXOs above its baseline.

Usage: python bench/node.py [--txs 20000] [--clients 4] [--batch 500]
The node runs in its own process (2 cores here: it shares them with this client,
which also signs the transactions before the timed phase).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import tomli_w

from timecoin.api.client import ApiClient
from timecoin.core.address import encode_address
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.types import Network, OutPoint
from timecoin.keyfile import read_key
from timecoin.txbuilder import build_transfer
from timecoin.wire.codec import transaction_to_pb

ROOT = Path(__file__).resolve().parents[1]
FANOUT = 900  # outputs per split transaction (< max 1000 outputs, < 100 KB)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def raw_verifies_per_s(n: int = 5000) -> float:
    from coincurve import PublicKey
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    key = KeyPair.generate()
    pub = PublicKey(key.pubkey)
    items = []
    for _ in range(n):
        d = os.urandom(32)
        items.append((cdata_to_der(deserialize_compact(key.sign(d))), d))
    t = time.perf_counter()
    for der, d in items:
        pub.verify(der, d, hasher=None)
    return n / (time.perf_counter() - t)


class Node:
    def __init__(self, home: Path, block_ms: int) -> None:
        self.home = home
        self.port = free_port()
        subprocess.run(
            [sys.executable, "-m", "timecoin.cli", "init", "--dev", "--home", str(home)],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        cfg = tomllib.loads((home / "config.toml").read_text())
        cfg["api"]["listen"] = f"127.0.0.1:{self.port}"
        cfg["p2p"]["listen"] = f"127.0.0.1:{free_port()}"
        cfg.setdefault("consensus", {})["block_interval_ms"] = block_ms
        cfg.setdefault("mempool", {})["max_txs"] = 200_000
        (home / "config.toml").write_text(tomli_w.dumps(cfg))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "timecoin.cli", "serve", "--dev", "--home", str(home)],
            stdout=open(home / "node.log", "wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,  # noqa: SIM115
        )

    def client(self) -> ApiClient:
        return ApiClient.from_cookie(f"127.0.0.1:{self.port}", self.home / ".cookie")

    async def ready(self) -> None:
        for _ in range(150):
            if (self.home / ".cookie").exists():
                try:
                    async with self.client() as c:
                        if (await c.status()).height >= 1:
                            return
                except Exception:
                    pass
            await asyncio.sleep(0.2)
        raise RuntimeError("node did not start:\n" + (self.home / "node.log").read_text())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


async def fan_out(
    c: ApiClient, params: ChainParams, wallet: KeyPair, n: int
) -> list[tuple[OutPoint, int]]:
    """Split the dev wallet's coin into *n* coins (two levels of FANOUT-way splits)."""
    addr = encode_address(wallet.address_payload, Network.TEST)
    coins = (await c.list_unspent(addr)).unspent
    big = max(coins, key=lambda u: u.amount)
    op, amount = OutPoint(big.out_point.txid, big.out_point.index), big.amount
    level1 = -(-n // FANOUT)
    each1 = amount // (level1 + 1)
    tx = build_transfer(params, wallet, [op], [(wallet.address_payload, each1)] * level1)
    await c.submit(tx)
    await c.wait_final(tx.txid, timeout_s=60)
    coins_out: list[tuple[OutPoint, int]] = []
    splits = []
    for i in range(level1):
        k = min(FANOUT, n - i * FANOUT)
        each2 = (each1 - 200_000) // k
        splits.append(
            build_transfer(
                params, wallet, [OutPoint(tx.txid, i)], [(wallet.address_payload, each2)] * k
            )
        )
        coins_out += [(OutPoint(splits[-1].txid, j), each2) for j in range(k)]
    for s in splits:
        await c.submit(s)
    for s in splits:
        await c.wait_final(s.txid, timeout_s=120)
    return coins_out


async def run(ns: argparse.Namespace) -> None:
    verifies = raw_verifies_per_s()
    tmp = Path(tempfile.mkdtemp(prefix="timed-bench-node-"))
    node = Node(tmp / "home", ns.block_ms)
    try:
        await node.ready()
        params = ChainParams.for_network("devnet")
        wallet = read_key(node.home / "dev_wallet.json")
        rss_base = rss_mb(node.proc.pid)
        async with node.client() as c:
            t0 = time.perf_counter()
            all_coins = await fan_out(c, params, wallet, max(ns.txs, ns.utxos))
            print(f"prepared {len(all_coins):,} coins in {time.perf_counter() - t0:.1f} s")
            await asyncio.sleep(3 * ns.block_ms / 1000)  # let the pool drain and blocks settle
            rss_coins = rss_mb(node.proc.pid)
            coins = all_coins[: ns.txs]
            dest = KeyPair.generate().address_payload
            txs = [
                transaction_to_pb(build_transfer(params, wallet, [op], [(dest, amt - 1_000)]))
                for op, amt in coins
            ]
            submitted: dict[bytes, float] = {}
            final: dict[bytes, float] = {}
            rejected = 0
            done = asyncio.Event()
            chunks = [txs[i :: ns.clients] for i in range(ns.clients)]

            async def submit(chunk: list) -> None:
                nonlocal rejected

                async def batches():
                    for i in range(0, len(chunk), ns.batch):
                        b = chunk[i : i + ns.batch]
                        now = time.perf_counter()
                        for m in b:
                            submitted[_txid(m)] = now
                        yield b

                async for results in c.submit_stream(batches()):
                    rejected += sum(1 for _, err in results if err is not None)

            watcher = asyncio.create_task(_watch_blocks(c, submitted, final, len(txs), done))
            start = time.perf_counter()
            await asyncio.gather(*(submit(ch) for ch in chunks))
            accept_s = time.perf_counter() - start
            try:
                async with asyncio.timeout(ns.timeout):
                    await done.wait()
            except TimeoutError:
                pass
            watcher.cancel()
            end = max(final.values(), default=time.perf_counter())
            rss_peak = rss_mb(node.proc.pid)
        lat = sorted(final[t] - submitted[t] for t in final)
        n_final = len(final)
        tps = n_final / (end - start) if n_final else 0.0
        print(f"raw ECDSA verifies/s (1 core, this run):    {verifies:10,.0f}")
        print(
            f"submitted {len(txs):,} txs in {accept_s:.2f} s ({len(txs) / accept_s:,.0f} tx/s accepted), rejected {rejected}"
        )
        print(f"finalized tx/s:                              {tps:10,.0f}   ({n_final:,} final)")
        if lat:
            print(
                f"submit->final latency p50 / p99:             {statistics.median(lat) * 1000:7.0f} / {lat[int(len(lat) * 0.99) - 1] * 1000:.0f} ms"
            )
        print(
            f"ratio finalized tx/s : verifies/s            {tps / verifies:10.3f}   (target >= 0.5)"
        )
        print(
            f"node RSS: start {rss_base:.0f} MB, with coins {rss_coins:.0f} MB, peak {rss_peak:.0f} MB"
        )
        print(
            f"RSS per 100K UTXOs above baseline:            {(rss_coins - rss_base) / len(all_coins) * 100_000:10.1f} MB   (target <= 10)"
        )
    except BaseException:
        print((node.home / "node.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if node.proc.poll() is None:
            node.stop()
        else:
            print(f"node exited with {node.proc.returncode}:", file=sys.stderr)
            print((node.home / "node.log").read_text()[-4000:], file=sys.stderr)
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


def _txid(m) -> bytes:
    import hashlib

    return hashlib.sha256(m.body_bytes).digest()


async def _watch_blocks(
    c: ApiClient, submitted: dict, final: dict, total: int, done: asyncio.Event
) -> None:
    import hashlib

    async for resp in c.subscribe_blocks(include_transactions=True):
        now = time.perf_counter()
        block = resp.block if hasattr(resp, "block") else resp
        for tx in block.txs:
            txid = hashlib.sha256(tx.body_bytes).digest()
            if txid in submitted and txid not in final:
                final[txid] = now
        if len(final) >= total:
            done.set()
            return


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=20_000)
    ap.add_argument("--utxos", type=int, default=100_000, help="coins created for the RSS figure")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--block-ms", type=int, default=1_000)
    ap.add_argument("--timeout", type=float, default=120.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
