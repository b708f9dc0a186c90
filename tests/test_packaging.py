"""The project installs as one distribution whose only top-level package is ``maskmm``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_source_tree_has_required_top_level_folders() -> None:
    for folder in ("maskmm", "kernels", "models/mamo", "benchmarks", "tests"):
        assert (ROOT / folder).is_dir(), folder
    assert (ROOT / "pyproject.toml").is_file()


def test_installed_import_maps_kernels_and_models_under_maskmm() -> None:
    import maskmm.kernels
    import maskmm.models

    assert Path(maskmm.kernels.__file__).parent.name == "kernels"
    assert Path(maskmm.models.__file__).parent.name == "models"


@pytest.mark.slow
def test_wheel_holds_only_maskmm_and_imports_from_a_clean_target(tmp_path: Path) -> None:
    try:
        import setuptools  # noqa: F401
    except ImportError:
        pytest.skip("setuptools is not installed in this environment; the wheel cannot be built offline")
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("maskmm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"maskmm"}
    assert "maskmm/kernels/attention/reference.py" in names
    assert "maskmm/models/__init__.py" in names

    target = tmp_path / "site"
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert inst.returncode == 0, inst.stderr
    # ``bin`` holds the console scripts, not a package.
    packages = {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} - {"bin"}
    assert packages == {"maskmm"}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import maskmm.kernels.attention, maskmm.models; print(maskmm.kernels.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith(str(target))
