"""Operator maintenance of a node's store: backup, restore and reindex.

* **backup** (while the node runs, through ``AdminService.Backup``): every key
  of one store snapshot is copied into a new LevelDB directory. The snapshot
  is taken between two block commits (each commit is one batch), so the copy
  holds exactly the chain up to one block, its UTXO set and its commitment.
* **restore** (node stopped): the backup directory becomes the data
  directory; the previous one is kept beside it. The double-sign guard state
  (``priv_validator_state.json``) is *never* taken from a backup: rolling it
  back could let the validator sign a second vote for a height it already
  voted on. The current file stays.
* **reindex** (node stopped): every stored block is replayed through full
  validation into a fresh store, which is checked against the stored tip's
  UTXO commitment before it replaces the old store.

Each operation opens the restored or rebuilt store as a chain and recomputes
the MuHash3072 of its UTXO set from scratch, so a bad copy is reported, not used.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from timecoin.core.errors import BadUtxoCommitment, ConfigError, StorageError
from timecoin.core.genesis import Genesis
from timecoin.core.muhash import MuHash3072, coin_element
from timecoin.core.params import ChainParams
from timecoin.core.rules import LedgerRules
from timecoin.node.chainstate import ChainState
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import ChainReader, ChainStore
from timecoin.storage.kv import KVStore, WriteBatch
from timecoin.wire.codec import decode_block, decode_commit

PRIVVAL_STATE_FILE = "priv_validator_state.json"
_BATCH_KEYS = 10_000


@dataclass(frozen=True, slots=True)
class StoreSummary:
    height: int
    tip_hash: bytes
    utxo_commitment: bytes
    keys: int


def recompute_commitment(reader: ChainReader) -> bytes:
    """Return the MuHash3072 digest of every coin *reader* holds, computed from scratch."""
    h = MuHash3072()
    for op, coin in reader.iter_all_coins():
        h.insert(coin_element(op, coin))
    return h.digest()


def backup_store(kv: KVStore, destination: Path) -> StoreSummary:
    """Copy one consistent snapshot of *kv* into a new LevelDB at *destination*."""
    if not destination.is_absolute():
        raise ConfigError(f"backup destination {destination} must be an absolute path")
    if destination.exists():
        raise ConfigError(f"backup destination {destination} exists; choose a new directory")
    out = open_store("leveldb", destination, {})
    keys = 0
    try:
        with kv.snapshot() as snap:
            batch = WriteBatch()
            for k, v in snap.iterate():
                batch.put(k, v)
                keys += 1
                if len(batch) >= _BATCH_KEYS:
                    out.write(batch)
                    batch = WriteBatch()
            if batch:
                out.write(batch)
            out.write(WriteBatch(), sync=True)
        reader = ChainReader(out)
        tip = reader.tip()
        if tip is None:
            raise StorageError("the store has no chain to back up")
        muhash = reader.get_utxo_state()
        digest = MuHash3072.deserialize(muhash).digest() if muhash else b""
        return StoreSummary(tip.height, tip.block_hash, digest, keys)
    finally:
        out.close()


def verify_store(
    path: Path, params: ChainParams, genesis: Genesis, rules: LedgerRules
) -> StoreSummary:
    """Open *path* as this chain's store and check its UTXO set against its commitment."""
    store = ChainStore(open_store("leveldb", path, {"create_if_missing": False}))
    try:
        chain = ChainState(params, genesis, store, rules)
        info = chain.tip_info()
        if recompute_commitment(store) != info.utxo_commitment:
            raise BadUtxoCommitment(f"{path}: the UTXO set does not match its commitment")
        keys = sum(1 for _ in store.kv.iterate())
        return StoreSummary(info.height, info.block_hash, info.utxo_commitment, keys)
    finally:
        store.close()


def _fresh(path: Path, label: str) -> Path:
    """Return a sibling of *path* named ``<name>.<label>-<time>`` that does not exist yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 0
    while True:
        candidate = path.with_name(f"{path.name}.{label}-{stamp}" + (f"-{n}" if n else ""))
        if not candidate.exists():
            return candidate
        n += 1


def _swap_in(data: Path, new: Path) -> Path:
    """Move *new* into place as *data*, keeping the old store and the guard state."""
    kept = _fresh(data, "old")
    guard = data / PRIVVAL_STATE_FILE
    if data.exists():
        data.rename(kept)
    new.rename(data)
    old_guard = kept / PRIVVAL_STATE_FILE
    if old_guard.exists():
        shutil.copy2(old_guard, guard)
    return kept


def restore_store(
    source: Path, data: Path, params: ChainParams, genesis: Genesis, rules: LedgerRules
) -> tuple[StoreSummary, Path]:
    """Make the backup at *source* the store at *data* (node stopped); return what was kept."""
    staging = _fresh(data, "restore")
    shutil.copytree(source, staging)
    (staging / PRIVVAL_STATE_FILE).unlink(missing_ok=True)  # never roll the guard back
    try:
        summary = verify_store(staging, params, genesis, rules)
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary, _swap_in(data, staging)


def reindex_store(
    data: Path, params: ChainParams, genesis: Genesis, rules: LedgerRules
) -> tuple[StoreSummary, Path]:
    """Rebuild indexes and the UTXO set from the stored blocks (node stopped)."""
    old = ChainStore(open_store("leveldb", data, {"create_if_missing": False}))
    staging = _fresh(data, "reindex")
    try:
        tip = old.tip()
        if tip is None:
            raise StorageError(f"{data}: no chain to reindex")
        stored = ChainState(params, genesis, old, rules).tip_info()
        new = ChainState(params, genesis, ChainStore(open_store("leveldb", staging, {})), rules)
        try:
            for h in range(1, tip.height + 1):
                raw = old.get_block_bytes(h)
                commit_raw = old.get_seen_commit(h)
                if raw is None or commit_raw is None:
                    raise StorageError(f"{data}: block {h} or its commit is missing")
                block = decode_block(raw, params.network)
                # Full validation, signatures included, against the sets it recomputes.
                result = new.validate(block, block.header.time_ms)
                new.commit(block, raw, result, decode_commit(commit_raw))
            rebuilt = new.tip_info()
            if rebuilt != stored:
                raise BadUtxoCommitment(
                    f"reindexed tip {rebuilt.height}/{rebuilt.utxo_commitment.hex()[:16]} differs "
                    f"from the stored {stored.height}/{stored.utxo_commitment.hex()[:16]}"
                )
            if recompute_commitment(new.store) != rebuilt.utxo_commitment:
                raise BadUtxoCommitment("rebuilt UTXO set does not match its commitment")
            keys = sum(1 for _ in new.store.kv.iterate())
        finally:
            new.store.close()
    except Exception:
        old.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old.close()
    summary = StoreSummary(stored.height, stored.block_hash, stored.utxo_commitment, keys)
    return summary, _swap_in(data, staging)
