"""Hook specifications for consensus-rule plugins (entry-point group ``timecoin.plugins``).

Consensus rules change what is valid, so every node of a network must run the
same set: a node advertises the name and version of each rules plugin it runs
(the *rules fingerprint*, ``timecoin.rules.manager.rules_fingerprint``) and
refuses peers whose set differs. The default rules live in the
``timecoin-rules-default`` package under ``plugins/``; a plugin that wants to
replace one of its ``firstresult`` hooks registers with ``tryfirst=True``.

Every hook is called with keyword arguments; an implementation may accept any
subset of them (pluggy passes only the names it declares). Hooks are pure: no
I/O, no clock, no randomness. They receive everything they need as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from timecoin.core.params import ChainParams
    from timecoin.core.types import (
        Block,
        DuplicateVoteEvidence,
        Transaction,
        Validator,
        ValidatorSet,
    )
    from timecoin.core.utxo import UtxoView

PROJECT = "timecoin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def timed_rules_validate_transaction(
    tx: Transaction, view: UtxoView, height: int, params: ChainParams
) -> None:
    """Check rules beyond the ledger's own for a non-coinbase transaction.

    Called after the built-in checks (signatures, ownership, fees) passed, for
    mempool admission and for every transaction of a block being validated;
    *height* is the height the transaction would be included at. Raise a
    ``timecoin.core.errors.TimecoinError`` subclass (``RulesRejected`` when no
    more specific one fits) to reject; return None to accept. Every
    implementation is called; any raise rejects.
    """


@hookspec
def timed_rules_validate_block(block: Block, validators: ValidatorSet, params: ChainParams) -> None:
    """Check rules beyond the ledger's own for a whole block.

    Called once per block after header, transaction and reward checks passed,
    by proposers (on their own block) and validators. *validators* is the set
    that decides this block's height. Raise to reject; every implementation
    is called; any raise rejects.
    """


@hookspec(firstresult=True)
def timed_rules_block_reward(height: int, fees: int, params: ChainParams) -> int | None:
    """Return the most the coinbase of block *height* may pay, in units.

    Called when building and validating every block; *fees* is the sum of the
    fees of its other transactions. The first non-None result wins (default:
    100 TIME + fees).
    """


@hookspec(firstresult=True)
def timed_rules_reward_split(
    height: int,
    total: int,
    proposer: Validator,
    signers: Sequence[Validator],
    params: ChainParams,
) -> list[tuple[bytes, int]] | None:
    """Return the coinbase outputs ``[(pubkey_hash, amount), ...]`` for block *height*.

    *total* is the reward from ``timed_rules_block_reward``; *signers* are the
    validators whose precommits are in the block's last commit (empty at height
    1). Called by the proposer to build the coinbase and by validators, who
    require the coinbase outputs to equal the result exactly. The amounts must
    sum to at most *total*. The first non-None result wins.
    """


@hookspec(firstresult=True)
def timed_rules_select_proposer(
    validators: ValidatorSet, priorities: Sequence[int], round: int
) -> int | None:
    """Return the index into ``validators.validators`` of the proposer of *round*.

    *priorities* are the CometBFT proposer priorities at the start of the
    height, aligned with ``validators.validators``. Called once per round by
    every validator; all must agree, so it must be deterministic. The first
    non-None result wins (default: CometBFT's weighted priority rotation).
    """


@hookspec(firstresult=True)
def timed_rules_penalize(
    evidence: DuplicateVoteEvidence, validators: ValidatorSet, height: int
) -> ValidatorSet | None:
    """Return the validator set after punishing the author of *evidence*.

    Called when a block that includes verified evidence is applied; the result
    takes effect at height + 2 like every other set change. The first non-None
    result wins (default: remove, i.e. jail, the equivocating validator).
    """
