"""Pluggable key-value storage and the chain store built on it (docs/storage.md)."""

from timecoin.storage.backends import (
    DEFAULT_BACKEND,
    ENTRY_POINT_GROUP,
    available_backends,
    make_plugin_manager,
    open_store,
)
from timecoin.storage.kv import KVReader, KVSnapshot, KVStore, WriteBatch

__all__ = [
    "DEFAULT_BACKEND",
    "ENTRY_POINT_GROUP",
    "KVReader",
    "KVSnapshot",
    "KVStore",
    "WriteBatch",
    "available_backends",
    "make_plugin_manager",
    "open_store",
]
