"""Masked-attention benchmark on a CUDA device: maskmm's backends against SDPA, FlexAttention, xformers.

Cases (fp16 by default; see ``build_cases``):

- ``vit_b``         ViT-B/16 self attention, B=128, H=12, L=197, d=64, no mask;
- ``vit_b_drop25``  the same after an MAE-style drop of ~25% of the tokens per sample, kept
                    tokens packed to the front (variable lengths, padding at the end);
- ``bert_text``     BERT text self attention, L=40 padded, lengths 8..40;
- ``cross_t2i``     cross attention text -> image, q <= 40 padded, k = 197 image tokens;
- ``merged_fusion`` single-stream fusion over [197 image; <= 40 text] with text padding;
- ``long``          L=1024 self attention with padding (lengths 512..1024).

For each case and backend it times the forward and forward+backward passes with CUDA events
(warm-up, then ``repeats`` timed calls; median, min, p20, p80), and reports dense-equivalent
TFLOP/s (all ``B*Lq*Lk`` pairs), useful TFLOP/s (valid pairs only), GB/s of compulsory
traffic (q, k, v, o and, backward, dO, dq, dk, dv) and peak memory. A device-to-device copy
measures the achievable memory bandwidth in the same run (the target for the memory-bound
cross-attention case). Results go to ``benchmarks/results/attention-<device-slug>.json``
and a Markdown table beside it.

Usage::

    python benchmarks/attention_gpu.py                       # all cases, all backends
    python benchmarks/attention_gpu.py --cases cross_t2i --backends maskmm-triton sdpa-efficient
    python benchmarks/attention_gpu.py --allow-cpu --scale-down --repeats 3   # smoke test on CPU

The module is importable without CUDA: case construction, FLOP/byte counting and result
writing are plain Python, and the timer is an argument.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from maskmm.attention import AttentionMask, explain, masked_attention

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIRECTIONS = ("fwd", "fwd_bwd")
BWD_FLOP_FACTOR = 2.5  # backward = 5 matmuls vs 2 in forward


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One attention problem. Validity is a prefix per sample (``*_lengths``; ``None`` = all)."""

    name: str
    batch: int
    heads: int
    q_len: int
    k_len: int
    head_dim: int
    q_lengths: tuple[int, ...] | None
    k_lengths: tuple[int, ...] | None
    description: str

    @property
    def masked(self) -> bool:
        return self.q_lengths is not None or self.k_lengths is not None

    def lengths(self) -> tuple[list[int], list[int]]:
        ql = list(self.q_lengths) if self.q_lengths is not None else [self.q_len] * self.batch
        kl = list(self.k_lengths) if self.k_lengths is not None else [self.k_len] * self.batch
        return ql, kl

    def valid_pairs(self) -> int:
        ql, kl = self.lengths()
        return sum(a * b for a, b in zip(ql, kl))

    def shape(self) -> dict[str, int]:
        return {"B": self.batch, "H": self.heads, "Lq": self.q_len, "Lk": self.k_len, "D": self.head_dim}


def _uniform_lengths(rng: random.Random, batch: int, lo: int, hi: int) -> tuple[int, ...]:
    return tuple(rng.randint(lo, hi) for _ in range(batch))


def build_cases(seed: int = 0) -> list[Case]:
    """The benchmark cases at their real shapes (lengths drawn from ``random.Random(seed)``)."""
    rng = random.Random(seed)
    vit_keep = _uniform_lengths(rng, 128, round(0.65 * 197), round(0.85 * 197))  # ~25% dropped
    text = _uniform_lengths(rng, 128, 8, 40)
    long = _uniform_lengths(rng, 16, 512, 1024)
    return [
        Case("vit_b", 128, 12, 197, 197, 64, None, None, "no mask"),
        Case(
            "vit_b_drop25",
            128,
            12,
            197,
            197,
            64,
            vit_keep,
            vit_keep,
            "MAE-style drop of ~25% per sample; kept tokens first, padded to 197 (keys and queries)",
        ),
        Case("bert_text", 128, 12, 40, 40, 64, text, text, "text padding, lengths 8..40 of 40"),
        Case("cross_t2i", 128, 12, 40, 197, 64, text, None, "text queries (padded to 40) -> 197 image keys"),
        Case(
            "merged_fusion",
            128,
            12,
            237,
            237,
            64,
            tuple(197 + t for t in text),
            tuple(197 + t for t in text),
            "[197 image; <=40 text] single stream, text padding at the end",
        ),
        Case("long", 16, 12, 1024, 1024, 64, long, long, "long sequences, lengths 512..1024"),
    ]


def scale_case(case: Case, *, max_batch: int = 2, max_heads: int = 2, max_len: int = 48) -> Case:
    """A small version of ``case`` (CPU runs): fewer samples/heads, lengths shrunk proportionally."""
    factor = min(1.0, max_len / max(case.q_len, case.k_len))

    def shrink(n: int) -> int:
        return max(1, math.ceil(n * factor))

    def lens(values: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return None if values is None else tuple(shrink(x) for x in values[:max_batch])

    return replace(
        case,
        batch=min(case.batch, max_batch),
        heads=min(case.heads, max_heads),
        q_len=shrink(case.q_len),
        k_len=shrink(case.k_len),
        q_lengths=lens(case.q_lengths),
        k_lengths=lens(case.k_lengths),
    )


def make_inputs(
    case: Case,
    *,
    device: torch.device | str,
    dtype: torch.dtype,
    requires_grad: bool = False,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMask | None]:
    """``q [B, H, Lq, D]``, ``k``, ``v [B, H, Lk, D]`` and the case's mask (``None`` if unmasked)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    b, h, d = case.batch, case.heads, case.head_dim

    def rand(length: int) -> torch.Tensor:
        t = torch.randn(b, h, length, d, generator=g).to(device=device, dtype=dtype)
        return t.requires_grad_(requires_grad)

    q, k, v = rand(case.q_len), rand(case.k_len), rand(case.k_len)
    mask = None
    if case.masked:
        ql, kl = case.lengths()
        mask = AttentionMask.from_lengths(
            torch.tensor(kl, device=device),
            case.k_len,
            None if case.q_lengths is None else torch.tensor(ql, device=device),
            case.q_len if case.q_lengths is not None else None,
        )
    return q, k, v, mask


# ----------------------------------------------------------------------------- counting
def attention_flops(case: Case, direction: str, *, useful: bool = False) -> float:
    """FLOPs of ``direction`` ("fwd" or "fwd_bwd"): 4*H*D per (query, key) pair forward."""
    pairs = case.valid_pairs() if useful else case.batch * case.q_len * case.k_len
    fwd = 4.0 * case.heads * case.head_dim * pairs
    return fwd if direction == "fwd" else fwd * (1.0 + BWD_FLOP_FACTOR)


def attention_bytes(case: Case, direction: str, element_size: int) -> float:
    """Compulsory HBM traffic: fwd reads q, k, v and writes o; bwd also reads q, k, v, o, dO and
    writes dq, dk, dv (masks and softmax statistics are negligible and not counted)."""
    q_elems = case.batch * case.heads * case.q_len * case.head_dim
    k_elems = case.batch * case.heads * case.k_len * case.head_dim
    fwd = q_elems * 2 + k_elems * 2  # q, o ; k, v
    bwd = q_elems * 4 + k_elems * 4  # read q, o, dO, write dq ; read k, v, write dk, dv
    return float(element_size * (fwd if direction == "fwd" else fwd + bwd))


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    median_ms: float
    min_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int


def summarize(times_ms: Sequence[float]) -> Timing:
    ordered = sorted(times_ms)
    n = len(ordered)

    def pct(p: float) -> float:
        return ordered[min(n - 1, max(0, round(p * (n - 1))))]

    return Timing(statistics.median(ordered), ordered[0], pct(0.2), pct(0.8), n)


Timer = Callable[[Callable[[], Any]], Timing]


def cuda_timer(warmup: int = 10, repeats: int = 50) -> Timer:
    """Time a callable with CUDA events: ``warmup`` untimed calls, then ``repeats`` timed ones."""

    def run(fn: Callable[[], Any]) -> Timing:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(repeats)
        ]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return summarize([start.elapsed_time(end) for start, end in events])

    return run


def cpu_timer(warmup: int = 1, repeats: int = 5) -> Timer:
    """Wall-clock timer for CPU smoke runs."""

    def run(fn: Callable[[], Any]) -> Timing:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return summarize(times)

    return run


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Peak memory allocated during one call, above what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def copy_bandwidth(timer: Timer, device: torch.device, nbytes: int = 1 << 30) -> dict[str, float]:
    """Device-to-device ``copy_`` of ``nbytes``: GB/s counts the read and the write."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    timing = timer(lambda: dst.copy_(src))
    return {
        "bytes": float(nbytes),
        "median_ms": timing.median_ms,
        "gbps": 2 * nbytes / timing.median_ms / 1e6,
    }


# ----------------------------------------------------------------------------- backends
AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMask | None], torch.Tensor]


@dataclass(frozen=True)
class Variant:
    """A benchmarked implementation: returns a callable, or a string saying why it cannot run."""

    name: str
    uses_mask: bool
    prepare: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionMask | None], AttnFn | str]


def _maskmm(backend: str) -> Callable[..., AttnFn | str]:
    def prepare(q, k, v, mask):
        reasons = explain(q, k, v, mask)[backend]
        if reasons:
            return "; ".join(reasons)
        return lambda q, k, v, m: masked_attention(q, k, v, m, backend=backend)

    return prepare


def _sdpa(kernel: str, with_mask: bool) -> Callable[..., AttnFn | str]:
    def prepare(q, k, v, mask):
        if q.device.type != "cuda":
            return "SDPA kernel selection is benchmarked on CUDA only"
        if with_mask and mask is None:
            return "case has no mask"
        if with_mask and kernel == "FLASH_ATTENTION":
            return "SDPA's flash kernel takes no attention mask"
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, kernel, None)
        if backend is None:
            return f"torch {torch.__version__} has no SDPBackend.{kernel}"

        def fn(q, k, v, m):
            attn_mask = m.sdpa_mask() if (with_mask and m is not None) else None
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

        try:
            with torch.no_grad():
                fn(q, k, v, mask)
        except RuntimeError as exc:
            return f"not applicable: {str(exc).splitlines()[0]}"
        return fn

    return prepare


def default_variants() -> list[Variant]:
    out = [Variant("maskmm-triton", True, _maskmm("triton")), Variant("maskmm-sdpa", True, _maskmm("sdpa"))]
    for kernel, label in (
        ("CUDNN_ATTENTION", "cudnn"),
        ("FLASH_ATTENTION", "flash"),
        ("EFFICIENT_ATTENTION", "efficient"),
    ):
        out.append(Variant(f"sdpa-{label}-mask", True, _sdpa(kernel, True)))
        out.append(Variant(f"sdpa-{label}-nomask", False, _sdpa(kernel, False)))
    out.append(Variant("flex-compiled", True, _maskmm("flex")))
    out.append(Variant("xformers", True, _maskmm("xformers")))
    return out


# ----------------------------------------------------------------------------- runner
def run_case(
    case: Case,
    variant: Variant,
    *,
    device: torch.device,
    dtype: torch.dtype,
    timer: Timer,
    memory: Callable[[Callable[[], Any], torch.device], float | None] = peak_memory_mb,
) -> list[dict[str, Any]]:
    """Rows (one per direction) for one case and variant; a ``skipped`` row if it cannot run."""
    q, k, v, mask = make_inputs(case, device=device, dtype=dtype, requires_grad=True)
    mask_desc = case.description if case.masked else "none"
    base = {
        "case": case.name,
        "shape": case.shape(),
        "mask": mask_desc if variant.uses_mask else f"ignored ({mask_desc})",
        "backend": variant.name,
        "dtype": str(dtype).replace("torch.", ""),
    }
    try:
        attn = variant.prepare(q, k, v, mask if variant.uses_mask else None)
    except Exception as exc:  # a peer that cannot even be set up is reported, not fatal
        attn = f"setup failed: {type(exc).__name__}: {exc}"[:300]
    if isinstance(attn, str):
        return [{**base, "direction": d, "skipped": attn} for d in DIRECTIONS]
    m = mask if variant.uses_mask else None
    grad_out = torch.randn_like(q)

    def fwd() -> Any:
        with torch.no_grad():
            return attn(q, k, v, m)

    def fwd_bwd() -> Any:
        out = attn(q, k, v, m)
        return torch.autograd.grad(out, (q, k, v), grad_out)

    rows = []
    for direction, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
        try:
            timing = timer(fn)
            peak = memory(fn, device)
        except Exception as exc:  # a backend failing on one direction must not end the run
            rows.append({**base, "direction": direction, "skipped": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        seconds = timing.median_ms / 1e3
        rows.append(
            {
                **base,
                "direction": direction,
                **asdict(timing),
                "dense_tflops": attention_flops(case, direction) / seconds / 1e12,
                "useful_tflops": attention_flops(case, direction, useful=True) / seconds / 1e12,
                "gbps": attention_bytes(case, direction, q.element_size()) / seconds / 1e9,
                "peak_mem_mb": peak,
            }
        )
    return rows


def device_slug(name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device.type,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            memory_gb=round(props.total_memory / 2**30, 1),
        )
    else:
        info["device_name"] = platform.processor() or platform.machine() or "cpu"
    return info


def _is_fatal(row: dict[str, Any]) -> bool:
    """A CUDA error (illegal address, launch failure) poisons the context: stop the process."""
    msg = row.get("skipped", "")
    return "CUDA error" in msg or "illegal memory access" in msg or "unspecified launch failure" in msg


def run(
    cases: Sequence[Case],
    variants: Sequence[Variant],
    *,
    device: torch.device,
    dtype: torch.dtype,
    timer: Timer,
    memory: Callable[[Callable[[], Any], torch.device], float | None] = peak_memory_mb,
    copy_bytes: int = 1 << 30,
    log: Callable[[str], None] | None = None,
    deadline: float | None = None,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Time every (case, variant) pair and the copy bandwidth; returns the JSON payload.

    ``deadline`` (a ``time.monotonic()`` value): cases not started by then are reported as
    skipped. ``on_case(payload)`` is called after every case with the rows so far, so a run cut
    short still leaves its results. A CUDA error ends the run (the context is unusable after it).
    ``copy_bytes=0`` skips the bandwidth measurement.
    """
    payload: dict[str, Any] = {
        "environment": environment(device),
        "dtype": str(dtype).replace("torch.", ""),
        "copy_bandwidth": copy_bandwidth(timer, device, copy_bytes) if copy_bytes > 0 else None,
        "results": [],
    }
    rows: list[dict[str, Any]] = payload["results"]
    fatal = None
    for case in cases:
        if fatal is not None or (deadline is not None and time.monotonic() > deadline):
            why = fatal or "time budget of this run exhausted"
            for variant in variants:
                rows.extend(
                    {
                        "case": case.name,
                        "backend": variant.name,
                        "dtype": payload["dtype"],
                        "direction": d,
                        "shape": case.shape(),
                        "skipped": why,
                    }
                    for d in DIRECTIONS
                )
            continue
        if device.type == "cuda":
            # Compiled FlexAttention recompiles for each new shape; start every case from an empty
            # dynamo cache so no case runs into the recompile limit (and silently runs un-fused).
            torch._dynamo.reset()
        for variant in variants:
            new = run_case(case, variant, device=device, dtype=dtype, timer=timer, memory=memory)
            rows.extend(new)
            if log is not None:
                for r in new:
                    msg = r.get("skipped") or f"{r['median_ms']:.3f} ms"
                    log(f"{case.name:14s} {variant.name:22s} {r['direction']:8s} {msg}")
            if any(_is_fatal(r) for r in new):
                fatal = f"not run: an earlier CUDA error ({case.name} / {variant.name})"
                break
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if on_case is not None:
            on_case(payload)
    payload["targets"] = check_targets(payload)
    return payload


def _row(payload: dict[str, Any], case: str, backend: str, direction: str) -> dict[str, Any] | None:
    for r in payload["results"]:
        same = (r["case"], r["backend"], r["direction"]) == (case, backend, direction)
        if same and "median_ms" in r and r.get("dtype", payload.get("dtype")) == payload.get("dtype"):
            return r
    return None


# (case, direction, maskmm backend, peer, largest allowed time ratio maskmm / peer)
TIME_TARGETS = (
    ("vit_b_drop25", "fwd_bwd", "maskmm-triton", "flex-compiled", 0.75),
    ("vit_b_drop25", "fwd_bwd", "maskmm-triton", "sdpa-cudnn-nomask", 1.0),
    ("bert_text", "fwd_bwd", "maskmm-triton", "flex-compiled", 0.75),
    ("bert_text", "fwd_bwd", "maskmm-triton", "sdpa-efficient-mask", 0.5),
    ("merged_fusion", "fwd_bwd", "maskmm-triton", "flex-compiled", 0.75),
    ("merged_fusion", "fwd_bwd", "maskmm-triton", "sdpa-efficient-mask", 0.5),
)
COPY_TARGET = ("cross_t2i", "maskmm-triton", 0.6)  # fraction of the measured copy bandwidth


def check_targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """maskmm's attention performance targets evaluated on ``payload``.

    ``met`` is None when a side is missing.
    """
    out = []
    for case, direction, ours, peer, limit in TIME_TARGETS:
        a, b = _row(payload, case, ours, direction), _row(payload, case, peer, direction)
        ratio = None if a is None or b is None else a["median_ms"] / b["median_ms"]
        out.append(
            {
                "case": case,
                "direction": direction,
                "target": f"{ours} <= {limit:g} x {peer}",
                "value": ratio,
                "met": None if ratio is None else ratio <= limit,
            }
        )
    case, ours, frac = COPY_TARGET
    copy = payload.get("copy_bandwidth")
    for direction in DIRECTIONS:
        r = _row(payload, case, ours, direction)
        value = None if r is None or not copy else r["gbps"] / copy["gbps"]
        out.append(
            {
                "case": case,
                "direction": direction,
                "target": f"{ours} GB/s >= {frac:g} x copy bandwidth",
                "value": value,
                "met": None if value is None else value >= frac,
            }
        )
    return out


def merge_payloads(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new`` with the rows of ``old`` that it does not re-measure (same case, backend, dtype, direction)."""
    key = lambda r: (r["case"], r["backend"], r.get("dtype"), r["direction"])
    fresh = {key(r) for r in new["results"]}
    merged = dict(new)
    merged["results"] = [r for r in old.get("results", []) if key(r) not in fresh] + list(new["results"])
    if not merged.get("copy_bandwidth"):
        merged["copy_bandwidth"] = old.get("copy_bandwidth")
    merged["targets"] = []
    for dtype in sorted({r.get("dtype") for r in merged["results"]} - {None}):
        merged["targets"] += [{**t, "dtype": dtype} for t in check_targets({**merged, "dtype": dtype})]
    return merged


def markdown_table(payload: dict[str, Any]) -> str:
    env = payload["environment"]
    copy = payload.get("copy_bandwidth")
    copy_text = f"{copy['gbps']:.0f} GB/s" if copy else "not measured"
    lines = [
        f"# Masked attention on {env.get('device_name')}",
        "",
        f"torch {env.get('torch')}, triton {env.get('triton')}, CUDA {env.get('cuda')}, {env.get('date')}. "
        f"Copy bandwidth: {copy_text}.",
        "",
        "| case | backend | dtype | dir | median ms | p20-p80 ms | dense TFLOP/s | useful TFLOP/s | GB/s "
        "| peak MiB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in payload["results"]:
        if "skipped" in r:
            continue
        peak = "-" if r.get("peak_mem_mb") is None else f"{r['peak_mem_mb']:.0f}"
        lines.append(
            f"| {r['case']} | {r['backend']} | {r.get('dtype', payload.get('dtype'))} | {r['direction']} | "
            f"{r['median_ms']:.3f} | {r['p20_ms']:.3f}-{r['p80_ms']:.3f} | {r['dense_tflops']:.1f} | "
            f"{r['useful_tflops']:.1f} | {r['gbps']:.0f} | {peak} |"
        )
    targets = payload.get("targets") or []
    if targets:
        lines += [
            "",
            "Targets:",
            "",
            "| case | dtype | dir | target | value | met |",
            "|---|---|---|---|---:|---|",
        ]
        for t in targets:
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            met = {None: "n/a", True: "yes", False: "no"}[t["met"]]
            dtype = t.get("dtype", payload.get("dtype"))
            lines.append(f"| {t['case']} | {dtype} | {t['direction']} | {t['target']} | {value} | {met} |")
    skipped = [r for r in payload["results"] if "skipped" in r and r["direction"] == "fwd"]
    if skipped:
        lines += ["", "Not run:", ""]
        lines += [f"- {r['case']} / {r['backend']} ({r.get('dtype', '')}): {r['skipped']}" for r in skipped]
    return "\n".join(lines) + "\n"


def result_paths(device_name: str, out_dir: Path | str = RESULTS_DIR) -> tuple[Path, Path]:
    stem = f"attention-{device_slug(device_name)}"
    out = Path(out_dir)
    return out / f"{stem}.json", out / f"{stem}.md"


def write_results(
    payload: dict[str, Any], out_dir: Path | str = RESULTS_DIR, *, merge: bool = False
) -> tuple[Path, Path]:
    """Write ``attention-<device-slug>.json`` and ``.md`` into ``out_dir``; return both paths.

    With ``merge``, rows already in an existing JSON file that this payload does not re-measure
    are kept (several runs, e.g. one per dtype or per case, build one table).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = result_paths(str(payload["environment"].get("device_name", "unknown")), out)
    if merge and json_path.exists():
        payload = merge_payloads(json.loads(json_path.read_text()), payload)
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown_table(payload))
    return json_path, md_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--backends", nargs="*", help="variant names (default: all)")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--copy-mib", type=int, default=1024, help="size of the bandwidth copy (0 = skip)")
    parser.add_argument("--out-dir", default=str(RESULTS_DIR))
    parser.add_argument("--merge", action="store_true", help="keep rows of an existing result file")
    parser.add_argument(
        "--time-budget", type=float, default=None, help="seconds; cases not started by then are skipped"
    )
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU (smoke test; wall-clock timer)")
    parser.add_argument("--scale-down", action="store_true", help="use small shapes (implied on CPU)")
    args = parser.parse_args(argv)

    if torch.cuda.is_available():
        device = torch.device("cuda")
        timer = cuda_timer(args.warmup, args.repeats)
    elif args.allow_cpu:
        device = torch.device("cpu")
        timer = cpu_timer(min(args.warmup, 2), min(args.repeats, 5))
    else:
        print("no CUDA device (pass --allow-cpu for a CPU smoke run)", file=sys.stderr)
        return 2
    cases = build_cases()
    if args.cases:
        unknown = set(args.cases) - {c.name for c in cases}
        if unknown:
            parser.error(f"unknown cases {sorted(unknown)}; choose from {[c.name for c in cases]}")
        cases = [c for c in cases if c.name in args.cases]
    if args.scale_down or device.type != "cuda":
        cases = [scale_case(c) for c in cases]
    variants = default_variants()
    if args.backends:
        unknown = set(args.backends) - {v.name for v in variants}
        if unknown:
            parser.error(f"unknown backends {sorted(unknown)}; choose from {[v.name for v in variants]}")
        variants = [v for v in variants if v.name in args.backends]
    dtype = getattr(torch, args.dtype)
    copy_bytes = args.copy_mib << 20 if device.type == "cuda" else min(args.copy_mib, 1) << 20
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    with contextlib.suppress(AttributeError):
        torch.backends.cuda.matmul.allow_tf32 = True
    # Incremental writes: each finished case is on disk, merged with what the file held before
    # (without --merge the file is started afresh).

    def save(payload: dict[str, Any]) -> None:
        write_results({**payload, "targets": check_targets(payload)}, args.out_dir, merge=True)

    if not args.merge:
        json_path, _ = result_paths(environment(device).get("device_name", "unknown"), args.out_dir)
        if json_path.exists():
            json_path.unlink()
    payload = run(
        cases,
        variants,
        device=device,
        dtype=dtype,
        timer=timer,
        copy_bytes=copy_bytes,
        log=lambda m: print(m, flush=True),
        deadline=deadline,
        on_case=save,
    )
    json_path, md_path = write_results(payload, args.out_dir, merge=True)
    print(f"wrote {json_path} and {md_path}")
    fatal = any(
        _is_fatal(r) or str(r.get("skipped", "")).startswith("not run: an earlier CUDA")
        for r in payload["results"]
    )
    return 3 if fatal else 0


if __name__ == "__main__":
    raise SystemExit(main())
