#!/usr/bin/env python3
"""Check maskmm's import contracts (``[tool.importlinter]`` in pyproject.toml) with ``lint-imports``.

The sub-packages of the repository's top-level ``kernels/`` and ``models/`` folders install as
``maskmm.kernels.<name>`` and ``maskmm.models.<name>`` (setup.py maps each to its folder; an editable
install maps them with an import hook). grimp, which builds import-linter's graph, does not follow that
mapping: it walks the folder of the ``maskmm`` package it finds, so from a checkout it sees neither the
kernels nor the recipes. This script therefore copies the ``.py`` sources into a temporary folder laid
out as a wheel installs them and runs ``lint-imports`` there (the current directory comes first on
import-linter's path), with the contracts of this repository's pyproject.toml.

Line numbers in the report are those of the sources: ``maskmm.models.NAME.x`` is ``models/NAME/x.py``
and ``maskmm.kernels.NAME.x`` is ``kernels/NAME/x.py``.

    python .ci/lint_imports.py                      # all contracts
    python .ci/lint_imports.py --verbose --contract layers
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: source folder -> where its packages are installed (mirrors SOURCE_ROOTS in setup.py)
SOURCE_ROOTS = {"kernels": "maskmm/kernels", "models": "maskmm/models"}


def _copy_tree(src: Path, dst: Path) -> None:
    for f in src.rglob("*.py"):
        if "__pycache__" in f.parts:
            continue
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)


def stage(dest: Path, repo: Path = REPO) -> Path:
    """Copy the ``.py`` sources of ``repo`` into ``dest`` as installed; return ``dest``.

    ``maskmm/`` is copied as is; every package ``kernels/NAME`` and ``models/NAME`` (a folder with an
    ``__init__.py``, as setup.py finds them) goes to ``maskmm/kernels/NAME`` and ``maskmm/models/NAME``.
    """
    dest = Path(dest)
    _copy_tree(repo / "maskmm", dest / "maskmm")
    for root, installed in SOURCE_ROOTS.items():
        for pkg in sorted((repo / root).iterdir()):
            if (pkg / "__init__.py").is_file():
                _copy_tree(pkg, dest / installed / pkg.name)
    return dest


def lint_imports_executable() -> str | None:
    """The ``lint-imports`` of this interpreter's environment (else the one on ``PATH``), or None."""
    beside = Path(sys.executable).parent / "lint-imports"
    if beside.is_file():
        return str(beside)
    return shutil.which("lint-imports")


def run_lint_imports(
    staged: Path, args: list[str] | tuple[str, ...] = (), config: Path | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``lint-imports --no-cache ARGS CONFIG`` in the staged folder ``staged``."""
    exe = lint_imports_executable()
    if exe is None:
        raise FileNotFoundError("lint-imports is not installed (pip install -e '.[dev]')")
    config = Path(config or REPO / "pyproject.toml").resolve()
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "200")}
    return subprocess.run([exe, "--no-cache", *args, str(config)], cwd=staged, env=env, **kwargs)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if lint_imports_executable() is None:
        print("lint_imports.py: lint-imports is not installed (pip install -e '.[dev]')", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="maskmm-lint-imports-") as tmp:
        return run_lint_imports(stage(Path(tmp)), args).returncode


if __name__ == "__main__":
    raise SystemExit(main())
