"""Seeded simulations: exact replay, agreement under f byzantine power, liveness after GST.

CI sizes (a few hundred seeds, well under a minute on 2 cores). The full local
sweep is documented in docs/consensus.md:

    timed sim --validators 4 --byzantine 1 --seeds 1000 --heights 20 --jobs 2
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from timecoin.sim import SimConfig, run_many, run_seed
from timecoin.sim.cli import sim
from timecoin.sim.network import NetworkConfig


def test_same_seed_replays_the_same_trace() -> None:
    cfg = SimConfig(validators=4, byzantine=1, heights=5)
    a, b = run_seed(cfg, 42), run_seed(cfg, 42)
    assert a.trace_hash == b.trace_hash
    assert a == b
    assert run_seed(cfg, 43).trace_hash != a.trace_hash


def test_trace_does_not_depend_on_the_interpreters_hash_seed() -> None:
    # Set/dict iteration over bytes depends on PYTHONHASHSEED; the trace must not.
    code = (
        "from timecoin.sim import SimConfig, run_seed;"
        "print(run_seed(SimConfig(validators=4, byzantine=1, heights=3), 11).trace_hash)"
    )
    hashes = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert hashes == {run_seed(SimConfig(validators=4, byzantine=1, heights=3), 11).trace_hash}


def test_honest_network_decides_every_height_despite_faults_before_gst() -> None:
    s = run_many(SimConfig(validators=4, heights=8), range(40))
    assert s.safety_violations == 0, s.first_violation
    assert s.liveness_failures == 0
    assert s.heights_decided >= 40 * 8


@pytest.mark.parametrize(
    ("config", "seeds"),
    [
        # every behaviour rotates through the single byzantine validator
        (SimConfig(validators=4, byzantine=1, heights=6), range(0, 120)),
        (SimConfig(validators=7, byzantine=2, heights=4), range(1000, 1060)),
        # weighted tiers; the byzantine validators hold just under 1/3
        (
            SimConfig(validators=4, powers=(34, 33, 33, 32), byzantine=1, heights=5),
            range(2000, 2060),
        ),
        (
            SimConfig(validators=5, powers=(100, 10, 10, 1, 1), byzantine=2, heights=5),
            range(3000, 3040),
        ),
    ],
    ids=["4v-f1", "7v-f2", "weighted-near-third", "tiers"],
)
def test_f_byzantine_power_never_breaks_agreement(config: SimConfig, seeds: range) -> None:
    s = run_many(config, seeds)
    assert s.safety_violations == 0, s.first_violation
    assert s.liveness_failures == 0, f"seeds {s.failing_seeds}"
    assert s.seeds == len(seeds)


def test_double_voters_are_caught_as_evidence() -> None:
    s = run_many(
        SimConfig(validators=4, byzantine=1, behaviours=("double_vote",), heights=4), range(10)
    )
    assert s.safety_violations == 0
    assert s.evidence > 0


def test_single_validator_network_decides_alone() -> None:
    r = run_seed(SimConfig(validators=1, heights=10), 7)
    assert r.heights_decided >= 10 and r.rounds == (1,) * len(r.rounds)


def test_f_plus_one_silent_power_breaks_liveness_and_is_reported() -> None:
    cfg = SimConfig(
        validators=4,
        byzantine=2,
        behaviours=("silent",),
        allow_unsafe_byzantine=True,
        heights=3,
        liveness_bound_ms=10_000,
    )
    s = run_many(cfg, range(5))
    assert s.liveness_failures == 5
    assert s.safety_violations == 0
    assert s.heights_decided == 0


def test_byzantine_power_of_a_third_needs_the_explicit_override() -> None:
    with pytest.raises(ValueError, match="1/3"):
        SimConfig(validators=3, byzantine=1)
    with pytest.raises(ValueError, match="1/3"):
        SimConfig(validators=4, powers=(1, 10, 10, 10), byzantine=2)  # 11 of 31
    SimConfig(validators=3, byzantine=1, allow_unsafe_byzantine=True)


def test_liveness_holds_after_a_long_lossy_period() -> None:
    net = NetworkConfig(drop_rate=0.4, gst_ms=15_000)
    s = run_many(SimConfig(validators=4, byzantine=1, heights=4, network=net), range(20))
    assert s.safety_violations == 0
    assert s.liveness_failures == 0


def test_cli_summary_and_replay() -> None:
    runner = CliRunner()
    res = runner.invoke(
        sim, ["--validators", "4", "--byzantine", "1", "--seeds", "5", "--heights", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "seeds 0..4" in res.output
    assert "safety violations" in res.output
    res = runner.invoke(sim, ["--validators", "4", "--heights", "3", "--seed", "9"])
    assert res.exit_code == 0, res.output
    assert "seed 9" in res.output and "trace " in res.output


def test_cli_reports_f_plus_one_instead_of_crashing() -> None:
    runner = CliRunner()
    args = ["--validators", "4", "--byzantine", "2", "--behaviour", "silent", "--seeds", "2"]
    res = runner.invoke(sim, [*args, "--heights", "2"])
    assert res.exit_code != 0 and "1/3" in res.output  # refused without the override
    res = runner.invoke(sim, [*args, "--heights", "2", "--allow-unsafe-byzantine"])
    assert res.exit_code == 0, res.output
    assert "liveness failures" in res.output
