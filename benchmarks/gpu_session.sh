#!/usr/bin/env bash
# One CUDA session for maskmm's attention: GPU tests, correctness at real shapes, benchmark.
#
# Run from anywhere; it works in the repository root. Needs a CUDA machine with torch and
# triton installed (the usual image: torch 2.11 + CUDA 13, Triton 3.6, pytest); installs
# nothing from the network. Stays inside GPU_SESSION_BUDGET seconds (default 530, i.e. under
# 9 minutes): every stage gets a time cap, results are written as they come, and a stage
# that fails does not stop the later ones.
#
# Stages
#   0  environment (GPU, driver, versions)
#   1  make maskmm importable with kernels/ -> maskmm.kernels, models/ -> maskmm.models:
#      `pip install -e . --no-deps --no-build-isolation --no-index`, else a path shim
#      (a .pth file in site-packages that adds the repo and maps the two sub-packages)
#   2  smoke: one masked fwd+bwd call of the Triton kernel
#   3  pytest -m gpu tests/kernels tests/attention           (real-shape kernel tests)
#   4  benchmarks/attention_gpu.py --dtype bfloat16            (the performance targets are bf16)
#   5  benchmarks/attention_gpu_check.py                       (every case, bf16+fp16, vs float64)
#   6  pytest tests/kernels tests/attention -m "not gpu and not slow"  (edge cases, compiled)
#   7  benchmarks/attention_gpu.py --dtype float16 --merge     (if time is left)
#
# Outputs: benchmarks/results/attention-<device>.json/.md, attention-check-<device>.json, and
# copies of them plus session.log and the pytest JUnit files in $OUT (when set; at most 8 files).
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
RESULTS=$REPO/benchmarks/results
OUT_DIR=${OUT:-$RESULTS/gpu-session}
mkdir -p "$OUT_DIR" "$RESULTS"
BUDGET=${GPU_SESSION_BUDGET:-530}
START=$(date +%s)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT_DIR/session.log") 2>&1
declare -A STATUS

left() { echo $((BUDGET - ($(date +%s) - START))); }
# cap WANT: seconds a stage may take (WANT, or what is left minus RESERVE for the later stages)
cap() {
    local want=$1 reserve=${2:-0} l
    l=$(($(left) - reserve))
    ((l < want)) && want=$l
    ((want < 0)) && want=0
    echo "$want"
}
stage() { echo; echo "=== [$(($(date +%s) - START))s] $*"; }
collect() {
    cp -f "$RESULTS"/attention-*.json "$RESULTS"/attention-*.md "$OUT_DIR"/ 2>/dev/null || true
}
run_capped() { # NAME SECONDS CMD...: run with a time limit, record the status
    local name=$1 secs=$2
    shift 2
    if ((secs < 20)); then
        STATUS[$name]="skipped (no time left)"
        echo "skipped: no time left"
        return 0
    fi
    timeout --kill-after=10 "$secs" "$@"
    local rc=$?
    case $rc in
        0) STATUS[$name]=ok ;;
        124 | 137) STATUS[$name]="timed out after ${secs}s" ;;
        *) STATUS[$name]="failed (exit $rc)" ;;
    esac
    collect
}

stage "0 environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || echo "nvidia-smi unavailable"
"$PY" - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton missing:", exc)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm{p.major}{p.minor}", p.multi_processor_count, "SMs", round(p.total_memory / 2**30), "GiB")
else:
    print("NO CUDA DEVICE")
for mod in ("pytest", "xdist", "setuptools", "xformers"):
    try:
        __import__(mod)
        print(mod, "available")
    except Exception as exc:
        print(mod, "not available:", type(exc).__name__)
EOF

stage "1 make maskmm importable"
importable() { (cd /tmp && "$PY" -c "import maskmm.kernels.attention, maskmm.models, maskmm.attention; print('maskmm from', maskmm.__file__)"); }
if timeout 120 "$PY" -m pip install -q -e . --no-deps --no-build-isolation --no-index --disable-pip-version-check && importable; then
    STATUS[install]="pip install -e"
else
    echo "editable install unavailable: installing the path shim"
    SITE=$("$PY" -c "import site; print(site.getsitepackages()[0])")
    SHIM=/tmp/maskmm_shim
    mkdir -p "$SHIM"
    cat >"$SHIM/_maskmm_paths.py" <<EOF
"""Maps maskmm.kernels -> $REPO/kernels and maskmm.models -> $REPO/models (as the wheel does)."""
import importlib.abc, importlib.util, os, sys

_MAP = {"maskmm.kernels": "$REPO/kernels", "maskmm.models": "$REPO/models"}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = _MAP.get(name)
        if root is None:
            return None
        return importlib.util.spec_from_file_location(
            name, os.path.join(root, "__init__.py"), submodule_search_locations=[root]
        )


sys.meta_path.insert(0, _Finder())
EOF
    printf '%s\n%s\nimport _maskmm_paths\n' "$REPO" "$SHIM" >"$SITE/maskmm_shim.pth"
    if importable; then STATUS[install]="path shim ($SITE/maskmm_shim.pth)"; else STATUS[install]="FAILED"; fi
fi
echo "install: ${STATUS[install]}"

stage "2 smoke: one masked fwd+bwd through the Triton kernel"
run_capped smoke "$(cap 120 380)" "$PY" - <<'EOF'
import time, torch
from maskmm.kernels.attention import flash_attention
t0 = time.time()
q, k, v = (torch.randn(2, 4, 77, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
key_valid = torch.rand(2, 77, device="cuda") > 0.3
out = flash_attention(q, k, v, key_valid=key_valid)
out.float().sum().backward()
torch.cuda.synchronize()
assert torch.isfinite(out).all() and torch.isfinite(q.grad).all()
print(f"smoke ok ({time.time() - t0:.1f}s including compilation)")
EOF

XDIST=""
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"

stage "3 pytest -m gpu tests/kernels tests/attention"
run_capped pytest_gpu "$(cap 120 330)" "$PY" -m pytest -m gpu tests/kernels tests/attention -q -p no:cacheprovider \
    $XDIST --junitxml="$OUT_DIR/pytest-gpu.xml"

stage "4 benchmark, bfloat16"
T=$(cap 260 100)
run_capped bench_bf16 "$T" "$PY" benchmarks/attention_gpu.py --dtype bfloat16 --warmup 5 --repeats 30 \
    --out-dir "$RESULTS" --time-budget $((T > 60 ? T - 50 : 10))

stage "5 correctness at real shapes (attention_gpu_check.py)"
T=$(cap 100 20)
run_capped check "$T" "$PY" benchmarks/attention_gpu_check.py --out-dir "$RESULTS" --time-budget $((T > 40 ? T - 30 : 10))

stage "6 compiled edge-case tests: pytest -m 'not gpu and not slow'"
run_capped pytest_compiled "$(cap 120 0)" "$PY" -m pytest -m "not gpu and not slow" tests/kernels tests/attention -q \
    -p no:cacheprovider $XDIST --junitxml="$OUT_DIR/pytest-compiled.xml"

stage "7 benchmark, float16 (merged into the same files)"
T=$(cap 200 10)
if ((T >= 90)); then
    run_capped bench_fp16 "$T" "$PY" benchmarks/attention_gpu.py --dtype float16 --warmup 5 --repeats 30 \
        --copy-mib 0 --merge --out-dir "$RESULTS" --time-budget $((T - 60))
else
    STATUS[bench_fp16]="skipped (no time left)"
fi

collect
stage "summary ($(($(date +%s) - START))s of ${BUDGET}s)"
for name in install smoke pytest_gpu bench_bf16 check pytest_compiled bench_fp16; do
    printf '  %-16s %s\n' "$name" "${STATUS[$name]:-not run}"
done
ls -l "$OUT_DIR"
