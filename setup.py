"""Package discovery for the one-distribution layout (see pyproject.toml).

``maskmm/`` is the one top-level package. The repository's top-level ``kernels/`` and ``models/``
folders hold sub-packages that install as ``maskmm.kernels.<name>`` and ``maskmm.models.<name>``;
``maskmm.kernels`` and ``maskmm.models`` themselves are ``maskmm/kernels/`` and ``maskmm/models/``.

The two top-level folders deliberately have no ``__init__.py``: a folder without one is at most a
namespace-package portion, and Python's import system prefers a regular package found anywhere on
``sys.path`` over a namespace portion (PEP 420). So running Python from the repository root never
shadows an installed top-level ``kernels`` or ``models`` distribution. Every sub-package is mapped
to its folder explicitly, which is what lets regular and editable installs find them.
"""

from pathlib import Path

from setuptools import find_packages, setup

SOURCE_ROOTS = {"maskmm.kernels": "kernels", "maskmm.models": "models"}


def _layout() -> tuple[list[str], dict[str, str]]:
    packages = {"maskmm", *(f"maskmm.{p}" for p in find_packages("maskmm"))}
    package_dir = {"maskmm": "maskmm"}
    for prefix, root in SOURCE_ROOTS.items():
        if (Path(root) / "__init__.py").exists():
            raise RuntimeError(f"{root}/__init__.py must not exist: it would shadow an installed '{root}'")
        for sub in find_packages(root):
            name = f"{prefix}.{sub}"
            packages.add(name)
            if "." not in sub:  # a root: its children follow from it
                package_dir[name] = f"{root}/{sub}"
    return sorted(packages), package_dir


_packages, _package_dir = _layout()
setup(packages=_packages, package_dir=_package_dir)
