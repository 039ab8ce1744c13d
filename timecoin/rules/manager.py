"""The one pluggy plugin manager of the node, and the rules fingerprint.

Both hook families (storage backends and consensus rules) share the project
name ``timecoin`` and the entry-point group ``timecoin.plugins``. A plugin
counts as a *rules* plugin when it implements at least one ``timed_rules_*``
hook; the sorted names and versions of those plugins, hashed, are the rules
fingerprint a node advertises in its P2P handshake (DESIGN.md, Plugins).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from timecoin.core.errors import RulesRejected
from timecoin.core.hashing import sha256
from timecoin.rules import hookspecs as rules_hookspecs
from timecoin.rules.hookspecs import PROJECT
from timecoin.storage.backends import add_storage_hookspecs

if TYPE_CHECKING:
    from timecoin.core.params import ChainParams
    from timecoin.core.types import Block, Transaction, Validator, ValidatorSet
    from timecoin.core.utxo import UtxoView

ENTRY_POINT_GROUP = "timecoin.plugins"
_RULES_PREFIX = "timed_rules_"


def build_plugin_manager(
    *, load_entrypoints: bool = True, plugins: Sequence[object] = ()
) -> pluggy.PluginManager:
    """Build a manager with every hookspec, the installed plugins and any extra *plugins*.

    Tests pass ``load_entrypoints=False`` with explicit plugin objects to run
    with a controlled set.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(rules_hookspecs)
    add_storage_hookspecs(pm)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for p in plugins:
        pm.register(p)
    return pm


def _plugin_version(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str]:
    for plug, dist in pm.list_plugin_distinfo():
        if plug is plugin:
            return dist.project_name, dist.version
    name = pm.get_name(plugin) or repr(plugin)
    return name, str(getattr(plugin, "__version__", "0"))


def rules_plugins(pm: pluggy.PluginManager) -> list[tuple[str, str]]:
    """Sorted (name, version) of every registered plugin that implements a rules hook."""
    found: set[tuple[str, str]] = set()
    for plugin in pm.get_plugins():
        callers = pm.get_hookcallers(plugin) or []
        if any(h.name.startswith(_RULES_PREFIX) for h in callers):
            found.add(_plugin_version(pm, plugin))
    return sorted(found)


def rules_fingerprint(pm: pluggy.PluginManager) -> bytes:
    """Return SHA-256 over ``name==version`` lines of the sorted rules plugins."""
    text = "".join(f"{n}=={v}\n" for n, v in rules_plugins(pm))
    return sha256(b"timecoin/rules/v1\x00" + text.encode())


class PluggyRules:
    """Adapts the rules hooks to the ``core.rules.LedgerRules`` protocol the ledger calls."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._hook = pm.hook

    def _has_impls(self, name: str) -> bool:
        # Asked at each call (a plugin registered later still counts), but only
        # the list's length: a hook call with no implementation costs pluggy's
        # whole dispatch, and validate_transaction runs for every transaction.
        return bool(getattr(self._hook, name).get_hookimpls())

    def _first(self, name: str, **kwargs: Any) -> Any:
        result = getattr(self._hook, name)(**kwargs)
        if result is None:
            raise RulesRejected(
                f"no rules plugin implements {name}; is timecoin-rules-default installed?"
            )
        return result

    def block_reward(self, height: int, fees: int, params: ChainParams) -> int:
        return int(self._first("timed_rules_block_reward", height=height, fees=fees, params=params))

    def reward_split(
        self,
        height: int,
        total: int,
        proposer: Validator,
        signers: Sequence[Validator],
        params: ChainParams,
    ) -> list[tuple[bytes, int]]:
        return list(
            self._first(
                "timed_rules_reward_split",
                height=height,
                total=total,
                proposer=proposer,
                signers=signers,
                params=params,
            )
        )

    def validate_transaction(
        self, tx: Transaction, view: UtxoView, height: int, params: ChainParams
    ) -> None:
        if self._has_impls("timed_rules_validate_transaction"):
            self._hook.timed_rules_validate_transaction(
                tx=tx, view=view, height=height, params=params
            )

    def validate_block(self, block: Block, validators: ValidatorSet, params: ChainParams) -> None:
        self._hook.timed_rules_validate_block(block=block, validators=validators, params=params)

    def select_proposer(
        self, validators: ValidatorSet, priorities: Sequence[int], round: int
    ) -> int:
        return int(
            self._first(
                "timed_rules_select_proposer",
                validators=validators,
                priorities=priorities,
                round=round,
            )
        )

    def penalize(self, evidence: Any, validators: ValidatorSet, height: int) -> ValidatorSet:
        result = self._hook.timed_rules_penalize(
            evidence=evidence, validators=validators, height=height
        )
        return validators if result is None else result
