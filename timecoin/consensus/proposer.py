"""CometBFT's weighted proposer-priority rotation, as pure functions.

Follows cometbft ``spec/consensus/proposer-selection.md`` and
``types/validator_set.go`` exactly, integer for integer:

* every round, each validator's priority grows by its voting power, the
  validator with the highest priority proposes (ties: the smaller address) and
  its priority drops by the total power;
* before a batch of increments the priorities are *rescaled* (divided, with Go's
  truncating division, so that max - min <= 2 * total) and *centered* (the
  floor average is subtracted) so they stay bounded;
* a validator joining the set starts at -1.125 * total (computed as
  ``-(t + (t >> 3))``, ``t`` = total power after updates and before removals),
  so it cannot propose right away just by re-registering;
* priorities are clipped to int64 like Go's ``safeAddClip``/``safeSubClip``.

Priorities are a tuple aligned with ``ValidatorSet.validators`` (sorted by
address). The value this module calls "priorities at the start of height H" is
the state *before* height H's increment: genesis starts at all zeros, the
proposer of round r at height H is the validator chosen by the (r+1)-th
increment, and ``next_priorities`` advances one height. This reproduces
CometBFT, whose stored set is incremented once per height (``NewValidatorSet``
and ``updateState`` call ``IncrementProposerPriority(1)``) and whose round r
proposer is ``set.Copy().IncrementProposerPriority(r)`` of that stored set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from timecoin.core.types import ValidatorSet

PRIORITY_WINDOW_SIZE_FACTOR = 2
"""Rescale when max - min priority exceeds this many times the total power (CometBFT)."""

_INT64_MAX = (1 << 63) - 1
_INT64_MIN = -(1 << 63)


def _clip(x: int) -> int:
    # Go's safeAddClip/safeSubClip saturate instead of overflowing.
    return _INT64_MAX if x > _INT64_MAX else _INT64_MIN if x < _INT64_MIN else x


def _go_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as Go's ``/`` on int64."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _check(validators: ValidatorSet, priorities: Sequence[int]) -> None:
    if len(priorities) != len(validators.validators):
        raise ValueError(
            f"{len(priorities)} priorities for {len(validators.validators)} validators"
        )
    if not validators.validators:
        raise ValueError("empty validator set has no proposer")


def _rescale(priorities: list[int], diff_max: int) -> list[int]:
    # RescalePriorities: divide by ceil(diff / diffMax) when the spread is too wide.
    if diff_max <= 0 or not priorities:
        return priorities
    diff = max(priorities) - min(priorities)
    if diff > diff_max:
        ratio = (diff + diff_max - 1) // diff_max
        return [_go_div(p, ratio) for p in priorities]
    return priorities


def _center(priorities: list[int]) -> list[int]:
    # shiftByAvgProposerPriority: big.Int Div is Euclidean, i.e. floor for n > 0.
    avg = sum(priorities) // len(priorities)
    return [_clip(p - avg) for p in priorities]


def _increment_once(validators: ValidatorSet, priorities: list[int], total: int) -> int:
    """One ``incrementProposerPriority``: mutates *priorities*, returns the chosen index."""
    vals = validators.validators
    best = -1
    for i, v in enumerate(vals):
        priorities[i] = _clip(priorities[i] + v.power)
        # Highest priority wins; on a tie the smaller address (CompareProposerPriority).
        if (
            best < 0
            or priorities[i] > priorities[best]
            or (priorities[i] == priorities[best] and vals[i].address < vals[best].address)
        ):
            best = i
    priorities[best] = _clip(priorities[best] - total)
    return best


def increment_priorities(
    validators: ValidatorSet, priorities: Sequence[int], times: int
) -> tuple[tuple[int, ...], int]:
    """CometBFT ``IncrementProposerPriority(times)``: rescale, center, then *times* increments.

    Returns the new priorities and the index of the last chosen proposer.
    """
    _check(validators, priorities)
    if times <= 0:
        raise ValueError("times must be positive")
    total = validators.total_power
    ps = _center(_rescale(list(priorities), PRIORITY_WINDOW_SIZE_FACTOR * total))
    chosen = -1
    for _ in range(times):
        chosen = _increment_once(validators, ps, total)
    return tuple(ps), chosen


def select_proposer(validators: ValidatorSet, priorities: Sequence[int], round: int) -> int:
    """Index into ``validators.validators`` of the proposer of *round* at this height.

    *priorities* are the priorities at the start of the height (see the module
    docstring). This is what the default rules plugin returns from the hook
    ``timed_rules_select_proposer``. Deterministic and pure.
    """
    if round < 0:
        raise ValueError("round must be >= 0")
    height_ps, chosen = increment_priorities(validators, priorities, 1)
    if round == 0:
        return chosen
    # CometBFT: validators.Copy().IncrementProposerPriority(round) on the stored set.
    _, chosen = increment_priorities(validators, height_ps, round)
    return chosen


def initial_priorities(validators: ValidatorSet) -> tuple[int, ...]:
    """Priorities of a genesis set: all zero (CometBFT ``NewValidatorSet``)."""
    return (0,) * len(validators.validators)


def update_priorities(
    old: ValidatorSet, old_priorities: Sequence[int], new: ValidatorSet
) -> tuple[int, ...]:
    """Carry priorities across a validator-set change (CometBFT ``updateWithChangeSet``).

    Kept validators (same address) keep their priority whatever their new power;
    added ones start at -1.125 * (total power after updates, before removals);
    then the set is rescaled and centered.
    """
    _check(old, old_priorities)
    if not new.validators:
        raise ValueError("empty validator set has no proposer")
    prev = {v.address: p for v, p in zip(old.validators, old_priorities, strict=True)}
    removed_power = sum(v.power for v in old.validators if v.address not in new)
    tvp = new.total_power + removed_power
    joiner = -(tvp + (tvp >> 3))
    ps = [prev.get(v.address, joiner) for v in new.validators]
    return tuple(_center(_rescale(ps, PRIORITY_WINDOW_SIZE_FACTOR * new.total_power)))


def next_priorities(
    validators: ValidatorSet,
    priorities: Sequence[int],
    next_validators: ValidatorSet | None = None,
) -> tuple[int, ...]:
    """Priorities at the start of the next height.

    Advances one height (one increment, whatever round the height was decided
    in, as CometBFT), then applies the set change to *next_validators* if given.
    """
    ps, _ = increment_priorities(validators, priorities, 1)
    if next_validators is None or next_validators == validators:
        return ps
    return update_priorities(validators, ps, next_validators)


@dataclass(frozen=True, slots=True)
class ProposerPriorities:
    """A validator set with its priorities at the start of a height."""

    validators: ValidatorSet
    priorities: tuple[int, ...]

    @classmethod
    def genesis(cls, validators: ValidatorSet) -> ProposerPriorities:
        """Return the state for the first height of a chain."""
        return cls(validators, initial_priorities(validators))

    def proposer_index(self, round: int) -> int:
        """Index of the proposer of *round*."""
        return select_proposer(self.validators, self.priorities, round)

    def proposer_address(self, round: int) -> bytes:
        """Address of the proposer of *round*."""
        return self.validators.validators[self.proposer_index(round)].address

    def advance(self, next_validators: ValidatorSet | None = None) -> ProposerPriorities:
        """Return the state for the next height (optionally with a changed set)."""
        nv = self.validators if next_validators is None else next_validators
        return ProposerPriorities(nv, next_priorities(self.validators, self.priorities, nv))
