"""Pluggable key-value storage and the chain store built on it (docs/storage.md)."""

from timecoin.storage.aio import AsyncChainStore
from timecoin.storage.backends import (
    DEFAULT_BACKEND,
    ENTRY_POINT_GROUP,
    available_backends,
    make_plugin_manager,
    open_store,
)
from timecoin.storage.chainstore import (
    BlockRecord,
    ChainReader,
    ChainSnapshot,
    ChainStore,
    ChainTip,
    TxLocation,
)
from timecoin.storage.kv import KVReader, KVSnapshot, KVStore, WriteBatch

__all__ = [
    "DEFAULT_BACKEND",
    "ENTRY_POINT_GROUP",
    "AsyncChainStore",
    "BlockRecord",
    "ChainReader",
    "ChainSnapshot",
    "ChainStore",
    "ChainTip",
    "KVReader",
    "KVSnapshot",
    "KVStore",
    "TxLocation",
    "WriteBatch",
    "available_backends",
    "make_plugin_manager",
    "open_store",
]
