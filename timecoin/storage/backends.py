"""Choosing a storage backend by name through the pluggy hooks.

``make_plugin_manager`` is kept separate so the node can build one manager that
carries both hook families (storage and consensus rules) and pass it to
``open_store``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import cast

import pluggy

from timecoin.core.errors import ConfigError
from timecoin.storage import hookspecs
from timecoin.storage.kv import KVStore

ENTRY_POINT_GROUP = "timecoin.plugins"
"""Entry-point group every timecoin plugin (storage or rules) registers under."""

DEFAULT_BACKEND = "leveldb"


def make_plugin_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """Build a ``timecoin`` plugin manager with the storage hookspecs added.

    Loads every installed plugin of the ``timecoin.plugins`` entry-point group
    unless *load_entry_points* is False (tests register plugins by hand).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    add_storage_hookspecs(pm)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def add_storage_hookspecs(pm: pluggy.PluginManager) -> None:
    """Add the storage hook specifications to *pm* (idempotent)."""
    if not hasattr(pm.hook, "timed_open_storage"):
        pm.add_hookspecs(hookspecs)


def available_backends(pm: pluggy.PluginManager) -> list[str]:
    """Backend names offered by the plugins registered in *pm*, sorted, no repeats."""
    add_storage_hookspecs(pm)
    names: set[str] = set()
    for result in pm.hook.timed_storage_backends():
        names.update(result or ())
    return sorted(names)


def open_store(
    name: str,
    path: Path | str,
    options: Mapping[str, object] | None = None,
    pm: pluggy.PluginManager | None = None,
) -> KVStore:
    """Open the storage backend called *name* at *path*.

    Asks the ``timed_open_storage`` hook (first non-None result wins). Raises
    ``ConfigError`` naming the available backends when no plugin claims *name*;
    errors from the backend itself propagate (``StorageError``, ``ConfigError``).
    """
    if pm is None:
        pm = make_plugin_manager()
    else:
        add_storage_hookspecs(pm)
    store = pm.hook.timed_open_storage(name=name, path=Path(path), options=dict(options or {}))
    if store is None:
        offered = available_backends(pm)
        listing = ", ".join(repr(n) for n in offered) if offered else "none installed"
        raise ConfigError(
            f"unknown storage backend {name!r} (available: {listing}); install a package "
            f"that provides it under the {ENTRY_POINT_GROUP!r} entry-point group",
            backend=name,
            available=offered,
        )
    return cast(KVStore, store)
