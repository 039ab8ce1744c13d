"""Mempool benchmark: admission, selection, post-block re-check and memory, with baselines.

Figures (one core, same run):
1. raw libsecp256k1 ECDSA verifies/s (coincurve) vs ``Mempool.add`` with full
   validation of 1-input, 2-output signed transactions (one signature each:
   1.0 is the ceiling of the ratio) and with ``sig_ok=True`` (the admission
   cost left once signatures are batch-verified elsewhere);
2. ``select_for_block`` and ``remove_committed`` times on a full pool;
3. eviction churn: adds/s into a full pool where every newcomer pays more;
4. traced Python memory per pending transaction (the txs themselves included).

Usage: python bench/mempool.py [--txs 10000]
Never a pass/fail test: machines are noisy; compare the ratios.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from coincurve import PublicKey
from coincurve.ecdsa import cdata_to_der, deserialize_compact

from timecoin import compiled
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.types import Coin, OutPoint, Transaction
from timecoin.core.utxo import MemoryUtxoView, UtxoChanges
from timecoin.node.mempool import Mempool
from timecoin.txbuilder import build_transfer

PARAMS = ChainParams.for_network("devnet")
NOW = 1_700_000_000_000


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def make_txs(n: int, seed: int = 1) -> tuple[MemoryUtxoView, list[Transaction]]:
    """*n* signed 1-in 2-out transfers with varied fees, and the view funding them."""
    rnd = random.Random(seed)
    key = KeyPair.from_secret(rnd.randbytes(31) + b"\x01")
    created = []
    txs = []
    for i in range(n):
        op = OutPoint(rnd.randbytes(32), 0)
        created.append((op, Coin(50_000_000, key.address_payload, 1)))
        fee = rnd.randrange(1_000, 100_000)
        outs = [(rnd.randbytes(20), 40_000_000), (key.address_payload, 10_000_000 - fee)]
        txs.append(build_transfer(PARAMS, key, [op], outs, memo=b"%d" % i))
    view = MemoryUtxoView()
    view.apply(UtxoChanges((), tuple(created)))
    return view, txs


def bench_verify(n: int) -> float:
    key = KeyPair.generate()
    pub = PublicKey(key.pubkey)
    rnd = random.Random(3)
    items = []
    for _ in range(n):
        d = rnd.randbytes(32)
        items.append((cdata_to_der(deserialize_compact(key.sign(d))), d))
    t = time.perf_counter()
    for der, d in items:
        pub.verify(der, d, hasher=None)
    return rate(n, time.perf_counter() - t)


def bench_add(view: MemoryUtxoView, txs: list[Transaction], sig_ok: bool | None) -> float:
    pool = Mempool(PARAMS, max_txs=len(txs))
    t = time.perf_counter()
    for tx in txs:
        pool.add(tx, view, 2, NOW, sig_ok=sig_ok)
    return rate(len(txs), time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--txs", type=int, default=10_000)
    ns = ap.parse_args()
    n = ns.txs
    view, txs = make_txs(n)

    verifies = bench_verify(n)
    full = bench_add(view, txs, None)
    pre = bench_add(view, txs, True)
    print(f"timecoin code: {compiled.STATE}  (mypyc; TIMED_PURE_PYTHON=1 runs the source)")
    print(f"raw ECDSA verifies/s (coincurve, 1 core):      {verifies:12,.0f}")
    print(f"mempool adds/s, full validation (1 sig/tx):    {full:12,.0f}")
    print(f"ratio adds/s : verifies/s                      {full / verifies:12.3f}   (ceiling 1.0)")
    print(f"mempool adds/s, sig_ok=True (no ECDSA):        {pre:12,.0f}")
    print(f"ratio sig_ok adds/s : verifies/s               {pre / verifies:12.2f}")

    pool = Mempool(PARAMS, max_txs=n)
    for tx in txs:
        pool.add(tx, view, 2, NOW, sig_ok=True)
    t = time.perf_counter()
    block = pool.select_for_block(PARAMS.max_block_bytes - 1024, PARAMS.max_block_txs - 1)
    select_ms = (time.perf_counter() - t) * 1000
    spent = tuple((i.prev_out, view.get_coin(i.prev_out)) for tx in block for i in tx.body.inputs)
    after = view.copy()
    after.apply(UtxoChanges(spent, ()))  # type: ignore[arg-type]
    t = time.perf_counter()
    pool.remove_committed(block, after, 3, NOW + 1)
    remove_ms = (time.perf_counter() - t) * 1000
    print(f"select_for_block from {n:,} pending:  {select_ms:9.1f} ms  ({len(block):,} txs)")
    print(
        f"remove_committed ({len(block):,} in block, {len(pool):,} re-checked): {remove_ms:6.1f} ms"
    )

    # Churn: a full pool of the cheapest half; the dearest half evicts it one by one.
    by_rate = sorted(txs, key=lambda tx: tx.body.outputs[1].amount, reverse=True)
    half = n // 2
    pool = Mempool(PARAMS, max_txs=half, incremental_units_per_kb=0)
    for tx in by_rate[:half]:
        pool.add(tx, view, 2, NOW, sig_ok=True)
    t = time.perf_counter()
    evicted = 0
    for tx in by_rate[half:]:
        try:
            evicted += len(pool.add(tx, view, 2, NOW, sig_ok=True).evicted)
        except Exception:
            pass
    churn = rate(n - half, time.perf_counter() - t)
    print(f"adds/s into a full pool (evicting):            {churn:12,.0f}   ({evicted:,} evicted)")

    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    view2, fresh = make_txs(n, seed=2)
    m1 = tracemalloc.get_traced_memory()[0]
    pool = Mempool(PARAMS, max_txs=n)
    for tx in fresh:
        pool.add(tx, view2, 2, NOW, sig_ok=True)
    m2 = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    encoded = sum(tx.size for tx in fresh) / n
    print(
        f"memory per pending tx: pool indexes {(m2 - m1) / n:,.0f} B, "
        f"tx + its coin objects {(m1 - m0) / n:,.0f} B (encoded {encoded:,.0f} B)"
    )


if __name__ == "__main__":
    main()
