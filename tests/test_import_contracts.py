"""maskmm's import contracts (``[tool.importlinter]`` in pyproject.toml) hold, and can fail.

``.ci/lint_imports.py`` lays the sources out as installed (``kernels/NAME`` -> ``maskmm.kernels.NAME``,
``models/NAME`` -> ``maskmm.models.NAME``) and runs ``lint-imports`` there; these tests run it, check
that the graph it checks holds every kernel and recipe package, and break each contract on purpose in
a staged copy.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "pyproject.toml"

if importlib.util.find_spec("importlinter") is None:
    pytest.skip("import-linter is not installed (pip install -e '.[dev]')", allow_module_level=True)


def _load_helper():
    spec = importlib.util.spec_from_file_location("_maskmm_lint_imports", REPO / ".ci" / "lint_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lint = _load_helper()
if lint.lint_imports_executable() is None:
    pytest.skip("the lint-imports command is not on this environment's path", allow_module_level=True)


def _contract_ids() -> list[str]:
    from importlinter.api import read_configuration

    return [c["id"] for c in read_configuration(str(CONFIG))["contracts_options"]]


def test_contracts_hold() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "lint_imports.py")], capture_output=True, text=True, timeout=300
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"Contracts: {len(_contract_ids())} kept, 0 broken." in out, out


def test_the_graph_holds_the_installed_layout(tmp_path: Path) -> None:
    """grimp walks the folder of the ``maskmm`` it finds: in the staged copy that is every package."""
    staged = lint.stage(tmp_path)
    expected = {"maskmm.models.mamo.recipe", "maskmm.kernels.attention.flash"}
    for root, prefix in (("models", "maskmm.models"), ("kernels", "maskmm.kernels")):
        expected |= {f"{prefix}.{p.parent.name}" for p in (REPO / root).glob("*/__init__.py")}
    code = "import grimp; print('\\n'.join(sorted(grimp.build_graph('maskmm', cache_dir=None).modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=staged, capture_output=True, text=True, timeout=300, check=True
    )
    modules = set(proc.stdout.split())
    assert expected <= modules, sorted(expected - modules)
    assert "maskmm.training.trainer" in modules


# each probe breaks exactly one contract: (file in the staged tree, its source, contract id, importer)
PROBES = [
    # a core part importing the trainer (a higher layer)
    ("maskmm/masking/_probe.py", "from maskmm.training import config\n", "layers", "maskmm.masking._probe"),
    # a new top-level package that no layer declares (the layers contract is exhaustive)
    ("maskmm/_undeclared.py", "", "layers", "maskmm._undeclared"),
    # the package root importing a recipe (no layer covers the root; the protected contract does)
    ("maskmm/__init__.py", "from maskmm.models.mamo import recipe\n", "models-private", "maskmm -> "),
    # one recipe importing another
    (
        "maskmm/models/maskvlm/_probe.py",
        "from maskmm.models.mamo.config import MAMOConfig\n",
        "recipes-independent",
        "maskmm.models.maskvlm._probe",
    ),
]


def test_each_contract_can_fail(tmp_path: Path) -> None:
    staged = lint.stage(tmp_path)
    for path, source, _, _ in PROBES:
        target = staged / path
        target.write_text((target.read_text() if target.exists() else "") + source)
    ids = _contract_ids()
    proc = lint.run_lint_imports(staged, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"Contracts: 0 kept, {len(ids)} broken." in out, out
    for _, _, contract, importer in PROBES:
        assert contract in ids
        assert importer in out, (importer, out)
    # and every contract, checked alone, fails on its own probes only
    for contract in ids:
        alone = lint.run_lint_imports(staged, ["--contract", contract], capture_output=True, text=True)
        report = alone.stdout + alone.stderr
        assert alone.returncode == 1 and "0 kept, 1 broken" in report, report
        for _, _, probe_contract, importer in PROBES:
            assert (importer in report) == (probe_contract == contract), (contract, importer, report)
