"""Masternode registry transitions: how a block changes the validator set.

The registry is itself a ``ValidatorSet``: every registered masternode with
its collateral outpoint, power and reward address. Genesis masternodes have no
collateral (the genesis file is the founding agreement) and leave only when
penalized.

A block at height H changes the registry, transaction by transaction, in block
order:

- a registration (``MasternodeRegistration``) adds a validator: address =
  SHA-256(operator_pubkey)[:20], power = ``tier.power``, collateral =
  ``OutPoint(txid, collateral_index)``, reward address = the collateral
  output's owner (the operator key is a hot key; rewards go to the cold
  owner);
- spending a collateral outpoint removes its validator, whether or not the
  transaction carries a ``MasternodeDeregistration`` (which must spend the
  collateral it names, ``core.tx``);
- a registration whose operator address is already registered is invalid
  (BadPayload): one key cannot hold two seats.

**H+2 rule** (as CometBFT): the registry after block H is the validator set
that decides height H+2. Block H's header commits to the set deciding H
(``validators_hash``) and to the one deciding H+1 (``next_validators_hash``),
both already fixed when H is proposed, so every validator knows two heights
ahead who votes. Equivalently: ``set(H+2) = apply(set(H+1), updates(H))``,
which ``next_validator_set`` computes. If the updates would empty the set, the
set is kept unchanged: a chain without validators could never decide another
block. Penalties for evidence (``rules.penalize``) are applied by the node on
the result, so they take effect at H+2 too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from timecoin.core.errors import BadCollateral, BadPayload
from timecoin.core.keys import pubkey_hash
from timecoin.core.types import (
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    Transaction,
    Validator,
    ValidatorSet,
)


@dataclass(frozen=True, slots=True)
class ValidatorUpdates:
    """The net effect of one block on the registry."""

    removed: tuple[bytes, ...] = ()
    """Addresses that leave (applied first)."""
    added: tuple[Validator, ...] = ()
    """Validators that join or whose entry changed (applied after removals)."""

    def __bool__(self) -> bool:
        return bool(self.removed or self.added)


def registration_validator(tx: Transaction, reg: MasternodeRegistration) -> Validator:
    """Return the validator entry a registration transaction creates.

    Raises BadPayload/BadCollateral for a payload ``core.tx`` would reject, so
    calling this on an unvalidated transaction is still safe.
    """
    outputs = tx.body.outputs
    idx = reg.collateral_index
    if not isinstance(reg.tier, MasternodeTier):
        raise BadPayload(f"unknown masternode tier {reg.tier!r}")
    if type(idx) is not int or not 0 <= idx < len(outputs):
        raise BadCollateral(f"collateral_index {idx} names no output")
    collateral = outputs[idx]
    return Validator(
        address=pubkey_hash(reg.operator_pubkey),
        pubkey=reg.operator_pubkey,
        power=reg.tier.power,
        tier=reg.tier,
        collateral=OutPoint(tx.txid, reg.collateral_index),
        reward_pubkey_hash=collateral.pubkey_hash,
    )


def validator_updates(
    txs: Sequence[Transaction],
    registry: ValidatorSet,
    *,
    jailed: Iterable[bytes] = (),
    strict: bool = True,
) -> ValidatorUpdates:
    """Return how *txs* (one block, in order) change *registry*.

    *registry* is the registry before the block (= the set deciding the next
    height). *jailed* addresses are removed as well. With ``strict`` a
    registration of an already registered operator raises BadPayload (with
    ``details['index']``, the transaction's position); without it the
    registration is ignored (a plain output), which is what replaying an
    already validated block needs. The mempool checks one transaction with
    ``validator_updates([tx], registry)``.
    """
    entries: dict[bytes, Validator] = {v.address: v for v in registry.validators}
    by_collateral: dict[OutPoint, bytes] = {
        v.collateral: v.address for v in registry.validators if v.collateral is not None
    }
    for i, tx in enumerate(txs):
        body = tx.body
        if by_collateral:  # else no input can spend a collateral (the loop is per block tx)
            for txin in body.inputs:
                addr = by_collateral.pop(txin.prev_out, None)
                if addr is not None:
                    entries.pop(addr, None)
        mn = body.masternode
        if isinstance(mn, MasternodeRegistration):
            v = registration_validator(tx, mn)
            if v.address in entries:
                if strict:
                    raise BadPayload(
                        f"operator {v.address.hex()} is already a registered masternode",
                        index=i,
                    )
                continue
            entries[v.address] = v
            by_collateral[OutPoint(tx.txid, mn.collateral_index)] = v.address
    for addr in jailed:
        v_old = entries.pop(addr, None)
        if v_old is not None and v_old.collateral is not None:
            by_collateral.pop(v_old.collateral, None)
    before = {v.address: v for v in registry.validators}
    removed = tuple(sorted(a for a, v in before.items() if a not in entries or entries[a] != v))
    added = tuple(
        sorted(
            (v for a, v in entries.items() if before.get(a) != v),
            key=lambda v: v.address,
        )
    )
    return ValidatorUpdates(removed=removed, added=added)


def apply_validator_updates(vs: ValidatorSet, updates: ValidatorUpdates) -> ValidatorSet:
    """Return *vs* with *updates* applied (removals, then additions)."""
    if not updates:
        return vs
    gone = set(updates.removed)
    kept = {v.address: v for v in vs.validators if v.address not in gone}
    for v in updates.added:
        kept[v.address] = v
    return ValidatorSet(tuple(kept.values()))


def next_validator_set(set_h1: ValidatorSet, updates_h: ValidatorUpdates) -> ValidatorSet:
    """Return the set deciding H+2, given the set deciding H+1 and block H's updates.

    Keeps *set_h1* if the updates would leave no validator (the chain must stay live).
    """
    result = apply_validator_updates(set_h1, updates_h)
    if len(result) == 0 or result.total_power <= 0:
        return set_h1
    return result


def remove_validators(vs: ValidatorSet, addresses: Iterable[bytes]) -> ValidatorSet:
    """Return *vs* without *addresses* (e.g. jailed equivocators)."""
    gone = set(addresses)
    return ValidatorSet(tuple(v for v in vs.validators if v.address not in gone))
