"""The genesis state: initial allocations and the initial masternodes.

The genesis file (JSON, read by ``timecoin.genesis``) is parsed into these
dataclasses; everything else here is pure. The genesis hash commits to a
canonical binary layout of the parsed values (not to the JSON text, whose
whitespace and key order are free), so any implementation can recompute it::

    SHA-256("timecoin/genesis/v1" 0x00 len(chain_id):u8 chain_id time_ms:u64
            n_alloc:u32 (pubkey_hash:20 amount:u64)*
            n_val:u32 (pubkey:33 tier:u8 reward_pubkey_hash:20 len(name):u8 name)*)

Allocation *i* becomes the coin at OutPoint(genesis_hash, i) with height 0.
Genesis masternodes need no collateral output: the genesis file is the
network's founding agreement. They decide heights 1 and 2 (changes made by
block H take effect at H + 2).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from timecoin.core.errors import ConfigError
from timecoin.core.hashing import sha256
from timecoin.core.keys import pubkey_hash, validate_pubkey
from timecoin.core.types import (
    ADDRESS_PAYLOAD_LEN,
    MAX_MONEY_UNITS,
    Coin,
    MasternodeTier,
    Network,
    OutPoint,
    Validator,
    ValidatorSet,
)
from timecoin.core.utxo import UtxoChanges

_TAG = b"timecoin/genesis/v1\x00"


@dataclass(frozen=True, slots=True)
class GenesisAllocation:
    """Coins that exist from the start."""

    pubkey_hash: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class GenesisValidator:
    """A masternode of the initial validator set."""

    pubkey: bytes
    """33-byte operator (validator) key."""
    tier: MasternodeTier
    reward_pubkey_hash: bytes
    name: str = ""


@dataclass(frozen=True, slots=True)
class Genesis:
    """The parsed genesis document."""

    chain_id: str
    network: Network
    genesis_time_ms: int
    allocations: tuple[GenesisAllocation, ...]
    validators: tuple[GenesisValidator, ...]


def validate_genesis(g: Genesis) -> None:
    """Raise ConfigError if *g* cannot start a chain."""
    if not g.chain_id or len(g.chain_id.encode()) > 64:
        raise ConfigError("genesis chain_id must be 1..64 bytes")
    if not g.validators:
        raise ConfigError("genesis lists no validators")
    total = 0
    for a in g.allocations:
        if len(a.pubkey_hash) != ADDRESS_PAYLOAD_LEN or a.amount <= 0:
            raise ConfigError("genesis allocation needs a 20-byte address and a positive amount")
        total += a.amount
    if total > MAX_MONEY_UNITS:
        raise ConfigError("genesis allocations exceed the money supply bound")
    seen: set[bytes] = set()
    for v in g.validators:
        validate_pubkey(v.pubkey)
        if v.pubkey in seen:
            raise ConfigError(f"genesis validator {v.pubkey.hex()} listed twice")
        seen.add(v.pubkey)
        if len(v.reward_pubkey_hash) != ADDRESS_PAYLOAD_LEN or len(v.name.encode()) > 255:
            raise ConfigError("genesis validator needs a 20-byte reward address and a short name")


def genesis_hash(g: Genesis) -> bytes:
    """Hash of the canonical genesis layout (module docstring); prev hash of block 1."""
    chain = g.chain_id.encode()
    parts = [
        _TAG,
        bytes([len(chain)]),
        chain,
        struct.pack(">QI", g.genesis_time_ms, len(g.allocations)),
    ]
    for a in g.allocations:
        parts.append(a.pubkey_hash + struct.pack(">Q", a.amount))
    parts.append(struct.pack(">I", len(g.validators)))
    for v in g.validators:
        name = v.name.encode()
        parts.append(
            v.pubkey + bytes([int(v.tier)]) + v.reward_pubkey_hash + bytes([len(name)]) + name
        )
    return sha256(b"".join(parts))


def genesis_changes(g: Genesis) -> UtxoChanges:
    """Return the UTXO set at height 0 as a change set (nothing spent)."""
    gh = genesis_hash(g)
    created = tuple(
        (OutPoint(gh, i), Coin(amount=a.amount, pubkey_hash=a.pubkey_hash, height=0))
        for i, a in enumerate(g.allocations)
    )
    return UtxoChanges(spent=(), created=created)


def genesis_validator_set(g: Genesis) -> ValidatorSet:
    """Return the validator set that decides heights 1 and 2."""
    return ValidatorSet(
        tuple(
            Validator(
                address=pubkey_hash(v.pubkey),
                pubkey=v.pubkey,
                power=v.tier.power,
                tier=v.tier,
                reward_pubkey_hash=v.reward_pubkey_hash,
            )
            for v in g.validators
        )
    )
