"""Domain types of the ledger and of consensus: frozen, slotted dataclasses.

Protobuf appears only at the edges (``timecoin/wire``); everything in ``core``
and ``consensus`` works on these. Signed structures keep the exact bytes that
were signed or hashed (``body_bytes``, ``header_bytes``): the node hashes and
verifies those bytes and never re-serializes them (DESIGN.md, Protocol).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

UNITS_PER_TIME = 100_000_000
"""1 TIME = 10^8 units; amounts are integer units everywhere."""

MAX_MONEY_UNITS = 10_000_000_000 * UNITS_PER_TIME
"""Upper bound for any amount or sum of amounts (10 billion TIME, below 2^63)."""

HASH_LEN = 32
ADDRESS_PAYLOAD_LEN = 20
PUBKEY_LEN = 33
SIGNATURE_LEN = 64

BLOCK_REWARD_UNITS = 100 * UNITS_PER_TIME
"""Newly created coins per block, paid with the fees by the coinbase."""


class Network(IntEnum):
    """Address network digit: 1 for mainnet, 0 for testnet and devnet."""

    TEST = 0
    MAIN = 1


class MasternodeTier(IntEnum):
    """Masternode tiers; values equal the proto ``MasternodeTier`` enum."""

    BRONZE = 1
    SILVER = 2
    GOLD = 3

    @property
    def collateral_units(self) -> int:
        """Exact collateral output amount that registers this tier."""
        return {1: 1_000, 2: 10_000, 3: 100_000}[self.value] * UNITS_PER_TIME

    @property
    def power(self) -> int:
        """Voting power, proportional to collateral (1 : 10 : 100)."""
        return {1: 1, 2: 10, 3: 100}[self.value]


class OutPoint(NamedTuple):
    """One output of an earlier transaction.

    A named tuple rather than a dataclass: outpoints key every UTXO map (the
    block overlay, the mempool's spend index, the store's cache), and a
    tuple's hash and equality run in C, where a dataclass's generated
    ``__hash__`` is a Python call on each lookup. Ordering is by (txid, index).
    """

    txid: bytes
    """SHA-256(body_bytes) of the creating transaction."""
    index: int  # type: ignore[assignment]  # shadows tuple.index(), never used on outpoints
    """Position of the output in that transaction."""

    def __str__(self) -> str:
        return f"{self.txid.hex()}:{self.index}"


class TxIn(NamedTuple):
    """A spend of ``prev_out`` by the holder of ``pubkey``.

    Named tuples (like ``OutPoint``, ``TxOut`` and ``Coin``): built for every
    input a node decodes, where a frozen dataclass's ``__init__`` costs
    several times a tuple's.
    """

    prev_out: OutPoint
    pubkey: bytes
    """33-byte compressed public key whose hash must equal the coin's owner."""


class TxOut(NamedTuple):
    """A new coin."""

    amount: int
    """Units, > 0 and >= the dust limit."""
    pubkey_hash: bytes
    """20-byte address payload: SHA-256(compressed pubkey)[:20]."""


@dataclass(frozen=True, slots=True)
class MasternodeRegistration:
    """Locks ``outputs[collateral_index]`` of the same transaction as collateral."""

    tier: MasternodeTier
    collateral_index: int
    operator_pubkey: bytes
    """Validator (operator) key, separate from the collateral owner's key."""


@dataclass(frozen=True, slots=True)
class MasternodeDeregistration:
    """Removes the masternode whose collateral this transaction spends."""

    collateral: OutPoint


class TxBody(NamedTuple):
    """The parsed content of ``Transaction.body_bytes``.

    A named tuple, like ``TxIn``: one is built for every transaction a node
    decodes (a frozen dataclass's ``__init__`` with these seven fields cost
    1.9 us of the 13 us a decode takes).
    """

    version: int
    chain_id: str
    inputs: tuple[TxIn, ...]
    outputs: tuple[TxOut, ...]
    memo: bytes = b""
    coinbase_height: int = 0
    """Block height in a coinbase (no inputs); zero otherwise."""
    masternode: MasternodeRegistration | MasternodeDeregistration | None = None


class Transaction(NamedTuple):
    """A transaction as received: the signed bytes, signatures and parsed body (a named tuple)."""

    body_bytes: bytes
    """Exact serialized body the signatures cover."""
    signatures: tuple[bytes, ...]
    """One 64-byte compact signature per input, in input order."""
    body: TxBody
    txid: bytes
    """SHA-256(body_bytes)."""
    size: int = 0
    """Encoded size of the whole transaction in bytes (fee rate basis)."""

    @property
    def is_coinbase(self) -> bool:
        """A coinbase has no inputs; it is valid only as a block's first transaction."""
        return not self.body.inputs


class Coin(NamedTuple):
    """An unspent output as held in the UTXO set (a named tuple, see ``TxIn``)."""

    amount: int
    pubkey_hash: bytes
    height: int
    """Height of the block that created it."""
    is_coinbase: bool = False


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """The parsed content of ``Block.header_bytes``."""

    version: int
    chain_id: str
    height: int
    time_ms: int
    prev_block_hash: bytes
    tx_root: bytes
    last_commit_hash: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    utxo_commitment: bytes
    """MuHash3072 digest of the UTXO set after this block."""
    proposer_address: bytes
    evidence_hash: bytes


class VoteType(IntEnum):
    """Values equal the proto ``VoteType`` enum."""

    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit; ``block_hash == b''`` is a vote for nil."""

    type: VoteType
    height: int
    round: int
    block_hash: bytes
    validator_address: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class CommitSig:
    """One precommit signature inside a commit certificate."""

    validator_address: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Commit:
    """Precommits of more than 2/3 of the voting power for one block."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[CommitSig, ...]


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's signed offer of ``block_hash`` for (height, round)."""

    height: int
    round: int
    pol_round: int
    """Proof-of-lock round, or -1 (paper: validRound)."""
    block_hash: bytes
    proposer_address: bytes
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class DuplicateVoteEvidence:
    """Two conflicting votes signed by one validator for the same height/round/type."""

    vote_a: Vote
    vote_b: Vote


Evidence = DuplicateVoteEvidence


@dataclass(frozen=True, slots=True)
class Block:
    """A block as received: the hashed header bytes plus its parsed parts."""

    header_bytes: bytes
    header: BlockHeader
    txs: tuple[Transaction, ...]
    last_commit: Commit | None
    evidence: tuple[Evidence, ...] = ()
    hash: bytes = b""
    """SHA-256(header_bytes)."""
    size: int = 0


@dataclass(frozen=True, slots=True)
class Validator:
    """A masternode's validator entry."""

    address: bytes
    """SHA-256(pubkey)[:20]."""
    pubkey: bytes
    power: int
    tier: MasternodeTier | None = None
    collateral: OutPoint | None = None
    reward_pubkey_hash: bytes = b""
    """Where this validator's reward share is paid; empty means the address of ``pubkey``."""


@dataclass(frozen=True, slots=True)
class ValidatorSet:
    """Validators sorted by address; total power is their sum."""

    validators: tuple[Validator, ...]
    _index: dict[bytes, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.validators, key=lambda v: v.address))
        object.__setattr__(self, "validators", ordered)
        self._index.clear()
        self._index.update({v.address: i for i, v in enumerate(ordered)})

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def get(self, address: bytes) -> Validator | None:
        """Return the validator with *address*, or None if it is not in the set."""
        i = self._index.get(address)
        return None if i is None else self.validators[i]

    def __len__(self) -> int:
        return len(self.validators)

    def __contains__(self, address: object) -> bool:
        return address in self._index
