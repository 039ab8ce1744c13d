"""Node benchmark: signed transactions through gRPC into a real `timed serve --dev` process.

Prints, in one run:
- raw ECDSA verifies/s on one core (the baseline) and the ratio finalized tx/s : verifies/s
  (target >= 0.5: a finalized transaction costs at most about two signature checks of CPU);
- finalized tx/s, p50/p99 submit->final latency, node RSS, node CPU per finalized tx;
- node RSS per 100K UTXOs: the slope between a UTXO set of a third of ``--utxos`` and
  one of ``--utxos`` coins (the first third also fills fixed-size buffers, printed apart).

Usage: python bench/node.py [--txs 20000] [--utxos 300000] [--clients 4] [--batch 500]
The node runs in its own process (2 cores here: it shares them with this client,
which also signs the transactions before the timed phase).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import tomli_w

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fan_out, free_port, payments, push_load, raw_verifies_per_s, rss_mb  # noqa: E402

from timecoin.api.client import ApiClient
from timecoin.core.params import ChainParams
from timecoin.keyfile import read_key

ROOT = Path(__file__).resolve().parents[1]


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
            # RSS is read at two UTXO-set sizes: the slope between them is the
            # memory a coin costs; the first step also fills the fixed-size
            # buffers (LevelDB memtables, caches, the pool's dedup windows).
            t0 = time.perf_counter()
            first = max(ns.txs, ns.utxos // 3)
            all_coins = await fan_out(c, params, wallet, first)
            await asyncio.sleep(3 * ns.block_ms / 1000)  # let the pool drain and blocks settle
            rss_first = rss_mb(node.proc.pid)
            if ns.utxos > first:
                await fan_out(c, params, wallet, ns.utxos - first)
                await asyncio.sleep(3 * ns.block_ms / 1000)
            total_coins = max(ns.utxos, first)
            rss_coins = rss_mb(node.proc.pid)
            print(f"prepared {total_coins:,} coins in {time.perf_counter() - t0:.1f} s")
            txs = payments(params, wallet, all_coins[: ns.txs])
            clients = [node.client() for _ in range(ns.clients)]
            try:
                res = await push_load(
                    clients,
                    c,
                    txs,
                    batch=ns.batch,
                    timeout_s=ns.timeout,
                    node_pids=[node.proc.pid],
                )
            finally:
                for cl in clients:
                    await cl.close()
            rss_peak = rss_mb(node.proc.pid)
        res.report(verifies, len(txs))
        print("  (target >= 0.5: a finalized tx costs at most about two signature checks of CPU)")
        print(
            f"node RSS: start {rss_base:.0f} MB, with coins {rss_coins:.0f} MB, peak {rss_peak:.0f} MB"
        )
        print(
            f"RSS above baseline, first {first:,} UTXOs:     {rss_first - rss_base:10.1f} MB   "
            "(fills fixed-size buffers: 16 MB memtable, caches)"
        )
        if total_coins > first:
            slope = (rss_coins - rss_first) / (total_coins - first) * 100_000
            print(
                f"RSS per 100K UTXOs ({first:,} -> {total_coins:,}):   {slope:10.1f} MB   (target <= 10)"
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=20_000)
    ap.add_argument(
        "--utxos",
        type=int,
        default=300_000,
        help="UTXO-set size for the RSS figure (slope from a third of it)",
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--block-ms", type=int, default=1_000)
    ap.add_argument("--timeout", type=float, default=120.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
