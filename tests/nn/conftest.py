"""Make ``nn_reference`` (the plain reference math next to these tests) importable under every
pytest import mode, not only the default ``prepend`` one."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
