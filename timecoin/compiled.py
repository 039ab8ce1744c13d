"""Which of the node's modules run compiled (mypyc), and a guard against stale ones.

The per-transaction hot path (decoding, the pool, the ledger rules, the chain
store; the list is in ``pyproject.toml``) is compiled to C extensions with
mypyc when the package is installed. An extension sits next to its source
(``mempool.py`` beside ``mempool.cpython-311-x86_64-linux-gnu.so``) and Python
imports the extension first. In a source checkout (an editable install) an
extension older than its source would run old code after an edit, a pull or
a checkout. So, when the package is imported from a checkout and any
compiled module is older than its source, or no longer in ``pyproject.toml``'s
list (its extension left behind), every compiled module is imported
from its source instead (the compiled modules call each other directly, so
one stale module taints them all), with a warning that says to reinstall.

``TIMED_PURE_PYTHON=1`` in the environment runs every compiled module from
its source too: for a profiler that samples Python frames, or to compare.

``STATE`` tells the node and the benchmarks what is running: ``"compiled"``,
``"source"`` (nothing was compiled, as when installed with
``HATCH_BUILD_NO_HOOKS=true``, or ``TIMED_PURE_PYTHON=1``) or ``"stale"``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import tomllib
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

PACKAGE_DIR = Path(__file__).resolve().parent


def _extensions(root: Path) -> dict[str, tuple[Path, Path]]:
    """Map each compiled module's name to (its source, its extension)."""
    found: dict[str, tuple[Path, Path]] = {}
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        names = set(files)
        for name in files:
            if name.endswith(suffixes):
                stem = name.split(".", 1)[0]
                if stem + ".py" in names:
                    base = Path(folder)
                    module = ".".join(base.relative_to(root.parent).parts + (stem,))
                    found[module] = (base / f"{stem}.py", base / name)
    return found


class SourceFinder(importlib.abc.MetaPathFinder):
    """Import the named modules from their ``.py`` files, never their extensions."""

    def __init__(self, sources: dict[str, Path]) -> None:
        self._sources = sources

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        source = self._sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def configured(project: Path) -> set[str] | None:
    """Return the modules *project* (a pyproject.toml) compiles, or None if it does not say."""
    try:
        cfg = tomllib.loads(project.read_text())
        paths = cfg["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]["include"]
        return {str(p).removesuffix(".py").replace("/", ".") for p in paths}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def inspect(root: Path) -> tuple[str, dict[str, Path], list[str]]:
    """Return the state under *root*, each compiled module's source, and the stale ones.

    Stale: older than its source, or (in a checkout) no longer in the project's
    list, as when a module is taken off it and its old extension stays behind.
    """
    compiled = _extensions(root)
    sources = {name: source for name, (source, _) in compiled.items()}
    if not compiled:
        return "source", sources, []
    project = root.parent / "pyproject.toml"
    if not project.exists():
        return "compiled", sources, []  # an installed wheel: built from these sources
    listed = configured(project)
    stale = sorted(
        name
        for name, (source, ext) in compiled.items()
        if source.stat().st_mtime_ns > ext.stat().st_mtime_ns
        or (listed is not None and name not in listed)
    )
    return ("stale" if stale else "compiled"), sources, stale


STATE, _sources, _stale = inspect(PACKAGE_DIR)
MODULES = sorted(_sources)
"""What runs (``compiled``, ``source`` or ``stale``), and the modules built as extensions."""

if STATE == "compiled" and os.environ.get("TIMED_PURE_PYTHON") == "1":
    STATE = "source"
    sys.meta_path.insert(0, SourceFinder(_sources))
elif STATE == "stale":
    sys.meta_path.insert(0, SourceFinder(_sources))
    warnings.warn(
        f"compiled modules older than their source or off pyproject.toml's list "
        f"({', '.join(_stale)}): running all {len(_sources)} from source. Reinstall "
        "(pip install -e .) to compile them again; delete the extension of a module "
        "taken off the list",
        RuntimeWarning,
        stacklevel=1,
    )
