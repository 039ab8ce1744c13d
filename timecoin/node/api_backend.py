"""The node as the client API sees it: ``timecoin.api.backend.NodeBackend`` over ``Node``.

Every storage read runs on the node's db thread (``Node.in_db``), never on
the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from timecoin.api.admin_service import BackupResult, PeerRow
from timecoin.api.backend import (
    BlockInfo,
    BlockSubscription,
    FeePolicy,
    StatusInfo,
    TxInfo,
    TxState,
    TxStatus,
    tx_info_from_block,
)
from timecoin.core.errors import NotFound, TimecoinError
from timecoin.core.params import ChainParams
from timecoin.core.types import Coin, OutPoint, Transaction, ValidatorSet
from timecoin.node.node import Node
from timecoin.wire.codec import decode_block


class NodeApi:
    """Implements ``NodeBackend`` for a running ``Node``."""

    def __init__(self, node: Node, node_id: bytes) -> None:
        self.node = node
        self.node_id = node_id

    @property
    def params(self) -> ChainParams:
        return self.node.params

    async def status(self) -> StatusInfo:
        chain = self.node.chain
        tip = chain.tip_info()
        return StatusInfo(
            chain_id=chain.params.chain_id,
            network=chain.params.network_name,
            height=tip.height,
            tip_hash=tip.block_hash,
            tip_time_ms=tip.time_ms,
            utxo_commitment=tip.utxo_commitment,
            genesis_hash=chain.genesis_hash,
            node_id=self.node_id,
            mempool_size=len(self.node.mempool),
            peers=0,
            syncing=False,
        )

    def _block_info(self, height: int | None, block_hash: bytes | None) -> BlockInfo | None:
        chain = self.node.chain
        store = chain.store
        if height is None:
            if block_hash is None:
                return None
            height = store.get_height(block_hash)
            if height is None:
                return None
        if height <= 0 or height > chain.height:
            return None
        raw = store.get_block_bytes(height)
        if raw is None:
            return None
        block = decode_block(raw, chain.params.network)
        if block_hash is not None and block.hash != block_hash:
            return None
        commit = chain.seen_commit(height)
        if commit is None and height < chain.height:
            nxt = store.get_block_bytes(height + 1)
            commit = None if nxt is None else decode_block(nxt, chain.params.network).last_commit
        return BlockInfo(block, commit, raw)

    async def get_block(self, height: int | None, block_hash: bytes | None) -> BlockInfo | None:
        return await self.node.in_db(self._block_info, height, block_hash)

    def _tx_info(self, txid: bytes) -> TxInfo | None:
        loc = self.node.chain.store.get_tx_location(txid)
        if loc is None:
            return None
        info = self._block_info(int(loc.height), None)
        if info is None:
            return None
        return tx_info_from_block(info.block, int(loc.position), info.commit)

    async def get_transaction(self, txid: bytes) -> TxInfo | None:
        return await self.node.in_db(self._tx_info, txid)

    def _unspent(
        self, pubkey_hash: bytes, limit: int, after: OutPoint | None, exclude: bool
    ) -> list[tuple[OutPoint, Coin]]:
        out: list[tuple[OutPoint, Coin]] = []
        mempool = self.node.mempool
        store = self.node.chain.store
        while len(out) < limit:
            page = store.iter_coins_by_address(pubkey_hash, after=after, limit=limit)
            for op, coin in page:
                if not (exclude and mempool.spender(op) is not None):
                    out.append((op, coin))
            if len(page) < limit:
                break
            after = page[-1][0]
        return out[:limit]

    async def list_unspent(
        self,
        pubkey_hash: bytes,
        limit: int,
        after: OutPoint | None,
        *,
        exclude_mempool_spent: bool = False,
    ) -> list[tuple[OutPoint, Coin]]:
        return await self.node.in_db(
            self._unspent, pubkey_hash, limit, after, exclude_mempool_spent
        )

    def _validators(self, height: int | None) -> tuple[int, ValidatorSet]:
        chain = self.node.chain
        h = chain.height + 1 if height is None or height == 0 else height
        if h > chain.height + 2:
            raise NotFound(f"no validator set known for height {h}")
        try:
            return h, chain.validators(h)
        except TimecoinError:
            raise NotFound(f"no validator set known for height {h}") from None

    async def validator_set(self, height: int | None) -> tuple[int, ValidatorSet]:
        return await self.node.in_db(self._validators, height)

    async def submit(self, txs: Sequence[Transaction]) -> list[TimecoinError | None]:
        return await self.node.submit(txs)

    def _tx_status(self, txid: bytes) -> TxStatus:
        store = self.node.chain.store
        loc = store.get_tx_location(txid)
        if loc is not None:
            return TxStatus(
                TxState.FINAL, int(loc.height), store.get_block_hash(int(loc.height)) or b""
            )
        mempool = self.node.mempool
        if txid in mempool:
            return TxStatus(TxState.PENDING)
        rej = mempool.rejection(txid)
        if rej is not None:
            return TxStatus(TxState.REJECTED, error=TimecoinError(rej.message, reason=rej.reason))
        return TxStatus(TxState.UNKNOWN)

    async def tx_status(self, txid: bytes) -> TxStatus:
        return await self.node.in_db(self._tx_status, txid)

    async def fee_policy(self) -> FeePolicy:
        p = self.node.params
        rate = getattr(self.node.mempool, "min_fee_rate_units_per_kb", None)
        current = rate() if callable(rate) else p.min_fee_units_per_kb
        return FeePolicy(max(current, p.min_fee_units_per_kb), p.dust_limit_units)

    def subscribe_blocks(self, max_queue: int) -> BlockSubscription:
        return self.node.subscribe_blocks(max_queue)

    # --- admin (AdminService) ------------------------------------------------------

    async def backup(self, destination: str) -> BackupResult:
        """Copy a consistent snapshot of the store while the node keeps running."""
        from pathlib import Path

        from timecoin.node.maintenance import backup_store

        kv = self.node.chain.store.kv
        # A snapshot is read on its own thread: commits go on, the copy stays consistent.
        s = await asyncio.to_thread(backup_store, kv, Path(destination))
        return BackupResult(s.height, s.tip_hash, s.utxo_commitment, s.keys, destination)

    async def list_peers(self) -> list[PeerRow]:
        net = self.node.network
        if net is None:
            return []
        return [
            PeerRow(p.node_id, p.address, p.listen_address, p.direction, p.height)
            for p in net.peers()
        ]

    async def unban(self, target: str) -> bool:
        net = self.node.network
        if net is None:
            raise NotFound("this node runs without a peer network")
        try:
            key: bytes | str = bytes.fromhex(target) if len(target) == 40 else target
        except ValueError:
            key = target
        return bool(net.unban(key))
