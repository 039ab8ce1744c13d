"""Shared pieces of the node and local-network benchmarks (not a benchmark itself)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from timecoin.api.client import ApiClient
from timecoin.core.address import encode_address
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.types import OutPoint
from timecoin.txbuilder import build_transfer
from timecoin.wire.codec import transaction_to_pb

FANOUT = 900
"""Outputs per split transaction (< 1,000 outputs and < 100 KB)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process *pid* and its live children.

    Children count too: a node checks transaction signatures and hashes its
    blocks' coins in worker processes (``worker_processes``), and their CPU is
    the node's.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid))


def run_queue_seconds(pid: int) -> float:
    """Seconds the live threads of *pid* and its live children spent runnable, waiting for a core.

    The second field of each thread's ``/proc/<pid>/task/<tid>/schedstat``. On a
    machine whose cores are all busy, a node thread that holds the interpreter
    lock while it waits for a core stalls every other thread of its process.
    """
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the thread ended, or no schedstat on this kernel
    except OSError:
        return 0.0
    return total / 1e9 + sum(run_queue_seconds(child) for child in _children(pid))


def busy_cores() -> tuple[int, int]:
    """Return (busy, total) jiffies of all cores from ``/proc/stat`` (idle and iowait idle)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def raw_verifies_per_s(n: int = 5000, rounds: int = 5) -> float:
    """Raw libsecp256k1 ECDSA verifies per second on one core through coincurve.

    The best of *rounds* rounds of *n* verifies, as ``timeit`` reports: on a
    shared machine one round can lose a fifth of its speed to other work, and
    the least disturbed round is what a core can do (the strictest baseline).
    """
    from coincurve import PublicKey
    from coincurve.ecdsa import cdata_to_der, deserialize_compact

    key = KeyPair.generate()
    pub = PublicKey(key.pubkey)
    items = []
    for _ in range(n):
        d = os.urandom(32)
        items.append((cdata_to_der(deserialize_compact(key.sign(d))), d))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for der, d in items:
            pub.verify(der, d, hasher=None)
        best = min(best, time.perf_counter() - t)
    return n / best


async def fan_out(
    c: ApiClient,
    params: ChainParams,
    wallet: KeyPair,
    n: int,
    source: tuple[OutPoint, int] | None = None,
) -> tuple[list[tuple[OutPoint, int]], tuple[OutPoint, int]]:
    """Split a coin of *wallet* into *n* coins (two levels of FANOUT-way splits).

    The coin is *source* or else the wallet's largest listed one; half of it
    is kept as change, returned with the new coins so a next call can split it.
    """
    if source is None:
        addr = encode_address(wallet.address_payload, params.network)
        coins = (await c.list_unspent(addr)).unspent
        big = max(coins, key=lambda u: u.amount)
        source = (OutPoint(big.out_point.txid, big.out_point.index), big.amount)
    op, amount = source
    level1 = -(-n // FANOUT)
    each1 = amount // (2 * level1)
    change = amount - each1 * level1 - 200_000
    tx = build_transfer(
        params,
        wallet,
        [op],
        [(wallet.address_payload, each1)] * level1 + [(wallet.address_payload, change)],
    )
    await c.submit(tx)
    await c.wait_final(tx.txid, timeout_s=60)
    out: list[tuple[OutPoint, int]] = []
    splits = []
    for i in range(level1):
        k = min(FANOUT, n - i * FANOUT)
        each2 = (each1 - 200_000) // k
        splits.append(
            build_transfer(
                params, wallet, [OutPoint(tx.txid, i)], [(wallet.address_payload, each2)] * k
            )
        )
        out += [(OutPoint(splits[-1].txid, j), each2) for j in range(k)]
    for s in splits:
        await c.submit(s)
    for s in splits:
        await c.wait_final(s.txid, timeout_s=120)
    return out, (OutPoint(tx.txid, level1), change)


def payments(params: ChainParams, wallet: KeyPair, coins: list[tuple[OutPoint, int]]) -> list:
    """One signed 1-in-1-out payment per coin, as protobuf messages ready to submit.

    Each pays a different address, as payments from many users do: the node's
    cache of decoded addresses never answers for them (one shared address
    would be decoded once and then always found there).
    """
    salt = os.urandom(16)
    return [
        transaction_to_pb(
            build_transfer(
                params,
                wallet,
                [op],
                [(hashlib.sha256(salt + n.to_bytes(8, "big")).digest()[:20], amt - 1_000)],
            )
        )
        for n, (op, amt) in enumerate(coins)
    ]


@dataclass
class LoadResult:
    submitted: dict[bytes, float] = field(default_factory=dict)
    final: dict[bytes, float] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    """Rejections by reason code."""
    start: float = 0.0
    accept_s: float = 0.0
    blocks: int = 0
    rounds: list[int] = field(default_factory=list)
    node_cpu_s: float = 0.0
    """CPU seconds the node processes used while the load ran (see ``push_load``)."""
    client_cpu_s: float = 0.0
    node_wait_s: float = 0.0
    """Seconds the node's threads waited for a core while the load ran."""
    busy: float = 0.0
    """Share of all the machine's cores busy while the load ran (any process)."""
    load_s: float = 0.0

    @property
    def rejected(self) -> int:
        return sum(self.reasons.values())

    def report(self, verifies: float, total: int) -> float:
        end = max(self.final.values(), default=time.perf_counter())
        n = len(self.final)
        tps = n / (end - self.start) if n else 0.0
        lat = sorted(self.final[t] - self.submitted[t] for t in self.final)
        print(
            f"raw ECDSA verifies/s (1 core, this run):    {verifies:10,.0f}   (best before and after)"
        )
        why = ", ".join(f"{reason} {count:,}" for reason, count in self.reasons.most_common())
        print(
            f"submitted {total:,} txs in {self.accept_s:.2f} s "
            f"({total / self.accept_s:,.0f} tx/s accepted), rejected {self.rejected}"
            + (f" ({why})" if why else "")
        )
        print(f"finalized tx/s:                              {tps:10,.0f}   ({n:,} final)")
        if lat:
            p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
            print(
                f"submit->final latency p50 / p99:             {statistics.median(lat) * 1000:7.0f} / {p99 * 1000:.0f} ms"
            )
        print(f"ratio finalized tx/s : verifies/s            {tps / verifies:10.3f}")
        if n and self.node_cpu_s:
            per_tx = self.node_cpu_s / n * 1e6
            print(
                f"node CPU per finalized tx:                   {per_tx:7.0f} us  "
                f"(= {per_tx * verifies / 1e6:.1f} raw verifies; bench client used "
                f"{self.client_cpu_s:.1f} CPU s of the same 2 cores)"
            )
        if self.load_s and self.busy:
            print(
                f"cores busy (all processes):                  {self.busy * 100:7.0f} %    "
                f"(node threads waited {self.node_wait_s / self.load_s:.2f} s per s for a core)"
            )
        return tps


async def push_load(
    clients: list[ApiClient],
    watch: ApiClient,
    txs: list,
    *,
    batch: int,
    timeout_s: float,
    node_pids: Sequence[int] = (),
    rate: float = 0.0,
) -> LoadResult:
    """Submit *txs* over one stream per client; record submit and finalization times.

    With *rate* 0 every client sends as fast as the node accepts (saturation:
    the figure is throughput, latency is mostly queueing). With *rate* > 0 the
    clients together offer that many tx/s, evenly paced, as CometBFT's load
    tests do: below saturation the latency figure is the node's own.
    CPU used by *node_pids* and by this process between the first submit and
    the last finalization is recorded too.
    """
    res = LoadResult()
    # Txids before the clock starts: the client shares the node's cores, and
    # hashing every body during the load is work the node is not asked to do.
    txids = [hashlib.sha256(m.body_bytes).digest() for m in txs]
    chunks = [txs[i :: len(clients)] for i in range(len(clients))]
    id_chunks = [txids[i :: len(clients)] for i in range(len(clients))]
    cpu0 = [cpu_seconds(p) for p in node_pids]
    wait0 = [run_queue_seconds(p) for p in node_pids]
    busy0, total0 = busy_cores()
    client0 = time.process_time()
    done = asyncio.Event()

    async def watcher() -> None:
        # Txids only: the load generator shares the node's cores, so it does not
        # download and hash every transaction it already knows.
        async for resp in watch.subscribe_blocks(include_txids=True):
            now = time.perf_counter()
            res.blocks += 1
            if resp.block.HasField("last_commit"):
                res.rounds.append(resp.block.last_commit.round)
            for txid in resp.txids:
                if txid in res.submitted and txid not in res.final:
                    res.final[txid] = now
            if len(res.final) + res.rejected >= len(txs):
                done.set()
                return

    per_client = rate / len(clients) if rate > 0 else 0.0

    async def submit(c: ApiClient, chunk: list, ids: list[bytes]) -> None:
        async def batches():
            for i in range(0, len(chunk), batch):
                if per_client:
                    await asyncio.sleep(max(0.0, res.start + i / per_client - time.perf_counter()))
                now = time.perf_counter()
                for txid in ids[i : i + batch]:
                    res.submitted[txid] = now
                yield chunk[i : i + batch]

        async for results in c.submit_stream(batches()):
            res.reasons.update(err.reason.name for _, err in results if err is not None)

    task = asyncio.create_task(watcher())
    res.start = time.perf_counter()
    await asyncio.gather(
        *(submit(c, ch, ids) for c, ch, ids in zip(clients, chunks, id_chunks, strict=True))
    )
    res.accept_s = time.perf_counter() - res.start
    try:
        async with asyncio.timeout(timeout_s):
            await done.wait()
    except TimeoutError:
        pass
    res.node_cpu_s = sum(cpu_seconds(p) - c for p, c in zip(node_pids, cpu0, strict=True))
    res.client_cpu_s = time.process_time() - client0
    res.node_wait_s = sum(run_queue_seconds(p) - w for p, w in zip(node_pids, wait0, strict=True))
    busy1, total1 = busy_cores()
    res.busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    res.load_s = time.perf_counter() - res.start
    task.cancel()
    return res


def add_load_args(ap: Any, *, rate: float, paced_batch: int, rate_seconds: float = 10.0) -> None:
    """The load options both node benchmarks take."""
    ap.add_argument("--batch", type=int, default=500, help="txs per message at saturation")
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument(
        "--rate", type=float, default=rate, help="tx/s offered in the steady phase (0: skip it)"
    )
    ap.add_argument("--rate-seconds", type=float, default=rate_seconds)
    ap.add_argument(
        "--paced-batch", type=int, default=paced_batch, help="txs per message when paced"
    )


async def load_phase(
    title: str,
    clients: list[ApiClient],
    watch: ApiClient,
    txs: list,
    ns: Any,
    *,
    node_pids: Sequence[int],
    verifies: float,
    paced: bool,
) -> LoadResult:
    """Run one phase of load (saturation, or paced at ``ns.rate``) and print its report."""
    print(f"-- {title}")
    res = await push_load(
        clients,
        watch,
        txs,
        batch=ns.paced_batch if paced else ns.batch,
        timeout_s=ns.timeout,
        node_pids=node_pids,
        rate=ns.rate if paced else 0.0,
    )
    # The baseline again, with the load over: a shared machine's cores change
    # speed during a run (one read 20,817 verifies/s at its start, against
    # 25,500-27,000 in the other runs that day), and the faster reading is
    # the stricter baseline.
    res.report(max(verifies, raw_verifies_per_s()), len(txs))
    return res
