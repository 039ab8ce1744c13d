"""One error hierarchy for the whole node; every class carries a reason code.

``Reason`` mirrors the proto enum ``timecoin.types.v1.Reason`` value for value
(tests/unit/test_errors.py keeps them equal); clients branch on it. The mapping
of reasons to gRPC status codes lives in one place, ``timecoin/api/errors.py``.

Invalid input always raises one of these and never comes back as ``None`` or
``False``. A class names the check that failed; its attributes carry the values
that were wrong.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar


class Reason(IntEnum):
    """Stable rejection codes (proto ``timecoin.types.v1.Reason`` without the prefix)."""

    UNSPECIFIED = 0
    INTERNAL = 1
    MALFORMED = 2
    OVERSIZED = 3
    NON_CANONICAL = 4
    WRONG_CHAIN = 5
    BAD_VERSION = 6
    BAD_ADDRESS = 7
    BAD_PUBKEY = 8
    BAD_SIGNATURE = 9
    MISSING_INPUT = 10
    DOUBLE_SPEND = 11
    DUPLICATE_INPUT = 12
    WRONG_OWNER = 13
    VALUE_OVERFLOW = 14
    INSUFFICIENT_FUNDS = 15
    FEE_TOO_LOW = 16
    DUST_OUTPUT = 17
    MEMO_TOO_LARGE = 18
    TOO_MANY_ITEMS = 19
    BAD_COINBASE = 20
    BAD_PAYLOAD = 21
    BAD_COLLATERAL = 22
    BAD_HEADER = 23
    BAD_HEIGHT = 24
    BAD_PREV_HASH = 25
    BAD_TIME = 26
    BAD_MERKLE_ROOT = 27
    BAD_TX_ORDER = 28
    BAD_REWARD = 29
    BAD_COMMIT = 30
    BAD_VALIDATORS_HASH = 31
    BAD_PROPOSER = 32
    BAD_UTXO_COMMITMENT = 33
    BAD_EVIDENCE = 34
    UNKNOWN_VALIDATOR = 35
    DUPLICATE_VOTE = 36
    CONFLICTING_VOTE = 37
    FUTURE_HEIGHT = 38
    STALE_HEIGHT = 39
    DOUBLE_SIGN_REFUSED = 40
    RULES_REJECTED = 41
    MEMPOOL_FULL = 42
    ALREADY_KNOWN = 43
    NOT_FOUND = 44
    UNAUTHENTICATED = 45
    RATE_LIMITED = 46
    STORAGE = 47
    CONFIG = 48


class TimecoinError(Exception):
    """Base of every error the node raises on purpose.

    ``reason`` is a class attribute so a handler can map a class to a code
    without an instance; an instance may override it (``reason=``) when one
    class covers several codes, e.g. a block rejected because of one of its
    transactions keeps that transaction's reason.
    """

    reason: ClassVar[Reason] = Reason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if reason is not None:
            self.reason = reason  # type: ignore[misc]

    def __str__(self) -> str:
        return f"{self.reason.name}: {self.message}"


# --- decoding -------------------------------------------------------------


class DecodeError(TimecoinError):
    """Bytes that do not parse as the expected message."""

    reason = Reason.MALFORMED


class Oversized(DecodeError):
    """A message, field or collection exceeds its bound."""

    reason = Reason.OVERSIZED


class NonCanonical(DecodeError):
    """A message carries unknown fields or a non-canonical encoding."""

    reason = Reason.NON_CANONICAL


class BadAddress(DecodeError):
    """An address string with a bad prefix, encoding, checksum or network."""

    reason = Reason.BAD_ADDRESS


class BadPubkey(DecodeError):
    """Bytes that are not a valid 33-byte compressed secp256k1 public key."""

    reason = Reason.BAD_PUBKEY


# --- transactions ---------------------------------------------------------


class InvalidTransaction(TimecoinError):
    """A transaction that breaks a ledger rule."""

    reason = Reason.MALFORMED


class WrongChain(InvalidTransaction):
    reason = Reason.WRONG_CHAIN


class BadVersion(InvalidTransaction):
    reason = Reason.BAD_VERSION


class BadSignature(InvalidTransaction):
    reason = Reason.BAD_SIGNATURE


class MissingInput(InvalidTransaction):
    reason = Reason.MISSING_INPUT


class DoubleSpend(InvalidTransaction):
    reason = Reason.DOUBLE_SPEND


class DuplicateInput(InvalidTransaction):
    reason = Reason.DUPLICATE_INPUT


class WrongOwner(InvalidTransaction):
    reason = Reason.WRONG_OWNER


class ValueOverflow(InvalidTransaction):
    reason = Reason.VALUE_OVERFLOW


class InsufficientFunds(InvalidTransaction):
    reason = Reason.INSUFFICIENT_FUNDS


class FeeTooLow(InvalidTransaction):
    reason = Reason.FEE_TOO_LOW


class DustOutput(InvalidTransaction):
    reason = Reason.DUST_OUTPUT


class MemoTooLarge(InvalidTransaction):
    reason = Reason.MEMO_TOO_LARGE


class TooManyItems(InvalidTransaction):
    reason = Reason.TOO_MANY_ITEMS


class BadCoinbase(InvalidTransaction):
    reason = Reason.BAD_COINBASE


class BadPayload(InvalidTransaction):
    reason = Reason.BAD_PAYLOAD


class BadCollateral(InvalidTransaction):
    reason = Reason.BAD_COLLATERAL


# --- blocks ---------------------------------------------------------------


class InvalidBlock(TimecoinError):
    """A block that breaks a ledger or consensus rule."""

    reason = Reason.BAD_HEADER


class BadHeader(InvalidBlock):
    reason = Reason.BAD_HEADER


class BadHeight(InvalidBlock):
    reason = Reason.BAD_HEIGHT


class BadPrevHash(InvalidBlock):
    reason = Reason.BAD_PREV_HASH


class BadTime(InvalidBlock):
    reason = Reason.BAD_TIME


class BadMerkleRoot(InvalidBlock):
    reason = Reason.BAD_MERKLE_ROOT


class BadTxOrder(InvalidBlock):
    reason = Reason.BAD_TX_ORDER


class BadReward(InvalidBlock):
    reason = Reason.BAD_REWARD


class BadCommit(InvalidBlock):
    reason = Reason.BAD_COMMIT


class BadValidatorsHash(InvalidBlock):
    reason = Reason.BAD_VALIDATORS_HASH


class BadProposer(InvalidBlock):
    reason = Reason.BAD_PROPOSER


class BadUtxoCommitment(InvalidBlock):
    reason = Reason.BAD_UTXO_COMMITMENT


class BadEvidence(InvalidBlock):
    reason = Reason.BAD_EVIDENCE


class BlockTransactionInvalid(InvalidBlock):
    """A block containing an invalid transaction; keeps the transaction's reason."""

    def __init__(self, index: int, cause: TimecoinError) -> None:
        super().__init__(f"transaction {index}: {cause.message}", reason=cause.reason)
        self.index = index
        self.cause = cause


# --- consensus messages ---------------------------------------------------


class InvalidVote(TimecoinError):
    """A vote or proposal that cannot be counted."""

    reason = Reason.BAD_SIGNATURE


class UnknownValidator(InvalidVote):
    reason = Reason.UNKNOWN_VALIDATOR


class DuplicateVote(InvalidVote):
    reason = Reason.DUPLICATE_VOTE


class ConflictingVote(InvalidVote):
    """Two different votes of one validator for the same height/round/type."""

    reason = Reason.CONFLICTING_VOTE


class FutureHeight(InvalidVote):
    reason = Reason.FUTURE_HEIGHT


class StaleHeight(InvalidVote):
    reason = Reason.STALE_HEIGHT


class DoubleSignRefused(TimecoinError):
    """The signer refuses a message that conflicts with one it already signed."""

    reason = Reason.DOUBLE_SIGN_REFUSED


class RulesRejected(TimecoinError):
    """A consensus-rules plugin rejected a transaction or block."""

    reason = Reason.RULES_REJECTED


# --- node -----------------------------------------------------------------


class MempoolFull(TimecoinError):
    reason = Reason.MEMPOOL_FULL


class AlreadyKnown(TimecoinError):
    reason = Reason.ALREADY_KNOWN


class NotFound(TimecoinError):
    reason = Reason.NOT_FOUND


class Unauthenticated(TimecoinError):
    reason = Reason.UNAUTHENTICATED


class RateLimited(TimecoinError):
    reason = Reason.RATE_LIMITED


class StorageError(TimecoinError):
    reason = Reason.STORAGE


class ConfigError(TimecoinError):
    reason = Reason.CONFIG
