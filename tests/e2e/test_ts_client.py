"""The TypeScript example client (tests/interop/ts) against a real dev node.

It creates a key, receives coins, signs from body_bytes itself with a JS
secp256k1 library, submits, follows the status stream to FINAL and verifies
the commit certificate and merkle proof offline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TS = ROOT / "tests/interop/ts"
BUF = ROOT / ".ci/tools/node_modules/.bin/buf"


def _ready() -> bool:
    return (
        (TS / "node_modules/.bin/tsx").exists()
        and BUF.exists()
        and shutil.which("node") is not None
    )


async def test_typescript_client_signs_submits_and_verifies_finality(dev_node):
    if not _ready():
        if os.environ.get("TIMED_REQUIRE_TS") == "1":
            pytest.fail("TypeScript client tools missing: npm ci --prefix tests/interop/ts")
        pytest.skip("npm ci --prefix tests/interop/ts (and .ci/tools) not run")
    gen = await asyncio.to_thread(
        subprocess.run,
        [str(BUF), "generate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert gen.returncode == 0, gen.stderr
    node = dev_node()
    node.start()
    async with asyncio.timeout(120):
        await node.wait_ready()
        proc = await asyncio.create_subprocess_exec(
            str(TS / "node_modules/.bin/tsx"),
            "src/client.ts",
            "--rpc",
            node.target,
            "--home",
            str(node.home),
            cwd=TS,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "FINAL at height" in text
    assert "commit certificate verified: 100/100 power, merkle proof ok" in text
    node.stop()
