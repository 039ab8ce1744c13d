"""Masternode registry transitions and the H+2 rule."""

from __future__ import annotations

import pytest
from ledger_helpers import TIME, Chain, funded_view, key, make_set, pkh, spend, validator_key

from timecoin.core import errors as err
from timecoin.core.commit import validators_hash
from timecoin.core.keys import pubkey_hash
from timecoin.core.types import (
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    ValidatorSet,
)
from timecoin.core.validators import (
    ValidatorUpdates,
    apply_validator_updates,
    next_validator_set,
    remove_validators,
    validator_updates,
)

FEE = 10_000
BRONZE = MasternodeTier.BRONZE.collateral_units


def _register(op, owner, operator_key, tier=MasternodeTier.BRONZE, change=TIME):
    reg = MasternodeRegistration(tier=tier, collateral_index=0, operator_pubkey=operator_key.pubkey)
    return spend(
        [(op, key(owner))],
        [(tier.collateral_units, pkh(owner)), (change, pkh(owner))],
        masternode=reg,
    )


def _op(tx, i):
    return OutPoint(tx.txid, i)


@pytest.fixture
def funds():
    return funded_view([(1, 2_000 * TIME), (2, 20_000 * TIME)])


def test_registration_adds_validator(funds):
    _, ops = funds
    reg = _register(ops[0], 1, key(500))
    upd = validator_updates([reg], make_set([1]))
    assert upd.removed == ()
    (v,) = upd.added
    assert v.address == pubkey_hash(key(500).pubkey)
    assert v.pubkey == key(500).pubkey
    assert v.power == 1 and v.tier is MasternodeTier.BRONZE
    assert v.collateral == _op(reg, 0)
    assert v.reward_pubkey_hash == pkh(1)  # the collateral owner, not the operator key
    silver = _register(ops[1], 2, key(501), tier=MasternodeTier.SILVER)
    assert validator_updates([silver], make_set([1])).added[0].power == 10


def test_spending_collateral_removes(funds):
    _, ops = funds
    reg = _register(ops[0], 1, key(500))
    registry = apply_validator_updates(make_set([1]), validator_updates([reg], make_set([1])))
    assert len(registry) == 2
    plain_spend = spend([(_op(reg, 0), key(1))], [(BRONZE - FEE, pkh(1))])
    dereg = spend(
        [(_op(reg, 0), key(1))],
        [(BRONZE - FEE, pkh(1))],
        masternode=MasternodeDeregistration(_op(reg, 0)),
    )
    addr = pubkey_hash(key(500).pubkey)
    for tx in (plain_spend, dereg):
        upd = validator_updates([tx], registry)
        assert upd.removed == (addr,) and upd.added == ()
    # Spending the change output does not touch the masternode.
    assert not validator_updates([spend([(_op(reg, 1), key(1))], [(TIME - FEE, pkh(1))])], registry)


def test_register_and_spend_in_one_block_nets_out(funds):
    _, ops = funds
    reg = _register(ops[0], 1, key(500))
    gone = spend([(_op(reg, 0), key(1))], [(BRONZE - FEE, pkh(1))])
    assert not validator_updates([reg, gone], make_set([1]))


def test_duplicate_operator_rejected_or_ignored(funds):
    _, ops = funds
    first = _register(ops[0], 1, key(500))
    second = _register(ops[1], 2, key(500))
    with pytest.raises(err.BadPayload) as exc:
        validator_updates([first, second], make_set([1]))
    assert exc.value.details["index"] == 1
    lenient = validator_updates([first, second], make_set([1]), strict=False)
    assert [v.collateral for v in lenient.added] == [_op(first, 0)]
    # An existing validator's key cannot take a second seat either.
    vs = make_set([1])
    with pytest.raises(err.BadPayload):
        validator_updates([_register(ops[0], 1, validator_key(0))], vs)


def test_reregistration_after_leaving(funds):
    _, ops = funds
    reg = _register(ops[0], 1, key(500))
    registry = apply_validator_updates(make_set([1]), validator_updates([reg], make_set([1])))
    leave = spend([(_op(reg, 0), key(1))], [(BRONZE - FEE, pkh(1))])
    back = _register(ops[1], 2, key(500), tier=MasternodeTier.SILVER)
    upd = validator_updates([leave, back], registry)
    new = apply_validator_updates(registry, upd)
    v = new.get(pubkey_hash(key(500).pubkey))
    assert v is not None and v.power == 10 and v.collateral == _op(back, 0)


def test_jailed_and_genesis_validators():
    vs = make_set([1, 1, 1])
    target = vs.validators[1].address
    upd = validator_updates([], vs, jailed=[target])
    assert upd.removed == (target,)
    assert target not in apply_validator_updates(vs, upd)
    assert remove_validators(vs, [target]) == apply_validator_updates(vs, upd)


def test_next_set_never_empty():
    vs = make_set([1])
    upd = ValidatorUpdates(removed=(vs.validators[0].address,))
    assert next_validator_set(vs, upd) == vs
    assert len(apply_validator_updates(vs, upd)) == 0


def test_h_plus_two_in_a_chain():
    genesis = make_set([1, 1, 1])
    chain = Chain(genesis, [(1, 2_000 * TIME)])
    reg = _register(chain.genesis_outpoint(0), 1, key(500))
    newcomer = pubkey_hash(key(500).pubkey)
    r1 = chain.add([reg])
    assert [v.address for v in r1.validator_updates.added] == [newcomer]
    assert chain.sets[2] == genesis  # H+1 unchanged
    assert newcomer in chain.sets[3]  # H+2
    # Block 2 commits to the set deciding height 3 in next_validators_hash.
    chain.add()
    assert chain.blocks[1].header.next_validators_hash == validators_hash(chain.sets[3])
    chain.add()  # height 3, decided by the set with the newcomer
    assert chain.blocks[2].header.validators_hash == validators_hash(chain.sets[3])
    # Height 4's last commit includes the newcomer's precommit and pays it.
    r4 = chain.add([spend([(_op(reg, 0), key(1))], [(BRONZE - FEE, pkh(1))])])
    assert newcomer in {v.address for v in r4.signers}
    assert newcomer in chain.sets[5] and newcomer not in chain.sets[6]


def test_block_with_duplicate_registration_is_invalid():
    chain = Chain(make_set([1]), [(1, 2_000 * TIME), (2, 2_000 * TIME)])
    a = _register(chain.genesis_outpoint(0), 1, key(500))
    b = _register(chain.genesis_outpoint(1), 2, key(500))
    with pytest.raises(err.BlockTransactionInvalid) as exc:
        chain.validate(chain.build([a, b]))
    assert exc.value.reason == err.Reason.BAD_PAYLOAD and exc.value.index == 2


def test_set_is_sorted_by_address():
    vs = make_set([1, 2, 3, 4, 5])
    assert [v.address for v in vs.validators] == sorted(v.address for v in vs.validators)
    assert validators_hash(ValidatorSet(tuple(reversed(vs.validators)))) == validators_hash(vs)
