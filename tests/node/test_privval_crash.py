"""Crash exactly around the double-sign guard write and restart (failpoints, real processes)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from timecoin.core.errors import DoubleSignRefused
from timecoin.core.keys import KeyPair
from timecoin.core.types import Vote, VoteType
from timecoin.node.failpoints import CRASH_EXIT_CODE
from timecoin.node.privval import FilePrivValidator

ROOT = Path(__file__).resolve().parents[2]
SECRET = (7).to_bytes(32, "big")
SIGNER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from timecoin.core.keys import KeyPair
    from timecoin.core.types import Vote, VoteType
    from timecoin.node.privval import FilePrivValidator
    key = KeyPair.from_secret((7).to_bytes(32, "big"))
    pv = FilePrivValidator(key, "chain-x", Path(sys.argv[1]))
    pv.sign_vote(Vote(VoteType.PREVOTE, 5, 0, b"\\x01" * 32, key.address_payload))
    print("SIGNED")
    """
)


def _vote(block: bytes) -> Vote:
    key = KeyPair.from_secret(SECRET)
    return Vote(VoteType.PREVOTE, 5, 0, block, key.address_payload)


@pytest.mark.parametrize("point", ["privval_write.before", "privval_write.after"])
def test_crash_around_guard_write(tmp_path, point):
    state = tmp_path / "priv_validator_state.json"
    env = dict(os.environ, TIMED_FAILPOINTS=f"{point}=crash")
    res = subprocess.run(
        [sys.executable, "-c", SIGNER, str(state)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == CRASH_EXIT_CODE, res.stderr
    assert "SIGNED" not in res.stdout  # the signature never left the process

    pv = FilePrivValidator(KeyPair.from_secret(SECRET), "chain-x", state)
    if point == "privval_write.before":
        # nothing was persisted, nothing was sent: either vote may be signed now
        assert pv.sign_vote(_vote(b"\x02" * 32)).signature
    else:
        # persisted before it could be sent: the same vote is re-signed, a conflict refused
        assert pv.sign_vote(_vote(b"\x01" * 32)).signature
        with pytest.raises(DoubleSignRefused):
            pv.sign_vote(_vote(b"\x02" * 32))
