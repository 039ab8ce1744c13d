"""A small in-memory node that satisfies ``timecoin.api.backend.NodeBackend``.

It is a real (if tiny) ledger: a UTXO set, a mempool that admits through
``core.tx.validate_transaction`` (so bad signatures, wrong chain ids, double
spends and low fees are rejected with their real reasons), and blocks with
real commits signed by one validator key, so tests can verify proofs offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from timecoin.api.backend import (
    BlockBroadcaster,
    BlockInfo,
    BlockSubscription,
    FeePolicy,
    StatusInfo,
    TxInfo,
    TxState,
    TxStatus,
    tx_info_from_block,
)
from timecoin.core.errors import (
    AlreadyKnown,
    DoubleSpend,
    MempoolFull,
    NotFound,
    TimecoinError,
)
from timecoin.core.hashing import sha256
from timecoin.core.keys import KeyPair
from timecoin.core.merkle import merkle_root
from timecoin.core.params import ChainParams
from timecoin.core.signing import tx_sign_digest, vote_sign_digest
from timecoin.core.tx import validate_transaction
from timecoin.core.types import (
    BlockHeader,
    Coin,
    Commit,
    CommitSig,
    OutPoint,
    Transaction,
    TxBody,
    TxIn,
    TxOut,
    Validator,
    ValidatorSet,
    Vote,
    VoteType,
)
from timecoin.core.utxo import MemoryUtxoView, apply_block_txs
from timecoin.wire.codec import encode_tx_body, make_block, make_transaction

PARAMS = ChainParams.for_network("devnet")
TIME = 100_000_000


def test_key(i: int) -> KeyPair:
    return KeyPair.from_secret(sha256(b"api-test-key" + i.to_bytes(4, "big")))


test_key.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def sign_tx(body: TxBody, key: KeyPair, params: ChainParams = PARAMS) -> Transaction:
    """Encode *body*, sign every input with *key* and decode it as the node would."""
    body_bytes = encode_tx_body(body, params.network)
    sig = key.sign(tx_sign_digest(body.chain_id, body_bytes))
    return make_transaction(body_bytes, [sig] * len(body.inputs), params.network)


@dataclass
class FakeNode:
    """The ``NodeBackend`` of the API tests."""

    params: ChainParams = PARAMS
    validator: KeyPair = field(default_factory=lambda: test_key(1000))
    utxo: MemoryUtxoView = field(default_factory=MemoryUtxoView)
    mempool: dict[bytes, Transaction] = field(default_factory=dict)
    mempool_spends: dict[OutPoint, bytes] = field(default_factory=dict)
    max_mempool: int = 10_000
    rejected: dict[bytes, TimecoinError] = field(default_factory=dict)
    blocks: list[BlockInfo] = field(default_factory=list)
    tx_index: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    broadcaster: BlockBroadcaster = field(default_factory=BlockBroadcaster)
    submit_calls: int = 0

    @property
    def validator_set_(self) -> ValidatorSet:
        v = self.validator
        return ValidatorSet((Validator(address=sha256(v.pubkey)[:20], pubkey=v.pubkey, power=100),))

    def fund(self, key: KeyPair, amounts: Sequence[int]) -> list[OutPoint]:
        """Give *key* coins of *amounts* (as if created at height 0)."""
        ops = []
        for n, amount in enumerate(amounts):
            op = OutPoint(sha256(b"fund" + key.pubkey + len(self.utxo).to_bytes(4, "big")), n)
            from timecoin.core.utxo import UtxoChanges

            self.utxo.apply(
                UtxoChanges(spent=(), created=((op, Coin(amount, key.address_payload, 0)),))
            )
            ops.append(op)
        return ops

    @property
    def height(self) -> int:
        return len(self.blocks)

    # --- NodeBackend --------------------------------------------------------------

    async def status(self) -> StatusInfo:
        tip = self.blocks[-1] if self.blocks else None
        return StatusInfo(
            chain_id=self.params.chain_id,
            network=self.params.network_name,
            height=self.height,
            tip_hash=tip.hash if tip else b"",
            tip_time_ms=tip.block.header.time_ms if tip else 0,
            utxo_commitment=bytes(32),
            genesis_hash=bytes(32),
            node_id=b"\x01" * 20,
            mempool_size=len(self.mempool),
            peers=0,
            syncing=False,
        )

    async def get_block(self, height: int | None, block_hash: bytes | None) -> BlockInfo | None:
        if height is not None:
            return self.blocks[height - 1] if 1 <= height <= len(self.blocks) else None
        for info in self.blocks:
            if info.hash == block_hash:
                return info
        return None

    async def get_transaction(self, txid: bytes) -> TxInfo | None:
        where = self.tx_index.get(txid)
        if where is None:
            return None
        height, pos = where
        info = self.blocks[height - 1]
        return tx_info_from_block(info.block, pos, info.commit)

    async def list_unspent(
        self,
        pubkey_hash: bytes,
        limit: int,
        after: OutPoint | None,
        *,
        exclude_mempool_spent: bool = False,
    ) -> list[tuple[OutPoint, Coin]]:
        rows = sorted(
            (op, c)
            for op, c in self.utxo.items()
            if c.pubkey_hash == pubkey_hash
            and (after is None or op > after)
            and not (exclude_mempool_spent and op in self.mempool_spends)
        )
        return rows[:limit]

    async def validator_set(self, height: int | None) -> tuple[int, ValidatorSet]:
        h = self.height + 1 if height is None else height
        if h > self.height + 2:
            raise NotFound(f"no validator set for height {h}")
        return h, self.validator_set_

    async def submit(self, txs: Sequence[Transaction]) -> list[TimecoinError | None]:
        self.submit_calls += 1
        out: list[TimecoinError | None] = []
        for tx in txs:
            try:
                self._admit(tx)
                out.append(None)
            except TimecoinError as err:
                out.append(err)
        await asyncio.sleep(0)
        return out

    def _admit(self, tx: Transaction) -> None:
        if tx.txid in self.mempool or tx.txid in self.tx_index:
            raise AlreadyKnown(f"{tx.txid.hex()} already known")
        for i in tx.body.inputs:
            if i.prev_out in self.mempool_spends:
                raise DoubleSpend(f"{i.prev_out} already spent by a pending transaction")
        validate_transaction(tx, self.utxo, self.height + 1, self.params)
        if len(self.mempool) >= self.max_mempool:
            raise MempoolFull("mempool is full")
        self.mempool[tx.txid] = tx
        for i in tx.body.inputs:
            self.mempool_spends[i.prev_out] = tx.txid

    async def tx_status(self, txid: bytes) -> TxStatus:
        if txid in self.tx_index:
            height, _ = self.tx_index[txid]
            return TxStatus(TxState.FINAL, height=height, block_hash=self.blocks[height - 1].hash)
        if txid in self.mempool:
            return TxStatus(TxState.PENDING)
        if txid in self.rejected:
            return TxStatus(TxState.REJECTED, error=self.rejected[txid])
        return TxStatus(TxState.UNKNOWN)

    async def fee_policy(self) -> FeePolicy:
        return FeePolicy(self.params.min_fee_units_per_kb, self.params.dust_limit_units)

    def subscribe_blocks(self, max_queue: int) -> BlockSubscription:
        return self.broadcaster.subscribe(max_queue)

    # --- test controls ------------------------------------------------------------

    def commit_block(self) -> BlockInfo:
        """Put the whole mempool in a new block, apply it, commit it, publish it."""
        height = self.height + 1
        txs = list(self.mempool.values())
        changes = apply_block_txs(txs, self.utxo, height)
        self.utxo.apply(changes)
        prev = self.blocks[-1].hash if self.blocks else bytes(32)
        header = BlockHeader(
            version=1,
            chain_id=self.params.chain_id,
            height=height,
            time_ms=1_700_000_000_000 + height * 1000,
            prev_block_hash=prev,
            tx_root=merkle_root([t.txid for t in txs]),
            last_commit_hash=bytes(32),
            validators_hash=bytes(32),
            next_validators_hash=bytes(32),
            utxo_commitment=bytes(32),
            proposer_address=sha256(self.validator.pubkey)[:20],
            evidence_hash=bytes(32),
        )
        last_commit = self.blocks[-1].commit if self.blocks else None
        block = make_block(header, txs, last_commit)
        addr = sha256(self.validator.pubkey)[:20]
        vote = Vote(VoteType.PRECOMMIT, height, 0, block.hash, addr)
        sig = self.validator.sign(vote_sign_digest(self.params.chain_id, vote))
        commit = Commit(height, 0, block.hash, (CommitSig(addr, sig),))
        info = BlockInfo(block, commit)
        self.blocks.append(info)
        for pos, t in enumerate(txs):
            self.tx_index[t.txid] = (height, pos)
        self.mempool.clear()
        self.mempool_spends.clear()
        self.broadcaster.publish(info)
        return info

    def reject_pending(self, txid: bytes, err: TimecoinError) -> None:
        """Drop *txid* from the mempool as a node does after a conflicting block."""
        tx = self.mempool.pop(txid)
        for i in tx.body.inputs:
            self.mempool_spends.pop(i.prev_out, None)
        self.rejected[txid] = err


def pay(
    node: FakeNode,
    key: KeyPair,
    coin: OutPoint,
    amount: int,
    to: bytes,
    *,
    change: int = 0,
    chain_id: str | None = None,
) -> Transaction:
    """A signed transaction spending *coin* of *key*: *amount* to *to*, *change* back."""
    outs = [TxOut(amount, to)]
    if change:
        outs.append(TxOut(change, key.address_payload))
    body = TxBody(
        version=1,
        chain_id=chain_id or node.params.chain_id,
        inputs=(TxIn(coin, key.pubkey),),
        outputs=tuple(outs),
    )
    return sign_tx(body, key, node.params)


class Running:
    """A started ApiServer over a FakeNode, with an authenticated client."""

    def __init__(self, node: FakeNode, server: object, client: object) -> None:
        self.node = node
        self.server = server
        self.client = client


def running(tmp_path, node: FakeNode | None = None, **settings):  # type: ignore[no-untyped-def]
    """Async context manager: start the API on 127.0.0.1:0, yield ``Running``, stop it."""
    import contextlib

    from timecoin.api.client import ApiClient
    from timecoin.api.server import ApiServer, ApiSettings

    @contextlib.asynccontextmanager
    async def cm():  # type: ignore[no-untyped-def]
        n = node or FakeNode()
        cfg = ApiSettings(listen="127.0.0.1:0", cookie_file=tmp_path / ".cookie", **settings)
        server = ApiServer(n, cfg)
        await server.start()
        client = ApiClient.from_cookie(f"127.0.0.1:{server.port}", tmp_path / ".cookie")
        try:
            yield Running(n, server, client)
        finally:
            await client.close()
            await server.stop(0)

    return cm()


async def until(predicate, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll *predicate* until it holds; fail the test after *timeout_s*."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")
