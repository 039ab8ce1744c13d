"""Local-network benchmark: 4 validators on this machine under a load of signed transactions.

Starts `timed testnet --validators 4` nodes as real processes, funds coins from
the faucet, then pushes 1-in-1-out payments through all four client APIs at
once and prints finalized tx/s, p50/p99 submit->final latency, blocks/min,
rounds per height and RSS per node, with raw ECDSA verifies/s of this run as
the baseline. All nodes and this client share the machine's cores.

Two phases: saturation (``--txs`` sent as fast as the nodes accept them: the
throughput figure) and a steady load (``--rate`` tx/s for ``--rate-seconds``,
evenly paced: the latency figure, as CometBFT's QA measures latency below the
saturation point rather than in a queue that only grows).

Usage: python bench/localnet.py [--txs 20000] [--rate 2000] [--block-ms 1000]
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
from pathlib import Path

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
from timecoin.config import load_config
from timecoin.core.params import ChainParams
from timecoin.keyfile import read_key
from timecoin.testnet import write_testnet

ROOT = Path(__file__).resolve().parents[1]


def start_nodes(configs: list[Path], tmp: Path) -> list[subprocess.Popen[bytes]]:
    procs = []
    for i, cfg in enumerate(configs):
        log = open(tmp / f"node{i + 1}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "timecoin.cli", "--config", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
    return procs


async def run(
    ns: argparse.Namespace,
    tmp: Path,
    base: int,
    configs: list[Path],
    procs: list,
    verifies: float,
) -> None:
    cfg0 = load_config(configs[0])
    params = ChainParams.for_network(cfg0.network.value, cfg0.chain_id)
    for _ in range(200):
        if all((tmp / f"node{i + 1}" / ".cookie").exists() for i in range(ns.validators)):
            break
        await asyncio.sleep(0.25)
    clients = [
        ApiClient.from_cookie(f"127.0.0.1:{base + 2 * i + 1}", tmp / f"node{i + 1}" / ".cookie")
        for i in range(ns.validators)
    ]
    for _ in range(200):
        try:
            hs = [(await c.status()).height for c in clients]
            if min(hs) >= 1:
                break
        except Exception:
            pass
        await asyncio.sleep(0.25)
    faucet = read_key(tmp / "faucet.json")
    t0 = time.perf_counter()
    paced = int(ns.rate * ns.rate_seconds) if ns.rate > 0 else 0
    coins, _ = await fan_out(clients[0], params, faucet, ns.txs + paced)
    print(f"prepared {len(coins):,} coins in {time.perf_counter() - t0:.1f} s")
    await asyncio.sleep(2 * ns.block_ms / 1000)
    txs = payments(params, faucet, coins[: ns.txs])
    paced_txs = payments(params, faucet, coins[ns.txs :])
    pids = [p.pid for p in procs]
    h0 = (await clients[0].status()).height
    t_start = time.perf_counter()
    title = f"saturation: {len(txs):,} txs sent as fast as the nodes accept them"
    res = await load_phase(
        title, clients, clients[0], txs, ns, node_pids=pids, verifies=verifies, paced=False
    )
    elapsed = time.perf_counter() - t_start
    h1 = (await clients[0].status()).height
    print(f"blocks/min:                                  {(h1 - h0) / elapsed * 60:10.1f}")
    rounds = res.rounds or [0]
    print(
        f"rounds/height (mean, max):                   {1 + sum(rounds) / len(rounds):10.2f}, {1 + max(rounds)}"
    )
    print(
        "RSS per node (MB):                           "
        + ", ".join(f"{rss_mb(p.pid):.0f}" for p in procs)
    )
    if paced_txs:
        await asyncio.sleep(3 * ns.block_ms / 1000)
        title = (
            f"steady load: {ns.rate:,.0f} tx/s offered for {ns.rate_seconds:.0f} s "
            f"({len(paced_txs):,} txs, paced; target p50 <= block interval + 300 ms = "
            f"{ns.block_ms + 300} ms)"
        )
        await load_phase(
            title, clients, clients[0], paced_txs, ns, node_pids=pids, verifies=verifies, paced=True
        )
    for c in clients:
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--txs", type=int, default=20_000)
    ap.add_argument("--block-ms", type=int, default=1_000)
    add_load_args(ap, rate=2_000, paced_batch=25, rate_seconds=20.0)
    ns = ap.parse_args()
    verifies = raw_verifies_per_s()  # before the nodes start; again after each load (the higher)
    tmp = Path(tempfile.mkdtemp(prefix="timed-bench-localnet-"))
    base = free_port() // 2 * 2
    configs = write_testnet(tmp, ns.validators, base_port=base, block_interval_ms=ns.block_ms)
    procs = start_nodes(configs, tmp)
    try:
        asyncio.run(run(ns, tmp, base, configs, procs, verifies))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)


if __name__ == "__main__":
    main()
