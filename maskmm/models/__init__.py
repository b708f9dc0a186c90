"""Reference models assembled from maskmm parts.

The sources live in the repository's top-level ``models/`` folder; each of its sub-packages installs
here (``models/mamo`` as ``maskmm.models.mamo``). That folder has no ``__init__.py`` of its own, so
from a checkout it can never shadow an installed top-level package named ``models``.
"""
