"""Rules hooks through pluggy: the default plugin, overrides, and the rules fingerprint."""

import pluggy
import pytest

import timecoin_rules_default
from timecoin.core.errors import Reason, RulesRejected
from timecoin.core.keys import KeyPair
from timecoin.core.params import ChainParams
from timecoin.core.rules import DefaultLedgerRules
from timecoin.core.types import (
    UNITS_PER_TIME,
    DuplicateVoteEvidence,
    MasternodeTier,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from timecoin.rules.hookspecs import hookimpl
from timecoin.rules.manager import (
    PluggyRules,
    build_plugin_manager,
    rules_fingerprint,
    rules_plugins,
)

PARAMS = ChainParams.for_network("devnet")


def _validator(tier: MasternodeTier, seed: int) -> Validator:
    k = KeyPair.from_secret(seed.to_bytes(32, "big"))
    return Validator(k.address_payload, k.pubkey, tier.power, tier)


VALIDATORS = ValidatorSet(
    (
        _validator(MasternodeTier.GOLD, 1),
        _validator(MasternodeTier.SILVER, 2),
        _validator(MasternodeTier.BRONZE, 3),
    )
)


def _pm(*extra):
    return build_plugin_manager(load_entrypoints=False, plugins=(timecoin_rules_default, *extra))


def test_installed_default_plugin_is_found_through_entry_points():
    pm = build_plugin_manager()
    assert ("timecoin-rules-default", timecoin_rules_default.__version__) in rules_plugins(pm)


def test_default_plugin_matches_pure_default_rules():
    rules = PluggyRules(_pm())
    pure = DefaultLedgerRules()
    fees = 12_345
    assert rules.block_reward(7, fees, PARAMS) == 100 * UNITS_PER_TIME + fees
    proposer = VALIDATORS.validators[0]
    split = rules.reward_split(
        7, 100 * UNITS_PER_TIME + fees, proposer, VALIDATORS.validators, PARAMS
    )
    assert split == pure.reward_split(
        7, 100 * UNITS_PER_TIME + fees, proposer, VALIDATORS.validators, PARAMS
    )
    assert sum(a for _, a in split) == 100 * UNITS_PER_TIME + fees
    # height 1: no signers, everything to the proposer
    assert rules.reward_split(1, 5000, proposer, [], PARAMS) == [(proposer.address, 5000)]


def test_default_proposer_rotation_is_weighted():
    rules = PluggyRules(_pm())
    from timecoin.consensus.proposer import ProposerPriorities

    state = ProposerPriorities.genesis(VALIDATORS)
    counts = {}
    for _ in range(111):
        idx = rules.select_proposer(state.validators, state.priorities, 0)
        counts[idx] = counts.get(idx, 0) + 1
        state = state.advance()
    by_power = {i: v.power for i, v in enumerate(VALIDATORS.validators)}
    assert counts == by_power  # 100 : 10 : 1 over one full cycle


def test_default_penalty_removes_the_equivocator():
    rules = PluggyRules(_pm())
    culprit = VALIDATORS.validators[1].address
    ev = DuplicateVoteEvidence(
        Vote(VoteType.PREVOTE, 5, 0, b"\x01" * 32, culprit, b"s" * 64),
        Vote(VoteType.PREVOTE, 5, 0, b"\x02" * 32, culprit, b"s" * 64),
    )
    after = rules.penalize(ev, VALIDATORS, 5)
    assert culprit not in after and len(after) == 2


class DoubleRewardRules:
    """A third-party rules plugin that replaces the reward hook."""

    __version__ = "9.9"

    @hookimpl(tryfirst=True)
    def timed_rules_block_reward(self, height, fees, params):
        return 2 * params.block_reward_units + fees

    @hookimpl
    def timed_rules_validate_transaction(self, tx, view, height, params):
        if tx.body.memo == b"forbidden":
            raise RulesRejected("memo not allowed by this network")


def test_override_plugin_wins_and_changes_fingerprint():
    base = _pm()
    custom = _pm(DoubleRewardRules())
    assert PluggyRules(custom).block_reward(3, 0, PARAMS) == 200 * UNITS_PER_TIME
    assert rules_fingerprint(base) != rules_fingerprint(custom)
    assert len(rules_plugins(custom)) == len(rules_plugins(base)) + 1


def test_fingerprint_ignores_storage_plugins_and_is_deterministic():
    import timecoin_storage_memory

    a = _pm()
    b = build_plugin_manager(
        load_entrypoints=False, plugins=(timecoin_storage_memory, timecoin_rules_default)
    )
    assert rules_fingerprint(a) == rules_fingerprint(b)
    assert len(rules_fingerprint(a)) == 32


def test_missing_rules_plugin_is_a_typed_error():
    rules = PluggyRules(build_plugin_manager(load_entrypoints=False))
    with pytest.raises(RulesRejected) as ei:
        rules.block_reward(1, 0, PARAMS)
    assert ei.value.reason == Reason.RULES_REJECTED


def test_hookspecs_have_docstrings():
    from timecoin.rules import hookspecs

    pm = pluggy.PluginManager("timecoin")
    pm.add_hookspecs(hookspecs)
    names = [n for n in dir(hookspecs) if n.startswith("timed_rules_")]
    assert len(names) == 6
    for n in names:
        assert len(getattr(hookspecs, n).__doc__ or "") > 80, n
