"""Package discovery for the one-distribution layout (see pyproject.toml).

``maskmm/``, ``kernels/`` and ``models/`` are three source roots; every package
below ``kernels/`` and ``models/`` installs under ``maskmm.kernels`` and
``maskmm.models``. Only ``maskmm`` lands at the top of site-packages.
"""

from setuptools import find_packages, setup

ROOTS = {"maskmm": "maskmm", "maskmm.kernels": "kernels", "maskmm.models": "models"}


def _packages() -> list[str]:
    found: set[str] = set()
    for name, path in ROOTS.items():
        found.add(name)
        found.update(f"{name}.{sub}" for sub in find_packages(path))
    return sorted(found)


setup(packages=_packages())
