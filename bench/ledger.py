"""Ledger benchmark: prints figures and ratios against raw baselines measured in the same run.

1. raw libsecp256k1 ECDSA verifies/s through coincurve (one core)
   vs full validations/s of 2-input, 2-output transactions against a UTXO view
   (decode from bytes, stateless checks, ownership, fees, 2 signatures).
2. raw plyvel random get/s on N keys (default 1,000,000)
   vs chain-store UTXO get_coin/s on N coins (decode included).

Usage: python bench/ledger.py [--keys 1000000] [--txs 3000]
Never a pass/fail test: machines are noisy; compare the ratios.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import plyvel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import raw_verifies_per_s  # noqa: E402

from timecoin import compiled
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.tx import validate_transaction
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import MemoryUtxoView, UtxoChanges
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import BlockRecord, ChainStore
from timecoin.txbuilder import build_transfer
from timecoin.wire.codec import decode_transaction, encode_transaction


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_tx(n: int) -> float:
    params = ChainParams.for_network("devnet")
    rnd = random.Random(1)
    view = MemoryUtxoView()
    raws = []
    for i in range(n):
        key = KeyPair.from_secret(rnd.randbytes(31) + b"\x01")
        ops = [OutPoint(rnd.randbytes(32), j) for j in range(2)]
        for op in ops:
            view.apply(UtxoChanges((), ((op, Coin(50_000_000, key.address_payload, 1)),)))
        outs = [(rnd.randbytes(20), 40_000_000), (key.address_payload, 59_000_000)]
        raws.append(encode_transaction(build_transfer(params, key, ops, outs, memo=b"%d" % i)))
    t = time.perf_counter()
    for raw in raws:
        tx = decode_transaction(raw, params.network)
        validate_transaction(tx, view, 2, params)
    return rate(n, time.perf_counter() - t)


def bench_storage(n_keys: int, n_gets: int) -> tuple[float, float]:
    tmp = Path(tempfile.mkdtemp(prefix="timed-bench-"))
    try:
        rnd = random.Random(2)
        # raw plyvel: same key and value sizes as the chain store's coin records
        # The same LevelDB options the leveldb plugin opens the chain store with,
        # so the ratio measures the chain store's own overhead only.
        raw = plyvel.DB(
            str(tmp / "raw"),
            create_if_missing=True,
            lru_cache_size=64 * 1024 * 1024,
            bloom_filter_bits=10,
            write_buffer_size=64 * 1024 * 1024,
        )
        keys = [b"U" + rnd.randbytes(32) + b"\x00\x00\x00\x00" for _ in range(n_keys)]
        value = b"\x00" * 37
        for i in range(0, n_keys, 100_000):
            with raw.write_batch() as wb:
                for k in keys[i : i + 100_000]:
                    wb.put(k, value)
        sample = [rnd.choice(keys) for _ in range(n_gets)]
        t = time.perf_counter()
        for k in sample:
            raw.get(k)
        raw_rate = rate(n_gets, time.perf_counter() - t)
        raw.close()

        store = ChainStore(open_store("leveldb", tmp / "chain", {}))
        outpoints = [OutPoint(k[1:33], 0) for k in keys]
        pkh = bytes(20)
        for h, i in enumerate(range(0, n_keys, 100_000)):
            created = tuple((op, Coin(1000, pkh, h)) for op in outpoints[i : i + 100_000])
            store.commit_block(
                BlockRecord(h, rnd.randbytes(32), b"", (), UtxoChanges((), created), b"")
            )
        sample_ops = [rnd.choice(outpoints) for _ in range(n_gets)]
        t = time.perf_counter()
        for op in sample_ops:
            store.get_coin(op)
        store_rate = rate(n_gets, time.perf_counter() - t)
        store.close()
        return raw_rate, store_rate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--gets", type=int, default=200_000)
    ap.add_argument("--txs", type=int, default=3_000)
    ns = ap.parse_args()
    verifies = raw_verifies_per_s(ns.txs * 2)
    txs = bench_tx(ns.txs)
    print(f"timecoin code: {compiled.STATE}  (mypyc; TIMED_PURE_PYTHON=1 runs the source)")
    print(f"raw ECDSA verifies/s (coincurve, 1 core):     {verifies:12,.0f}")
    print(f"tx validations/s (2-in 2-out, from bytes):     {txs:12,.0f}")
    print(
        f"ratio tx/s : verifies/s                        {txs / verifies:12.3f}"
        "   (2 signatures per tx: 0.5 is the ceiling)"
    )
    raw_rate, store_rate = bench_storage(ns.keys, ns.gets)
    print(f"raw plyvel random get/s ({ns.keys:,} keys):     {raw_rate:12,.0f}")
    print(f"chain-store get_coin/s ({ns.keys:,} coins):     {store_rate:12,.0f}")
    print(
        f"ratio raw get : chain-store get                {raw_rate / store_rate:12.2f}"
        "   (target <= 2)"
    )


if __name__ == "__main__":
    main()
