"""Node benchmark: signed transactions through gRPC into a real `timed serve --dev` process.

The payments are 1-in-1-out, each to its own address (as payments from many users are), and
spend the oldest coins of the UTXO set.

Prints, in one run:
- raw ECDSA verifies/s on one core (the baseline: best of five rounds, measured before the
  node starts and again after each load, the higher reading used) and the ratio
  finalized tx/s : verifies/s (target >= 0.5: a finalized transaction costs at most about
  two signature checks of CPU);
- finalized tx/s, p50/p99 submit->final latency, node RSS, node CPU per finalized tx, first
  at saturation (``--txs`` sent as fast as the node accepts them), then under a steady
  paced load (``--rate`` tx/s), where latency is the node's own rather than queueing;
- how busy the machine's cores were during each load, and how long the node's threads
  waited for a core (``/proc/<tid>/schedstat``): a thread holding the interpreter lock
  while it waits stalls its whole process;
- node RSS per 100K UTXOs: RSS is read after the first quarter of ``--utxos`` coins and
  then at every eighth, and the slope fitted over the readings of the second half (the
  first half also fills fixed-size buffers: the 64 MiB memtable, the coin and block caches;
  with 1,000,000 coins the readings at 250K and 375K still swing by 30 MB between runs).

Usage: python bench/node.py [--txs 100000] [--utxos 1000000] [--rate 4000] [--clients 8]
                            [--block-ms 500]
The node runs in its own process (2 cores here: it shares them with this client,
which also signs the transactions before the timed phase).

Blocks every 500 ms by default, not the devnet's 1 s: the saturation figure is meant to
measure the node's CPU, and at 1 s the chain's own limit binds first (2 MB blocks hold
about 9,170 one-input payments, so 9,170 tx/s at most, whatever the CPU). The run prints
that chain limit for the interval it uses; ``--block-ms 1000`` shows the devnet default.
The throughput is counted from the first submission to the last finalization, tail
included: ``--txs`` is large enough (100,000) that the last block's wait is a small part.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
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
from common import (  # noqa: E402
    add_load_args,
    fan_out,
    free_port,
    load_phase,
    payments,
    raw_verifies_per_s,
    rss_mb,
)

from timecoin.api.client import ApiClient
from timecoin.core.block import TX_FRAMING_BYTES
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

    def code(self) -> str:
        """What the node runs: compiled, source or stale (its "Node starting" line)."""
        found = re.search(r"Node starting .*\bcode=(\w+)", (self.home / "node.log").read_text())
        return found.group(1) if found else "unknown"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def chain_limit(params: ChainParams, txs: list, block_ms: int) -> str:
    """Describe the most payments per second the chain's block limits allow at *block_ms*."""
    size = sum(t.ByteSize() for t in txs) / len(txs) + TX_FRAMING_BYTES
    per_block = min(int(params.max_block_bytes // size), params.max_block_txs - 1)
    return (
        f"  chain limit at {block_ms} ms blocks: {per_block * 1000 / block_ms:,.0f} tx/s "
        f"({per_block:,} payments of {size:.0f} bytes per {params.max_block_bytes:,}-byte block; "
        "a node can only go slower)"
    )


async def settled_rss(pid: int, block_ms: int) -> float:
    """RSS once the pool has drained into blocks (the smallest of a few readings)."""
    await asyncio.sleep(3 * block_ms / 1000)
    readings = []
    for _ in range(3):
        readings.append(rss_mb(pid))
        await asyncio.sleep(block_ms / 1000)
    return min(readings)


async def run(ns: argparse.Namespace) -> None:
    verifies = raw_verifies_per_s()
    tmp = Path(tempfile.mkdtemp(prefix="timed-bench-node-"))
    node = Node(tmp / "home", ns.block_ms)
    try:
        await node.ready()
        params = ChainParams.for_network("devnet")
        wallet = read_key(node.home / "dev_wallet.json")
        rss_base = rss_mb(node.proc.pid)
        print(
            f"node code: {node.code()}  (compiled with mypyc; TIMED_PURE_PYTHON=1 runs the source)"
        )
        async with node.client() as c:
            # RSS is read at several UTXO-set sizes: the slope across the second
            # half is the memory a coin costs; the first half also fills the
            # fixed-size buffers (LevelDB memtables, caches, the pool's dedup windows).
            t0 = time.perf_counter()
            paced = int(ns.rate * ns.rate_seconds) if ns.rate > 0 else 0
            step = max(ns.txs + paced, ns.utxos // 4)  # the payments spend these coins
            more = max(1, ns.utxos // 8)
            all_coins, change = await fan_out(c, params, wallet, step)
            points = [(step, await settled_rss(node.proc.pid, ns.block_ms))]
            while points[-1][0] + more <= ns.utxos:
                _, change = await fan_out(c, params, wallet, more, change)
                points.append((points[-1][0] + more, await settled_rss(node.proc.pid, ns.block_ms)))
            total_coins, rss_coins = points[-1]
            fitted = [p for p in points if p[0] >= total_coins // 2]
            if len(fitted) < 3:
                fitted = points
            print(f"prepared {total_coins:,} coins in {time.perf_counter() - t0:.1f} s")
            print(
                "node RSS by UTXO-set size: "
                + ", ".join(f"{n // 1000}K: {r:.0f} MB" for n, r in points)
            )
            txs = payments(params, wallet, all_coins[: ns.txs])
            paced_txs = payments(params, wallet, all_coins[ns.txs : ns.txs + paced])
            clients = [node.client() for _ in range(ns.clients)]
            try:
                pids = [node.proc.pid]
                title = f"saturation: {len(txs):,} txs sent as fast as the node accepts them"
                await load_phase(
                    title, clients, c, txs, ns, node_pids=pids, verifies=verifies, paced=False
                )
                print(
                    "  (target >= 0.5: a finalized tx costs at most about two signature checks of CPU)"
                )
                print(chain_limit(params, txs, ns.block_ms))
                if paced_txs:
                    await asyncio.sleep(3 * ns.block_ms / 1000)
                    title = (
                        f"steady load: {ns.rate:,.0f} tx/s offered for {ns.rate_seconds:.0f} s "
                        f"({len(paced_txs):,} txs, paced: latency below saturation)"
                    )
                    await load_phase(
                        title,
                        clients,
                        c,
                        paced_txs,
                        ns,
                        node_pids=pids,
                        verifies=verifies,
                        paced=True,
                    )
            finally:
                for cl in clients:
                    await cl.close()
            rss_after = rss_mb(node.proc.pid)
        print(
            f"node RSS: start {rss_base:.0f} MB, with coins {rss_coins:.0f} MB, after the load {rss_after:.0f} MB"
        )
        start, rss_start = fitted[0]
        print(
            f"RSS above baseline at {start:,} UTXOs:       {rss_start - rss_base:10.1f} MB   "
            "(fills fixed-size buffers: 64 MiB memtable, coin and block caches)"
        )
        if len(fitted) >= 2:
            # Least-squares slope over the readings: single readings swing by
            # tens of MB as memtables fill and flush and freed blocks return.
            xs = [n for n, _ in fitted]
            ys = [r for _, r in fitted]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
                (x - mx) ** 2 for x in xs
            )
            print(
                f"RSS per 100K UTXOs ({fitted[0][0]:,} -> {total_coins:,}, fit):"
                f"{slope * 100_000:8.1f} MB   (target <= 10)"
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
    ap.add_argument("--txs", type=int, default=100_000)
    ap.add_argument(
        "--utxos",
        type=int,
        default=1_000_000,
        help="UTXO-set size for the RSS figure (read every quarter of it; slope fitted)",
    )
    ap.add_argument("--clients", type=int, default=8, help="streams submitting at once")
    ap.add_argument("--block-ms", type=int, default=500, help="block interval (devnet: 1000)")
    add_load_args(ap, rate=4_000, paced_batch=50)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
