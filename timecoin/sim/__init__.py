"""Seeded, deterministic simulation of N consensus engines on a faulty network.

``run_seed(config, seed)`` and ``run_many(config, seeds)`` in ``simulator``;
the ``timed sim`` command in ``cli``. See docs/consensus.md.
"""

from timecoin.sim.simulator import SeedResult, SimConfig, Summary, run_many, run_seed

__all__ = ["SeedResult", "SimConfig", "Summary", "run_many", "run_seed"]
