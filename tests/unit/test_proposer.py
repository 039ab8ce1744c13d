"""CometBFT proposer-priority rotation (spec/consensus/proposer-selection.md)."""

from __future__ import annotations

from collections import Counter

import pytest

from timecoin.consensus.proposer import (
    ProposerPriorities,
    increment_priorities,
    initial_priorities,
    next_priorities,
    select_proposer,
    update_priorities,
)
from timecoin.core.types import Validator, ValidatorSet


def _vs(*powers: int) -> ValidatorSet:
    # Addresses 0x01.., 0x02.. keep the set order equal to the argument order.
    return ValidatorSet(
        tuple(
            Validator(address=bytes([i + 1]) * 20, pubkey=b"\x02" + bytes([i + 1]) * 32, power=p)
            for i, p in enumerate(powers)
        )
    )


def _schedule(vs: ValidatorSet, heights: int) -> list[int]:
    pp = ProposerPriorities.genesis(vs)
    out = []
    for _ in range(heights):
        out.append(pp.proposer_index(0))
        pp = pp.advance()
    return out


def test_hand_computed_sequence_for_powers_1_and_2() -> None:
    # A=1, B=2, total 3. (0,0) -> +power (1,2): B, B-=3 -> (1,-1)
    # -> (2,1): A -> (-1,1) -> (0,3): B -> (0,0): the cycle B, A, B.
    assert _schedule(_vs(1, 2), 6) == [1, 0, 1, 1, 0, 1]


def test_equal_powers_rotate_round_robin_with_address_tie_break() -> None:
    # All priorities tie at first: the smallest address proposes first.
    assert _schedule(_vs(5, 5, 5), 6) == [0, 1, 2, 0, 1, 2]


def test_frequency_is_proportional_to_power_bronze_silver_gold() -> None:
    vs = _vs(1, 10, 100)
    counts = Counter(_schedule(vs, 111 * 3))
    assert counts == {0: 3, 1: 30, 2: 300}


def test_round_r_is_r_more_increments_from_the_heights_stored_set() -> None:
    vs = _vs(3, 1, 7, 2)
    ps = (5, -9, 2, 2)
    stored, chosen0 = increment_priorities(vs, ps, 1)
    assert select_proposer(vs, ps, 0) == chosen0
    for r in range(1, 6):
        assert select_proposer(vs, ps, r) == increment_priorities(vs, stored, r)[1]


def test_rounds_rotate_within_a_height() -> None:
    vs = _vs(1, 1, 1, 1)
    ps = initial_priorities(vs)
    assert [select_proposer(vs, ps, r) for r in range(4)] == [0, 1, 2, 3]


def test_rescale_uses_go_truncating_division() -> None:
    # diff 202 > 2*total=4: ratio ceil(202/4)=51; 101/51=1 and -101/51=-1 in Go
    # (Python's floor would give -2). Then center (avg 0), +1 each: (2, 0): A.
    ps, chosen = increment_priorities(_vs(1, 1), (101, -101), 1)
    assert chosen == 0
    assert ps == (0, 0)


def test_centering_uses_floor_average() -> None:
    # (0, 0, -1): sum -1, Euclidean/floor average -1 -> (1, 1, 0) before the increment.
    ps, chosen = increment_priorities(_vs(1, 1, 1), (0, 0, -1), 1)
    assert chosen == 0
    assert ps == (1 + 1 - 3, 2, 1)


def test_new_validator_starts_at_minus_1_125_total() -> None:
    old = _vs(1, 1)
    new = ValidatorSet(old.validators + _vs(0, 0, 2).validators[2:])
    # tvp after updates before removals = 4; joiner = -(4 + 4 >> 3) = -4.
    # (1, -1, -4): avg floor(-4/3) = -2 -> (3, 1, -2).
    assert update_priorities(old, (1, -1), new) == (3, 1, -2)


def test_removed_power_counts_in_the_joiner_priority() -> None:
    old = _vs(8, 1)
    a, b = old.validators
    c = Validator(address=bytes([9]) * 20, pubkey=b"\x02" + bytes([9]) * 32, power=8)
    new = ValidatorSet((b, c))
    # b keeps 5; tvp = 9 (new total) + 8 (removed a) = 17; joiner -(17 + 2) = -19.
    # (5, -19): diff 24 > 2*9 = 18: ratio 2 -> (2, -9); avg floor(-7/2) = -4 -> (6, -5).
    assert update_priorities(old, (-5, 5), new) == (6, -5)


def test_next_priorities_with_unchanged_set_is_one_increment() -> None:
    vs = _vs(2, 3)
    ps = (4, -4)
    assert next_priorities(vs, ps) == increment_priorities(vs, ps, 1)[0]
    assert ProposerPriorities(vs, ps).advance().priorities == next_priorities(vs, ps)


def test_a_joiner_does_not_propose_at_once() -> None:
    old = _vs(1, 1, 1)
    pp = ProposerPriorities.genesis(old)
    for _ in range(3):
        pp = pp.advance()
    grown = ValidatorSet(old.validators + _vs(0, 0, 0, 1).validators[3:])
    pp = pp.advance(grown)
    joiner = grown.validators.index(_vs(0, 0, 0, 1).validators[3])
    assert pp.proposer_index(0) != joiner


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        select_proposer(_vs(1, 1), (0,), 0)
    with pytest.raises(ValueError):
        select_proposer(_vs(1), (0,), -1)
    with pytest.raises(ValueError):
        select_proposer(ValidatorSet(()), (), 0)
