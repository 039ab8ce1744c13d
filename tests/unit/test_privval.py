"""Persisted double-sign guard: survives a restart, written before the signature is returned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from timecoin.core.errors import ConfigError, DoubleSignRefused
from timecoin.core.keys import is_valid_signature
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import Proposal, Vote, VoteType
from timecoin.node import privval
from timecoin.node.privval import FilePrivValidator, load_sign_state
from timecoin.sim.fixtures import block, validator_key

CHAIN = "timecoin-test"


def _vote(key_index: int, h: int, r: int, t: VoteType, value: bytes) -> Vote:
    return Vote(t, h, r, value, validator_key(key_index).address_payload)


def test_sign_restart_and_refuse_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "priv_validator_state.json"
    pv = FilePrivValidator(validator_key(0), CHAIN, path)
    signed = pv.sign_vote(_vote(0, 7, 1, VoteType.PRECOMMIT, block(1)))
    assert is_valid_signature(
        validator_key(0).pubkey, signed.signature, vote_sign_digest(CHAIN, signed)
    )

    restarted = FilePrivValidator(validator_key(0), CHAIN, path)  # "restart"
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(_vote(0, 7, 1, VoteType.PRECOMMIT, block(2)))
    with pytest.raises(DoubleSignRefused):
        restarted.sign_vote(_vote(0, 7, 1, VoteType.PREVOTE, block(1)))  # step regression
    # The very same message is re-signed with the stored signature.
    assert restarted.sign_vote(_vote(0, 7, 1, VoteType.PRECOMMIT, block(1))) == signed
    # Moving forward works and is persisted.
    restarted.sign_proposal(Proposal(8, 0, -1, block(3), validator_key(0).address_payload))
    state = load_sign_state(path)
    assert state is not None and (state.height, state.round, int(state.step)) == (8, 0, 1)


def test_state_is_durable_before_the_signature_is_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    pv = FilePrivValidator(validator_key(0), CHAIN, path)

    def crash(p: Path, data: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(privval, "write_atomic", crash)
    with pytest.raises(OSError):
        pv.sign_vote(_vote(0, 1, 0, VoteType.PREVOTE, block(1)))
    # Nothing was returned, and the in-memory guard did not move either.
    assert pv.last is None
    assert not path.exists()


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    pv = FilePrivValidator(validator_key(0), CHAIN, path)
    for h in range(1, 4):
        pv.sign_vote(_vote(0, h, 0, VoteType.PREVOTE, block(h)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    d = json.loads(path.read_text())
    assert d["height"] == 3 and d["block_hash"] == block(3).hex()


def test_unreadable_state_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError):
        FilePrivValidator(validator_key(0), CHAIN, path)
