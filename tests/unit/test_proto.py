"""The protos lint clean, are formatted, and the committed Python code is fresh."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from timecoin._proto.types.v1 import types_pb2
from timecoin.core.errors import Reason
from timecoin.devtools import genproto

ROOT = Path(__file__).resolve().parents[2]


def _buf() -> str | None:
    local = ROOT / ".ci/tools/node_modules/.bin/buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None and os.environ.get("TIMED_REQUIRE_BUF") == "1":
        pytest.fail("buf is required (npm ci --prefix .ci/tools)")
    return found


def test_generated_code_is_fresh():
    diffs = genproto.check()
    assert diffs == [], "stale timecoin/_proto; run: python -m timecoin.devtools.genproto"


def test_staleness_is_detected(tmp_path, monkeypatch):
    fake = tmp_path / "_proto"
    shutil.copytree(genproto.OUT_DIR, fake)
    (fake / "types/v1/types_pb2.py").write_text("# edited\n")
    monkeypatch.setattr(genproto, "OUT_DIR", fake)
    assert any("types_pb2.py" in d for d in genproto.check())


def test_reason_enum_mirrors_proto():
    proto = {name.removeprefix("REASON_"): num for name, num in types_pb2.Reason.items()}
    assert proto == {r.name: r.value for r in Reason}


@pytest.mark.parametrize("cmd", [["lint"], ["format", "--diff", "--exit-code"]])
def test_buf(cmd):
    buf = _buf()
    if buf is None:
        pytest.skip("buf not installed (npm ci --prefix .ci/tools)")
    res = subprocess.run([buf, *cmd], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
