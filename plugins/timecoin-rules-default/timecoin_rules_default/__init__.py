"""Default TimeCoin consensus rules, shipped as a plugin like any other.

- Block reward: ``params.block_reward_units`` (100 TIME) plus the block's fees.
- Reward split: ``PROPOSER_SHARE_PERCENT`` of the reward to the proposer; the
  rest to the signers of the block's last commit in proportion to their voting
  power (integer division; the remainder and any share below the dust limit go
  to the proposer, so every output is spendable and nothing is burned). At
  height 1 there is no last commit and the proposer receives everything.
  Outputs are merged per address and sorted by address, so every node builds
  the identical coinbase.
- Proposer selection: CometBFT's weighted proposer-priority rotation
  (``timecoin.consensus.proposer``).
- Penalty: a validator proven to equivocate is removed (jailed) from the set.

Each hook is pure: everything comes in as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from timecoin.core.rules import DEFAULT_PROPOSER_SHARE_PERCENT, split_by_power
from timecoin.rules.hookspecs import hookimpl

if TYPE_CHECKING:
    from timecoin.core.params import ChainParams
    from timecoin.core.types import DuplicateVoteEvidence, Validator, ValidatorSet

__version__ = "0.1.0"

PROPOSER_SHARE_PERCENT = DEFAULT_PROPOSER_SHARE_PERCENT


@hookimpl
def timed_rules_block_reward(height: int, fees: int, params: ChainParams) -> int:
    """Return 100 TIME of new coins plus every fee of the block."""
    return params.block_reward_units + fees


@hookimpl
def timed_rules_reward_split(
    height: int, total: int, proposer: Validator, signers: Sequence[Validator], params: ChainParams
) -> list[tuple[bytes, int]]:
    """Return the proposer share plus a power-weighted split among the last commit's signers."""
    return split_by_power(
        total,
        proposer,
        signers,
        proposer_share_percent=PROPOSER_SHARE_PERCENT,
        dust_limit_units=params.dust_limit_units,
    )


@hookimpl
def timed_rules_select_proposer(
    validators: ValidatorSet, priorities: Sequence[int], round: int
) -> int:
    """Return the proposer index by CometBFT's weighted proposer-priority rotation."""
    from timecoin.consensus.proposer import select_proposer

    return select_proposer(validators, priorities, round)


@hookimpl
def timed_rules_penalize(
    evidence: DuplicateVoteEvidence, validators: ValidatorSet, height: int
) -> ValidatorSet:
    """Return the set without the equivocating validator (jailed)."""
    from timecoin.core.types import ValidatorSet as VSet

    culprit = evidence.vote_a.validator_address
    return VSet(tuple(v for v in validators.validators if v.address != culprit))
