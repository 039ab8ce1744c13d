"""Consensus throughput: engine votes/s (with signature checks) vs raw coincurve verifies/s.

    .venv/bin/python bench/consensus.py [--validators 100] [--heights 20] [--seeds 20]

Prints figures and ratios; never asserts on timing.
"""

from __future__ import annotations

import argparse
import time

from coincurve import PrivateKey, PublicKey

from timecoin.consensus.engine import Engine, EngineConfig, NewHeight, VoteReceived
from timecoin.consensus.proposer import initial_priorities
from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import Vote, VoteType
from timecoin.sim import SimConfig, run_seed
from timecoin.sim.fixtures import block, make_validators, signed_vote

CHAIN = "timecoin-bench"


def bench_raw_verify(n: int) -> tuple[float, float]:
    """Verifies per second: coincurve's own API (DER) and our compact low-S wrapper."""
    _, keys = make_validators([1])
    key = keys[0]
    v = signed_vote(key, CHAIN, VoteType.PREVOTE, 1, 0, block(1))
    digest = vote_sign_digest(CHAIN, v)

    der = PrivateKey(key.secret).sign(digest, hasher=None)
    pub = PublicKey(key.pubkey)
    t = time.perf_counter()
    for _ in range(n):
        pub.verify(der, digest, hasher=None)
    raw = n / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(n):
        is_valid_signature(key.pubkey, v.signature, digest)
    ours = n / (time.perf_counter() - t)
    return raw, ours


def bench_engine(validators: int, heights: int) -> tuple[float, int]:
    """Votes per second through Engine.step, each signature verified (an observer node)."""
    vs, keys = make_validators([1] * validators)
    pri = initial_priorities(vs)
    plan: list[list[Vote]] = []
    for h in range(1, heights + 1):
        value = block(h)
        # Prevotes then precommits for the block from everyone: each height ends
        # in a decision after 2/3 of the precommits; the rest are late votes.
        plan.append(
            [signed_vote(k, CHAIN, VoteType.PREVOTE, h, 0, value) for k in keys]
            + [signed_vote(k, CHAIN, VoteType.PRECOMMIT, h, 0, value) for k in keys]
        )
    engine = Engine(EngineConfig(CHAIN, None))
    count = 0
    t = time.perf_counter()
    for h, votes in enumerate(plan, start=1):
        engine.step(NewHeight(h, vs, pri, start_delay_ms=0))
        for v in votes:
            engine.step(VoteReceived(v))
            count += 1
        engine.validity[block(h)] = True  # the block itself is the node's business
    elapsed = time.perf_counter() - t
    return count / elapsed, count


def bench_sim(seeds: int, heights: int) -> tuple[float, float]:
    """Simulated decisions per second (per node and per height) over a 4-validator network."""
    cfg = SimConfig(validators=4, heights=heights)
    t = time.perf_counter()
    decided = 0
    for s in range(seeds):
        decided += run_seed(cfg, s).heights_decided
    elapsed = time.perf_counter() - t
    return decided / elapsed, decided * cfg.validators / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--validators", type=int, default=100)
    ap.add_argument("--heights", type=int, default=20)
    ap.add_argument("--verifies", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=20)
    args = ap.parse_args()

    raw, ours = bench_raw_verify(args.verifies)
    engine_vps, n = bench_engine(args.validators, args.heights)
    heights_ps, node_decisions_ps = bench_sim(args.seeds, args.heights)
    print(f"coincurve PublicKey.verify (DER):        {raw:12,.0f} verifies/s")
    print(f"core.keys.is_valid_signature (compact):  {ours:12,.0f} verifies/s")
    print(
        f"engine, {args.validators} validators, {n} votes:      "
        f"{engine_vps:12,.0f} votes/s (each signature verified)"
    )
    print(f"engine / raw coincurve ratio:            {engine_vps / raw:12.2f}")
    print(f"engine / compact verify ratio:           {engine_vps / ours:12.2f}")
    print(f"simulated heights decided (4 nodes):     {heights_ps:12,.1f} heights/s")
    print(f"simulated node decisions:                {node_decisions_ps:12,.1f} decisions/s")


if __name__ == "__main__":
    main()
