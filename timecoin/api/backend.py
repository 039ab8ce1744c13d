"""What the client API needs from the node: the ``NodeBackend`` protocol.

The servicers in this package talk to the node only through this protocol, so
they can be tested against a small fake and the node can change inside
without touching the API. Everything here is async and must not block the
event loop (the node runs storage reads in its executor).

Two helpers the node may use as they are:

- ``BlockBroadcaster``: fans committed blocks out to subscribers through
  bounded queues; a subscriber that falls behind is cut off (``dropped``)
  instead of making the node hold an unbounded backlog for it.
- ``tx_info_from_block``: builds a ``TxInfo`` (with its merkle proof) from a
  stored block, its commit and the transaction's position.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from timecoin.core.errors import TimecoinError
from timecoin.core.merkle import merkle_proof
from timecoin.core.params import ChainParams
from timecoin.core.types import Block, Coin, Commit, OutPoint, Transaction, ValidatorSet


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """The node's view of the chain, for ``GetStatus``."""

    chain_id: str
    network: str
    """``mainnet``, ``testnet`` or ``devnet``."""
    height: int
    """Height of the last finalized block (0 before the first block)."""
    tip_hash: bytes
    tip_time_ms: int
    utxo_commitment: bytes
    """MuHash3072 digest of the UTXO set after the tip."""
    genesis_hash: bytes
    node_id: bytes
    mempool_size: int
    peers: int
    syncing: bool


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """A finalized block and the commit certificate that finalized it."""

    block: Block
    commit: Commit | None
    """Precommits of >2/3 power for ``block`` (the next block's ``last_commit`` or the
    stored seen commit for the tip); None only if the node has not stored it yet."""
    block_bytes: bytes = b""
    """The block's wire encoding when the node has it (stored or just built): served
    as it is instead of converting ``block`` back, which costs ~3 us per transaction."""

    @property
    def height(self) -> int:
        return self.block.header.height

    @property
    def hash(self) -> bytes:
        return self.block.hash


@dataclass(frozen=True, slots=True)
class TxInfo:
    """A finalized transaction with everything needed to verify it offline."""

    tx: Transaction
    height: int
    position: int
    """Index of the transaction in its block (0 is the coinbase)."""
    block_hash: bytes
    header_bytes: bytes
    """The block's header bytes: SHA-256 is ``block_hash``; the header holds ``tx_root``."""
    commit: Commit | None
    merkle_proof: tuple[bytes, ...]
    """Sibling hashes from the txid's leaf up to ``tx_root`` (core.merkle)."""
    tx_count: int
    """Number of transactions in the block: the tree size the proof is for."""


class TxState(IntEnum):
    """Status of a transaction as the node sees it; values equal ``TransactionStatus``."""

    UNKNOWN = 1
    PENDING = 2
    FINAL = 3
    REJECTED = 4


@dataclass(frozen=True, slots=True)
class TxStatus:
    """Answer of ``NodeBackend.tx_status``."""

    state: TxState
    height: int = 0
    """Block height when FINAL."""
    block_hash: bytes = b""
    """Block hash when FINAL."""
    error: TimecoinError | None = None
    """Why, when REJECTED (e.g. dropped from the mempool after a conflicting spend)."""


@dataclass(frozen=True, slots=True)
class FeePolicy:
    """Fee numbers for ``EstimateFee`` and ``BuildTransaction``."""

    min_fee_units_per_kb: int
    """The rate the mempool currently requires (>= the chain minimum; higher when full)."""
    dust_limit_units: int


class BlockSubscription(Protocol):
    """An async iterator over blocks finalized after the subscription started.

    Iteration ends when the subscriber is dropped (``dropped`` is then True)
    or closed. ``close()`` must be called when the consumer goes away.
    """

    dropped: bool
    """Set when the subscriber fell behind and was cut off."""

    def __aiter__(self) -> AsyncIterator[BlockInfo]: ...

    def close(self) -> None:
        """Stop receiving blocks and free the queue."""


LOOP_SLICE = 64
"""Transactions handled per turn of the event loop when a batch is decoded or prechecked
on it. Between slices the loop runs whatever else is ready, such as the consensus steps a
block waits on: a 500-transaction batch in one turn held them for 5 ms, and with eight
streams submitting the consensus path of one block waited about 150 ms in all."""


class NodeBackend(Protocol):
    """The node as the client API sees it (implemented by the node, faked in tests)."""

    @property
    def params(self) -> ChainParams:
        """Consensus parameters of the chain the node runs (chain id, network, limits)."""

    async def status(self) -> StatusInfo:
        """Return the node's current status."""

    async def get_block(self, height: int | None, block_hash: bytes | None) -> BlockInfo | None:
        """Return the finalized block at *height* or with *block_hash* (exactly one is given).

        None if there is no such block.
        """

    async def get_transaction(self, txid: bytes) -> TxInfo | None:
        """Return the finalized transaction *txid* with its proof, or None if unknown."""

    async def list_unspent(
        self,
        pubkey_hash: bytes,
        limit: int,
        after: OutPoint | None,
        *,
        exclude_mempool_spent: bool = False,
    ) -> list[tuple[OutPoint, Coin]]:
        """Return up to *limit* unspent outputs owned by *pubkey_hash*, ordered by outpoint.

        Only outpoints strictly greater than *after* are returned (pagination).
        With *exclude_mempool_spent*, outputs already spent by a pending
        transaction are left out (used to build a new transaction).
        """

    async def validator_set(self, height: int | None) -> tuple[int, ValidatorSet]:
        """Return ``(height, set)``: the validators of *height*; None means the next height.

        Raises NotFound for a height the node has no set for.
        """

    async def submit(self, txs: Sequence[Transaction]) -> list[TimecoinError | None]:
        """Offer decoded *txs* to the mempool; one result per tx in order (None = accepted).

        Must not block the event loop (signatures are verified off the loop).
        """

    async def tx_status(self, txid: bytes) -> TxStatus:
        """Return whether *txid* is unknown, pending in the mempool, final or rejected."""

    async def fee_policy(self) -> FeePolicy:
        """Return the fee rate the mempool requires now and the dust limit."""

    def subscribe_blocks(self, max_queue: int) -> BlockSubscription:
        """Subscribe to blocks finalized from now on, with at most *max_queue* undelivered."""


# --- helpers the node can use -----------------------------------------------------


@dataclass(eq=False, slots=True)
class _Subscriber:
    """A bounded queue of blocks for one subscriber (a ``BlockSubscription``)."""

    max_queue: int
    owner: BlockBroadcaster
    dropped: bool = False
    closed: bool = False
    queue: deque[BlockInfo] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, info: BlockInfo) -> None:
        if self.closed:
            return
        if len(self.queue) >= self.max_queue:
            # Cut the slow consumer off rather than buffer without bound; the
            # stream tells the client so it can resubscribe from GetStatus.
            self.dropped = True
            self.queue.clear()
            self.close()
            return
        self.queue.append(info)
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.owner._remove(self)
        self.wakeup.set()

    def __aiter__(self) -> AsyncIterator[BlockInfo]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[BlockInfo]:
        while True:
            while self.queue:
                yield self.queue.popleft()
            if self.closed:
                return
            self.wakeup.clear()
            await self.wakeup.wait()


class BlockBroadcaster:
    """Fan-out of committed blocks to bounded subscriber queues (never blocks the publisher)."""

    def __init__(self) -> None:
        self._subscribers: set[_Subscriber] = set()

    def subscribe(self, max_queue: int) -> BlockSubscription:
        """Return a new subscription holding at most *max_queue* undelivered blocks."""
        sub = _Subscriber(max_queue=max(1, max_queue), owner=self)
        self._subscribers.add(sub)
        return sub

    def publish(self, info: BlockInfo) -> None:
        """Offer *info* to every subscriber; a full subscriber is dropped."""
        for sub in list(self._subscribers):
            sub.offer(info)

    def close_all(self) -> None:
        """End every subscription (node shutdown)."""
        for sub in list(self._subscribers):
            sub.close()

    def __len__(self) -> int:
        return len(self._subscribers)

    def _remove(self, sub: _Subscriber) -> None:
        self._subscribers.discard(sub)


def tx_info_from_block(block: Block, position: int, commit: Commit | None) -> TxInfo:
    """Build the ``TxInfo`` of ``block.txs[position]``, computing its merkle proof."""
    txids = [t.txid for t in block.txs]
    return TxInfo(
        tx=block.txs[position],
        height=block.header.height,
        position=position,
        block_hash=block.hash,
        header_bytes=block.header_bytes,
        commit=commit,
        merkle_proof=tuple(merkle_proof(txids, position)),
        tx_count=len(txids),
    )
