"""The project installs as one distribution whose only top-level package is ``maskmm``."""

from __future__ import annotations

import os
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
    import maskmm.kernels.attention
    import maskmm.models.mamo

    assert Path(maskmm.kernels.attention.__file__).parent == ROOT / "kernels" / "attention"
    assert Path(maskmm.models.mamo.__file__).parent == ROOT / "models" / "mamo"


def _throwaway_distribution(site: Path, name: str) -> None:
    """A minimal installed distribution providing a regular top-level package ``name``."""
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text(f"ORIGIN = 'installed {name}'\n")
    info = site / f"{name}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "top_level.txt").write_text(f"{name}\n")


_PROBE = (
    "import kernels, models, maskmm.kernels.attention, maskmm.models.mamo; "
    "print(kernels.ORIGIN); print(models.ORIGIN)"
)


@pytest.mark.parametrize("how", ["python -c", "python -m", "python -m pytest"])
def test_checkout_never_shadows_installed_kernels_or_models(tmp_path: Path, how: str) -> None:
    """From the repository root (first on ``sys.path`` for ``-c`` and ``-m``), ``import kernels`` and
    ``import models`` find installed distributions of those names, not the repository's folders,
    while ``maskmm.kernels.attention`` and ``maskmm.models.mamo`` still import."""
    site = tmp_path / "site"
    for name in ("kernels", "models"):
        _throwaway_distribution(site, name)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    if how == "python -c":
        cmd = [sys.executable, "-c", _PROBE]
    elif how == "python -m":
        (probe_dir / "shadow_probe.py").write_text(_PROBE.replace("; ", "\n") + "\n")
        cmd = [sys.executable, "-m", "shadow_probe"]
    else:
        test = probe_dir / "test_shadow_probe.py"
        test.write_text(
            "def test_probe():\n"
            "    import kernels, models, maskmm.kernels.attention, maskmm.models.mamo\n"
            "    assert kernels.ORIGIN == 'installed kernels', kernels.__file__\n"
            "    assert models.ORIGIN == 'installed models', models.__file__\n"
        )
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, str(test)]
    # the throwaway site comes after the repository root, as site-packages does
    path = os.pathsep.join([str(site), str(probe_dir)])
    env = {**os.environ, "PYTHONPATH": path}
    probe = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    if how != "python -m pytest":
        assert probe.stdout.split() == ["installed", "kernels", "installed", "models"], probe.stdout


def test_repository_kernels_and_models_folders_are_not_packages() -> None:
    """The mechanism behind the test above: without ``__init__.py`` the folders are at most
    namespace portions, which lose to any regular package on ``sys.path`` (PEP 420)."""
    for folder in ("kernels", "models"):
        assert not (ROOT / folder / "__init__.py").exists(), folder


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
