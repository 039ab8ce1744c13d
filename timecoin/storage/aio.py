"""``AsyncChainStore``: the chain store for asyncio code, off the event loop.

DESIGN.md, Storage: storage calls never block the event loop. Every call goes
through ``loop.run_in_executor``: reads on a small thread pool (LevelDB serves
concurrent readers), writes (``commit_block``, ``disconnect_tip``, metadata)
on a single thread of their own, so they apply in the order they were awaited
and a long commit never queues behind reads or the other way round.

Results are materialized (lists, not iterators): a lazy iterator would run its
reads on the event loop thread when consumed.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from timecoin.core.errors import StorageError
from timecoin.core.types import Coin, OutPoint
from timecoin.core.utxo import UtxoChanges
from timecoin.storage.chainstore import (
    DEFAULT_PAGE_SIZE,
    BlockRecord,
    ChainStore,
    ChainTip,
    TxLocation,
)

__all__ = ["AsyncChainStore"]

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_READ_THREADS = 4


class AsyncChainStore:
    """Awaitable facade over a ``ChainStore``; owns the store and its threads."""

    def __init__(self, store: ChainStore, *, read_threads: int = DEFAULT_READ_THREADS) -> None:
        self._store = store
        self._readers = ThreadPoolExecutor(read_threads, thread_name_prefix="chainstore-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="chainstore-write")
        self._closed = False

    @property
    def store(self) -> ChainStore:
        """The synchronous store (for code already running on a worker thread)."""
        return self._store

    async def _run(
        self, pool: ThreadPoolExecutor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self._closed:
            raise StorageError("chain store is closed")
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
        return await loop.run_in_executor(pool, call)

    # --- reads ---------------------------------------------------------------

    async def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """See ``ChainReader.get_coin``."""
        return await self._run(self._readers, self._store.get_coin, outpoint)

    async def get_coins(self, outpoints: list[OutPoint]) -> list[Coin | None]:
        """Look up many coins in one executor hop (one result per outpoint, in order)."""
        get = self._store.get_coin
        return await self._run(self._readers, lambda: [get(op) for op in outpoints])

    async def tip(self) -> ChainTip | None:
        """See ``ChainReader.tip``."""
        return await self._run(self._readers, self._store.tip)

    async def get_block_bytes(self, height: int) -> bytes | None:
        """See ``ChainReader.get_block_bytes``."""
        return await self._run(self._readers, self._store.get_block_bytes, height)

    async def get_block_hash(self, height: int) -> bytes | None:
        """See ``ChainReader.get_block_hash``."""
        return await self._run(self._readers, self._store.get_block_hash, height)

    async def get_block_bytes_by_hash(self, block_hash: bytes) -> bytes | None:
        """See ``ChainReader.get_block_bytes_by_hash``."""
        return await self._run(self._readers, self._store.get_block_bytes_by_hash, block_hash)

    async def get_height(self, block_hash: bytes) -> int | None:
        """See ``ChainReader.get_height``."""
        return await self._run(self._readers, self._store.get_height, block_hash)

    async def get_block_txids(self, height: int) -> tuple[bytes, ...] | None:
        """See ``ChainReader.get_block_txids``."""
        return await self._run(self._readers, self._store.get_block_txids, height)

    async def get_tx_location(self, txid: bytes) -> TxLocation | None:
        """See ``ChainReader.get_tx_location``."""
        return await self._run(self._readers, self._store.get_tx_location, txid)

    async def iter_coins_by_address(
        self, pubkey_hash: bytes, after: OutPoint | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[tuple[OutPoint, Coin]]:
        """See ``ChainReader.iter_coins_by_address`` (a list: one page)."""
        return await self._run(
            self._readers, self._store.iter_coins_by_address, pubkey_hash, after, limit
        )

    async def coins_page(
        self, after: OutPoint | None = None, limit: int = DEFAULT_PAGE_SIZE
    ) -> list[tuple[OutPoint, Coin]]:
        """See ``ChainReader.coins_page``."""
        return await self._run(self._readers, self._store.coins_page, after, limit)

    async def get_undo(self, height: int) -> UtxoChanges | None:
        """See ``ChainReader.get_undo``."""
        return await self._run(self._readers, self._store.get_undo, height)

    async def get_seen_commit(self, height: int) -> bytes | None:
        """See ``ChainReader.get_seen_commit``."""
        return await self._run(self._readers, self._store.get_seen_commit, height)

    async def get_validator_set_bytes(self, height: int) -> bytes | None:
        """See ``ChainReader.get_validator_set_bytes``."""
        return await self._run(self._readers, self._store.get_validator_set_bytes, height)

    async def find_validator_set_bytes(self, height: int) -> tuple[int, bytes] | None:
        """See ``ChainReader.find_validator_set_bytes``."""
        return await self._run(self._readers, self._store.find_validator_set_bytes, height)

    async def get_utxo_state(self) -> bytes | None:
        """See ``ChainReader.get_utxo_state``."""
        return await self._run(self._readers, self._store.get_utxo_state)

    async def get_meta(self, key: bytes) -> bytes | None:
        """See ``ChainReader.get_meta``."""
        return await self._run(self._readers, self._store.get_meta, key)

    async def run_read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run any read-only function (e.g. over ``self.store.snapshot()``) on a read thread."""
        return await self._run(self._readers, fn, *args, **kwargs)

    # --- writes (one thread, in order) --------------------------------------------

    async def commit_block(self, record: BlockRecord) -> None:
        """See ``ChainStore.commit_block``."""
        await self._run(self._writer, self._store.commit_block, record)

    async def disconnect_tip(self) -> ChainTip:
        """See ``ChainStore.disconnect_tip``."""
        return await self._run(self._writer, self._store.disconnect_tip)

    async def put_meta(self, key: bytes, value: bytes) -> None:
        """See ``ChainStore.put_meta``."""
        await self._run(self._writer, self._store.put_meta, key, value)

    async def delete_meta(self, key: bytes) -> None:
        """See ``ChainStore.delete_meta``."""
        await self._run(self._writer, self._store.delete_meta, key)

    # --- lifecycle ------------------------------------------------------------------

    async def close(self) -> None:
        """Refuse new calls, let running ones finish, then close the store.

        LevelDB must not be closed under a running call, hence the order.
        """
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()

        def shutdown() -> None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._store.close()

        # Waiting for the pools is itself blocking: do it off the loop too.
        await loop.run_in_executor(None, shutdown)
