"""``timed sim``: run the seeded consensus simulator and print a summary.

Examples::

    timed sim --validators 4 --byzantine 1 --seeds 1000 --heights 20
    timed sim --validators 4 --byzantine 1 --heights 20 --seed 17      # replay one seed
    timed sim --validators 4 --byzantine 2 --behaviour silent --allow-unsafe-byzantine

Exit status: 0 when every seed kept safety and liveness, 1 on any safety
violation, 2 on liveness failures (unless ``--allow-unsafe-byzantine``, where
losing liveness is the expected, reported outcome).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor

import click
from rich.console import Console
from rich.table import Table

from timecoin.sim.network import NetworkConfig
from timecoin.sim.simulator import (
    BEHAVIOURS,
    SeedResult,
    SimConfig,
    run_seed,
    summarize,
)


def _parse_powers(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        powers = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise click.BadParameter("powers must be comma-separated integers") from None
    if any(p <= 0 for p in powers):
        raise click.BadParameter("powers must be positive")
    return powers


def _run(args: tuple[SimConfig, int]) -> SeedResult:
    return run_seed(*args)


@click.command("sim")
@click.option("--validators", default=4, show_default=True, help="Number of validators.")
@click.option("--byzantine", default=0, show_default=True, help="How many of them misbehave.")
@click.option(
    "--behaviour",
    "behaviours",
    multiple=True,
    type=click.Choice(BEHAVIOURS),
    help="Byzantine behaviours, assigned round-robin (default: all).",
)
@click.option("--powers", default=None, help="Comma-separated voting powers, e.g. 100,10,10,1.")
@click.option("--heights", default=20, show_default=True, help="Target height per seed.")
@click.option("--seeds", default=100, show_default=True, help="Number of seeds to run.")
@click.option("--first-seed", default=0, show_default=True, help="First seed of the range.")
@click.option("--seed", default=None, type=int, help="Replay this one seed with details.")
@click.option(
    "--allow-unsafe-byzantine",
    "--byzantine-power-override",
    "allow_unsafe_byzantine",
    is_flag=True,
    help="Allow byzantine power >= 1/3 (f+1) to show that liveness breaks; reported, not fatal.",
)
@click.option("--drop-rate", default=0.05, show_default=True, help="Loss before GST.")
@click.option("--duplicate-rate", default=0.05, show_default=True)
@click.option("--max-delay-ms", default=150, show_default=True)
@click.option("--gst-ms", default=8_000, show_default=True, help="Faults stop at this time.")
@click.option("--no-partition", is_flag=True, help="Do not partition the network before GST.")
@click.option("--jobs", default=1, show_default=True, help="Worker processes (results identical).")
def sim(
    validators: int,
    byzantine: int,
    behaviours: tuple[str, ...],
    powers: str | None,
    heights: int,
    seeds: int,
    first_seed: int,
    seed: int | None,
    allow_unsafe_byzantine: bool,
    drop_rate: float,
    duplicate_rate: float,
    max_delay_ms: int,
    gst_ms: int,
    no_partition: bool,
    jobs: int,
) -> None:
    """Simulate N validators on a seeded faulty network and check BFT invariants."""
    console = Console()
    try:
        config = SimConfig(
            validators=validators,
            powers=_parse_powers(powers),
            byzantine=byzantine,
            behaviours=behaviours or BEHAVIOURS,
            allow_unsafe_byzantine=allow_unsafe_byzantine,
            heights=heights,
            network=NetworkConfig(
                max_delay_ms=max_delay_ms,
                drop_rate=drop_rate,
                duplicate_rate=duplicate_rate,
                partition=not no_partition,
                gst_ms=gst_ms,
            ),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    seed_list = [seed] if seed is not None else list(range(first_seed, first_seed + seeds))
    if seed is not None:
        console.print(f"seed {seed}")
    else:
        console.print(f"seeds {seed_list[0]}..{seed_list[-1]}" if seed_list else "no seeds")
    work = [(config, s) for s in seed_list]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(max_workers=min(jobs, os.cpu_count() or 1)) as pool:
            results = list(pool.map(_run, work, chunksize=8))
    else:
        results = [_run(w) for w in work]
    summary = summarize(results)

    table = Table(title="consensus simulation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    byz_power = sum(config.power_list()[i] for i in config.byzantine_indices())
    table.add_row("validators (byzantine)", f"{validators} ({byzantine})")
    table.add_row("byzantine power / total", f"{byz_power} / {sum(config.power_list())}")
    table.add_row("seeds run", str(summary.seeds))
    table.add_row("heights decided", str(summary.heights_decided))
    table.add_row("rounds per height (mean)", f"{summary.rounds_mean:.3f}")
    table.add_row("rounds per height (max)", str(summary.rounds_max))
    table.add_row("evidence found", str(summary.evidence))
    table.add_row("safety violations", str(summary.safety_violations))
    table.add_row("liveness failures", str(summary.liveness_failures))
    console.print(table)

    if seed is not None:
        r = results[0]
        console.print(
            f"trace {r.trace_hash}  sim time {r.sim_time_ms} ms  events {r.events}  "
            f"messages {r.messages} (dropped {r.dropped})  rejected {r.rejected}"
        )
    for text in [v for res in results for v in res.safety_violations][:10]:
        console.print(f"[red]violation[/red] {text}")
    if summary.failing_seeds:
        shown = ", ".join(str(s) for s in summary.failing_seeds[:20])
        console.print(f"failing seeds: {shown}  (replay: timed sim ... --seed N)")
    if summary.safety_violations:
        sys.exit(1)
    if summary.liveness_failures and not allow_unsafe_byzantine:
        sys.exit(2)
