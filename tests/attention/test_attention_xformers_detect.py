"""xformers backend: run-time detection (with a fake, unloadable xformers package) and its bias layout.

xformers is not installed here, so the backend must report that; a fake package whose compiled
operators do not load must be reported as such, with its import-time warnings silenced.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest
import torch

from maskmm.attention import AttentionMask, explain
from maskmm.attention.backends import xformers as xf_backend


@pytest.fixture
def fresh_detection():
    xf_backend._xformers_ops.cache_clear()
    xf_backend._probe.cache_clear()
    yield
    for name in [m for m in sys.modules if m == "xformers" or m.startswith("xformers.")]:
        del sys.modules[name]
    xf_backend._xformers_ops.cache_clear()
    xf_backend._probe.cache_clear()
    importlib.invalidate_caches()


def test_reports_not_installed_or_unloadable(fresh_detection):
    q = torch.zeros(1, 1, 4, 16)
    reasons = explain(q, q, q)["xformers"]
    assert any(("not installed" in r) or ("compiled operators" in r) or ("failed" in r) for r in reasons)
    assert any("CUDA" in r for r in reasons)


def test_fake_package_without_compiled_ops(fresh_detection, tmp_path, monkeypatch):
    pkg = tmp_path / "xformers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "import warnings\n"
        "warnings.warn('WARNING[XFORMERS]: xFormers cannot load C++/CUDA extensions')\n"
        "__version__ = '0.0.0+fake'\n"
        "_has_cpp_library = False\n"
    )
    (pkg / "ops.py").write_text("def memory_efficient_attention(*args, **kwargs):\n    raise RuntimeError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("XFORMERS_MORE_DETAILS", raising=False)
    importlib.invalidate_caches()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops, why = xf_backend._xformers_ops()
    assert ops is None and "compiled operators do not load" in why and "0.0.0+fake" in why
    assert not [w for w in caught if "XFORMERS" in str(w.message)]  # silenced


def test_bias_layout_is_aligned_and_cached():
    key_valid = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    mask = AttentionMask.from_key_valid(key_valid)
    bias = xf_backend._bias(mask, torch.float16, 3, 4)
    assert bias.shape == (2, 3, 4, 5) and bias.dtype == torch.float16
    assert bias.stride(0) % 8 == 0 and bias.stride(1) == 0 and bias.stride(2) == 0
    allowed = mask.sdpa_mask()[:, 0, 0]  # sample 1 falls back to key 0 (its rows are zeroed later)
    assert torch.equal(torch.isinf(bias[:, 0, 0]), ~allowed)
    assert torch.equal(bias[:, 0, 0][allowed], torch.zeros(int(allowed.sum()), dtype=torch.float16))
    assert xf_backend._bias(mask, torch.float16, 3, 4) is bias
