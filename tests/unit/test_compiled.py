"""The compiled hot path: built as configured, and never run stale from a checkout."""

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from timecoin import compiled

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def test_the_configured_modules_run_compiled():
    if compiled.STATE != "compiled":
        if os.environ.get("TIMED_REQUIRE_COMPILED") == "1":
            pytest.fail(f"compiled modules are {compiled.STATE}: reinstall (pip install -e .)")
        pytest.skip(f"compiled modules are {compiled.STATE} (installed without the mypyc hook?)")
    assert compiled.MODULES == sorted(compiled.configured(ROOT / "pyproject.toml") or ())
    for name in compiled.MODULES:
        __import__(name)
        assert sys.modules[name].__file__.endswith(SUFFIX), name


def _tree(tmp_path: Path, *, checkout: bool) -> Path:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    for rel in ("__init__.py", "sub/__init__.py", "plain.py"):
        (root / rel).write_text("")
    (root / "sub" / "hot.py").write_text("WHERE = 'source'\n")
    (root / "sub" / f"hot{SUFFIX}").write_bytes(b"")
    (root / "fast.py").write_text("")
    (root / f"fast{SUFFIX}").write_bytes(b"")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / f"junk{SUFFIX}").write_bytes(b"")
    if checkout:
        (tmp_path / "pyproject.toml").write_text("")
    return root


def _age(path: Path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_an_extension_older_than_its_source_is_stale_in_a_checkout(tmp_path):
    root = _tree(tmp_path, checkout=True)
    _age(root / "fast.py", 60)
    _age(root / "sub" / "hot.py", 60)
    state, sources, stale = compiled.inspect(root)
    assert (state, stale) == ("compiled", [])
    assert sources == {"pkg.fast": root / "fast.py", "pkg.sub.hot": root / "sub" / "hot.py"}

    _age(root / "sub" / f"hot{SUFFIX}", 120)  # the source was edited after the build
    state, _, stale = compiled.inspect(root)
    assert (state, stale) == ("stale", ["pkg.sub.hot"])


def test_an_extension_taken_off_the_list_is_stale_in_a_checkout(tmp_path):
    root = _tree(tmp_path, checkout=True)
    _age(root / "fast.py", 60)
    _age(root / "sub" / "hot.py", 60)
    hook = "[tool.hatch.build.targets.wheel.hooks.mypyc]\ninclude = {}\n"
    project = tmp_path / "pyproject.toml"
    project.write_text(hook.format('["pkg/fast.py", "pkg/sub/hot.py"]'))
    assert compiled.inspect(root)[0] == "compiled"
    project.write_text(hook.format('["pkg/fast.py"]'))  # hot.py's extension is left over
    state, _, stale = compiled.inspect(root)
    assert (state, stale) == ("stale", ["pkg.sub.hot"])


def test_an_installed_wheel_is_never_stale(tmp_path):
    root = _tree(tmp_path, checkout=False)
    _age(root / "sub" / f"hot{SUFFIX}", 120)
    assert compiled.inspect(root)[0] == "compiled"


def test_a_tree_without_extensions_runs_from_source(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    (root / "mod.py").write_text("")
    assert compiled.inspect(root) == ("source", {}, [])


def test_the_source_finder_imports_the_py_file_beside_an_extension(tmp_path):
    root = _tree(tmp_path, checkout=True)
    _, sources, _ = compiled.inspect(root)
    finder = compiled.SourceFinder(sources)
    assert finder.find_spec("pkg.plain") is None
    spec = finder.find_spec("pkg.sub.hot")
    assert spec is not None and spec.origin == str(root / "sub" / "hot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WHERE == "source"


def test_pure_python_can_be_asked_for():
    if compiled.STATE != "compiled":
        pytest.skip(f"compiled modules are {compiled.STATE}")
    code = "import timecoin.compiled as c, timecoin.node.mempool as m; print(c.STATE, m.__file__)"
    env = {**os.environ, "TIMED_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    state, path = out.stdout.split()
    assert (state, Path(path)) == ("source", ROOT / "timecoin" / "node" / "mempool.py")
