"""The consensus-rule interface the ledger calls, and a pure default implementation.

``core.block.validate_block`` and the mempool call rules through the
``LedgerRules`` protocol; the node adapts the pluggy hooks of
``timecoin.rules.hookspecs`` to it (``timecoin.rules.manager.PluggyRules``).
``DefaultLedgerRules`` implements the same rules as the
``timecoin-rules-default`` plugin without pluggy, for pure tests and tools.

The ledger itself caps the reward: whatever a plugin returns, a coinbase may
never pay more than ``params.block_reward_units`` plus the block's fees
(``core.block``). A plugin can lower the reward or change its split, not
print money.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from timecoin.core.keys import pubkey_hash
from timecoin.core.params import ChainParams
from timecoin.core.types import Block, Transaction, Validator, ValidatorSet
from timecoin.core.utxo import UtxoView

DEFAULT_PROPOSER_SHARE_PERCENT = 20
"""Share of the reward paid to the proposer by the default rules (as the default plugin)."""


class LedgerRules(Protocol):
    """Replaceable consensus rules (implemented by rules plugins)."""

    def block_reward(self, height: int, fees: int, params: ChainParams) -> int:
        """Return the most the coinbase of *height* may pay, given the block's *fees*."""
        ...

    def reward_split(
        self,
        height: int,
        total: int,
        proposer: Validator,
        signers: Sequence[Validator],
        params: ChainParams,
    ) -> list[tuple[bytes, int]]:
        """Return the exact coinbase outputs ``[(pubkey_hash, amount)]``; they sum to <= total."""
        ...

    def validate_transaction(
        self, tx: Transaction, view: UtxoView, height: int, params: ChainParams
    ) -> None:
        """Raise to reject non-coinbase *tx* beyond the ledger's own checks."""
        ...

    def validate_block(self, block: Block, validators: ValidatorSet, params: ChainParams) -> None:
        """Raise to reject *block* beyond the ledger's own checks."""
        ...


def reward_address(v: Validator) -> bytes:
    """Return where *v*'s reward goes: its reward address, else its own key's address."""
    return v.reward_pubkey_hash or pubkey_hash(v.pubkey)


def split_by_power(
    total: int,
    proposer: Validator,
    signers: Sequence[Validator],
    *,
    proposer_share_percent: int,
    dust_limit_units: int,
) -> list[tuple[bytes, int]]:
    """Split *total*: a share to the proposer, the rest to *signers* by voting power.

    Integer division; the remainder and every signer share below the dust
    limit go to the proposer, so nothing is burned and every output is
    spendable. Without signers (height 1) the proposer receives everything.
    Outputs are merged per address, sorted by address, and never zero.
    """
    payouts: dict[bytes, int] = {}
    pool = 0 if not signers else total - total * proposer_share_percent // 100
    power = sum(v.power for v in signers)
    paid = 0
    if pool and power:
        for v in signers:
            share = pool * v.power // power
            if share < dust_limit_units:
                continue
            addr = reward_address(v)
            payouts[addr] = payouts.get(addr, 0) + share
            paid += share
    addr = reward_address(proposer)
    payouts[addr] = payouts.get(addr, 0) + (total - paid)
    return sorted((a, amt) for a, amt in payouts.items() if amt > 0)


class DefaultLedgerRules:
    """The default rules: 100 TIME + fees, proposer share plus power-weighted signer split."""

    def __init__(self, proposer_share_percent: int = DEFAULT_PROPOSER_SHARE_PERCENT) -> None:
        self.proposer_share_percent = proposer_share_percent

    def block_reward(self, height: int, fees: int, params: ChainParams) -> int:
        """Return ``params.block_reward_units + fees``."""
        return params.block_reward_units + fees

    def reward_split(
        self,
        height: int,
        total: int,
        proposer: Validator,
        signers: Sequence[Validator],
        params: ChainParams,
    ) -> list[tuple[bytes, int]]:
        """Return ``split_by_power`` with this rule set's proposer share."""
        return split_by_power(
            total,
            proposer,
            signers,
            proposer_share_percent=self.proposer_share_percent,
            dust_limit_units=params.dust_limit_units,
        )

    def validate_transaction(
        self, tx: Transaction, view: UtxoView, height: int, params: ChainParams
    ) -> None:
        """Accept: the ledger's own checks are the whole default rule set."""

    def validate_block(self, block: Block, validators: ValidatorSet, params: ChainParams) -> None:
        """Accept: the ledger's own checks are the whole default rule set."""
