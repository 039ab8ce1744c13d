"""Hook specifications for storage-backend plugins (entry-point group ``timecoin.plugins``).

A backend is a package that registers a module (or object) under the
``timecoin.plugins`` entry-point group and implements these hooks with
``timecoin.storage.hookspecs.hookimpl`` (the same pluggy project, ``timecoin``,
as the consensus-rule hooks in ``timecoin/rules/hookspecs.py``). The node picks
one backend by the name in its config (``[storage] backend = "leveldb"``); see
``timecoin.storage.backends.open_store`` and docs/storage.md.

Every hook is called with keyword arguments; an implementation may accept any
subset of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from timecoin.rules.hookspecs import PROJECT, hookimpl, hookspec

if TYPE_CHECKING:
    from timecoin.storage.kv import KVStore

__all__ = ["PROJECT", "hookimpl", "hookspec", "timed_open_storage", "timed_storage_backends"]


@hookspec(firstresult=True)
def timed_open_storage(name: str, path: Path, options: Mapping[str, object]) -> KVStore | None:
    """Open the backend called *name* at *path*, or return None if *name* is not yours.

    Called once at node startup (and by tools such as reindex) with the
    ``[storage]`` section of the config: *path* is the data directory the store
    may own (create it if missing), *options* the backend-specific settings.
    Reject an unknown or mistyped option by raising
    ``timecoin.core.errors.ConfigError``; wrap failures to open (lock held,
    corruption) in ``timecoin.core.errors.StorageError``. The first non-None
    result wins, so a plugin registered with ``tryfirst=True`` can take over a
    name.
    """


@hookspec
def timed_storage_backends() -> list[str]:  # type: ignore[empty-body]
    """Return the backend names this plugin can open.

    Called only to tell the user what is available (the error for an unknown
    backend name, ``timed`` diagnostics). Every implementation is called and
    the lists are concatenated.
    """
