"""core/ and consensus/ stay pure: no I/O, clock, randomness or generated protobuf."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "asyncio",
    "grpc",
    "plyvel",
    "time",
    "random",
    "socket",
    "threading",
    "os",
    "subprocess",
}
FORBIDDEN_PREFIXES = (
    "timecoin._proto",
    "timecoin.node",
    "timecoin.p2p",
    "timecoin.api",
    "timecoin.storage",
    "timecoin.wire",
)
PURE_PACKAGES = ["timecoin/core", "timecoin/consensus"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _pure_files() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_pure_packages_exist():
    assert len(_pure_files()) >= 5


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_io_imports(path):
    bad = [
        n
        for n in _imports(path)
        if n.split(".")[0] in FORBIDDEN or n.startswith(FORBIDDEN_PREFIXES)
    ]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_checker_catches_a_violation(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("import asyncio\nfrom timecoin._proto.types.v1 import types_pb2\n")
    assert _imports(f) == ["asyncio", "timecoin._proto.types.v1"]
