"""A validator's signing key with a persisted double-sign guard (as CometBFT's FilePV).

The decision is ``timecoin.consensus.guard.check_sign_request``; this module
adds the durability: the last signed (height, round, step, block hash,
signature) is written to a small JSON state file *before* the signature is
returned to the caller, so a message can never leave the node unless the
node would refuse to sign a conflicting one after a crash or restart.

The write is atomic and durable: write a temporary file in the same directory,
``fsync`` it, ``os.replace`` it over the state file, then ``fsync`` the
directory so the rename itself survives a power loss. A crash at any point
leaves either the old or the new state, never a torn file. If the state file
exists but cannot be read, construction fails: starting with an empty guard
could double-sign, so an operator must look.

Signing is synchronous and short (one ECDSA signature plus one small fsync);
the node calls it from the consensus driver, off the event loop if it wants.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from pathlib import Path

from timecoin.consensus.guard import (
    SignRequest,
    SignState,
    SignStep,
    check_sign_request,
    sign_request_for_proposal,
    sign_request_for_vote,
)
from timecoin.core.errors import ConfigError
from timecoin.core.keys import KeyPair
from timecoin.core.signing import proposal_sign_digest, vote_sign_digest
from timecoin.core.types import Proposal, Vote
from timecoin.node import failpoints

STATE_VERSION = 1


def _encode(state: SignState) -> bytes:
    return json.dumps(
        {
            "version": STATE_VERSION,
            "height": state.height,
            "round": state.round,
            "step": int(state.step),
            "block_hash": state.block_hash.hex(),
            "pol_round": state.pol_round,
            "signature": state.signature.hex(),
        },
        sort_keys=True,
    ).encode()


def _decode(raw: bytes, path: Path) -> SignState:
    try:
        d = json.loads(raw)
        if d.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported version {d.get('version')!r}")
        return SignState(
            height=int(d["height"]),
            round=int(d["round"]),
            step=SignStep(int(d["step"])),
            block_hash=bytes.fromhex(d["block_hash"]),
            signature=bytes.fromhex(d["signature"]),
            pol_round=int(d.get("pol_round", -1)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable double-sign guard state {path}: {exc}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """Replace *path* with *data* atomically and durably (temp file, fsync, rename, fsync dir)."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_sign_state(path: Path) -> SignState | None:
    """Read the guard state at *path*; None if the validator never signed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    return _decode(raw, path)


class FilePrivValidator:
    """Guarded signer for the consensus engine (``timecoin.consensus.engine.Signer``).

    ``FilePrivValidator(key, chain_id, state_path)``: a new instance on the
    same path after a restart refuses anything that conflicts with what was
    signed before.
    """

    def __init__(self, key: KeyPair, chain_id: str, state_path: Path) -> None:
        self.key = key
        self.chain_id = chain_id
        self.address = key.address_payload
        self.state_path = Path(state_path)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.last = load_sign_state(self.state_path)
        self._lock = threading.Lock()

    def _sign(self, req: SignRequest, digest: bytes) -> bytes:
        with self._lock:
            stored = check_sign_request(self.last, req)  # raises DoubleSignRefused
            if stored is not None:
                return stored
            sig = self.key.sign(digest)
            state = SignState(req.height, req.round, req.step, req.block_hash, sig, req.pol_round)
            failpoints.hit("privval_write.before")
            write_atomic(self.state_path, _encode(state))  # durable before it is returned
            failpoints.hit("privval_write.after")
            self.last = state
            return sig

    def sign_vote(self, vote: Vote) -> Vote:
        """Return *vote* signed, after persisting it as the last signed message."""
        sig = self._sign(sign_request_for_vote(vote), vote_sign_digest(self.chain_id, vote))
        return dataclasses.replace(vote, signature=sig)

    def sign_proposal(self, proposal: Proposal) -> Proposal:
        """Return *proposal* signed, after persisting it as the last signed message."""
        sig = self._sign(
            sign_request_for_proposal(proposal), proposal_sign_digest(self.chain_id, proposal)
        )
        return dataclasses.replace(proposal, signature=sig)
