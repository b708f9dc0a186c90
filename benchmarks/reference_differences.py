"""Where maskmm differs, by design, from the reference implementations it otherwise follows.

Each reference behaviour is re-implemented here from its published algorithm (plain PyTorch /
Python, independent of maskmm) and measured against maskmm's own functions on the same settings:

- token masking: ``maskmm.masking.mask_tokens`` (an exact count per caption, special ids never
  chosen nor drawn) against a Bernoulli(p) draw per token, as ALBEF (PAD and CLS excluded) and
  Hugging Face's ``DataCollatorForLanguageModeling`` (every special token excluded) do;
- block masking: ``maskmm.masking.block_patch_masking`` against BEiT's per-sample block generator
  (rectangles accepted one by one, 10 attempts per block, stops when an attempt round fails);
- random patch masking: ``maskmm.masking.random_patch_masking`` against MAE's
  ``len_keep = int(L * (1 - ratio))`` and "keep the lowest noise";
- EMA: ``maskmm.teachers.EMATeacher`` against timm's ``ModelEmaV3`` rule (every floating entry of
  the state dict averaged, buffers included);
- ITC queue: ``maskmm.losses.ImageTextContrastive`` (never-written queue slots ignored) against
  ALBEF's queue of random unit vectors.

Writes ``reference-differences.json`` and ``reference-differences.md`` (device, torch version,
date, command, every number) into ``--out`` (default ``benchmarks/results``). Runs in well under a
minute on 2 CPU cores.

Run::

    python benchmarks/reference_differences.py
    python benchmarks/reference_differences.py --quick --out /tmp/refdiff    # smaller sizes
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maskmm.losses import ImageTextContrastive, image_text_contrastive_loss
from maskmm.masking import block_patch_masking, mask_tokens, random_patch_masking
from maskmm.teachers import EMATeacher

__all__ = [
    "albef_itc_loss_reference",
    "beit_block_mask_reference",
    "bernoulli_token_mask_reference",
    "caption_batch",
    "components",
    "mae_random_mask_reference",
    "main",
    "measure_block_masking",
    "measure_ema",
    "measure_queue",
    "measure_random_masking",
    "measure_token_masking",
    "timm_v3_ema_update_reference",
]

RESULTS_DIR = Path(__file__).resolve().parent / "results"
STEM = "reference-differences"

#: Ids of the built-in ``WordTokenizer``: [PAD]=0, [CLS]=1, [SEP]=2, [MASK]=3, [UNK]=4.
PAD, CLS, SEP, MASK, UNK = 0, 1, 2, 3, 4
SPECIAL_IDS = (PAD, CLS, SEP, MASK, UNK)
#: Vocabulary size of the built-in tokenizer (5 special ids + the grammar's words).
BUILTIN_VOCAB = 39


# =========================================================================== references


def bernoulli_token_mask_reference(
    input_ids: torch.Tensor,
    ratio: float,
    never: Sequence[int],
    *,
    vocab_size: int,
    mask_token_id: int = MASK,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking as ALBEF and Hugging Face's collator draw it.

    Every token is chosen independently with probability ``ratio`` unless its id is in ``never``
    (ALBEF: PAD and CLS; the collator: every special token). A chosen token becomes
    ``mask_token_id`` with probability 0.8, else a random id uniform over the whole vocabulary with
    probability 0.5 (i.e. 10 % overall), else stays. Returns ``(chosen bool [B, L], corrupted ids)``.
    """
    b, length = input_ids.shape
    chosen = torch.rand(b, length, generator=generator) < ratio
    for token in never:
        chosen &= input_ids != token
    to_mask = chosen & (torch.rand(b, length, generator=generator) < 0.8)
    to_random = chosen & ~to_mask & (torch.rand(b, length, generator=generator) < 0.5)
    random_ids = torch.randint(0, vocab_size, (b, length), generator=generator)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return chosen, corrupted


def beit_block_mask_reference(
    rng: random.Random,
    grid: tuple[int, int],
    num_masked: int,
    *,
    min_patches: int = 16,
    max_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    attempts: int = 10,
) -> list[list[int]]:
    """BEiT's block-wise masking of one sample, as published.

    Blocks are added until ``num_masked`` patches are masked. For each block, up to ``attempts``
    rectangles are drawn: area uniform between ``min_patches`` and the patches still to mask (capped
    at ``max_patches``), aspect log-uniform in ``[min_aspect, max_aspect]``, sides
    ``round(sqrt(area * aspect))`` x ``round(sqrt(area / aspect))``; a rectangle is used only if both
    sides are smaller than the grid and it adds between 1 and "still to mask" new patches. When a
    whole round of attempts adds nothing, generation stops, possibly short of ``num_masked``.
    Returns a ``gh x gw`` 0/1 grid.
    """
    gh, gw = grid
    max_patches = num_masked if max_patches is None else max_patches
    max_aspect = max_aspect or 1.0 / min_aspect
    log_lo, log_hi = math.log(min_aspect), math.log(max_aspect)
    mask = [[0] * gw for _ in range(gh)]
    count = 0
    while count < num_masked:
        budget = min(num_masked - count, max_patches)
        added = 0
        for _ in range(attempts):
            area = rng.uniform(min_patches, budget)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            h = round(math.sqrt(area * aspect))  # Python's round: half to even
            w = round(math.sqrt(area / aspect))
            if w < gw and h < gh:
                top = rng.randint(0, gh - h)
                left = rng.randint(0, gw - w)
                already = sum(mask[i][j] for i in range(top, top + h) for j in range(left, left + w))
                if 0 < h * w - already <= budget:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if not mask[i][j]:
                                mask[i][j] = 1
                                added += 1
            if added > 0:
                break
        if added == 0:
            break
        count += added
    return mask


def mae_random_mask_reference(noise: torch.Tensor, ratio: float) -> torch.Tensor:
    """MAE's random masking for given noise ``[B, L]``: sort ascending, keep the first
    ``int(L * (1 - ratio))`` patches, mask the rest. Returns bool ``[B, L]`` (``True`` = masked)."""
    b, length = noise.shape
    len_keep = int(length * (1 - ratio))
    keep = torch.argsort(noise, dim=1)[:, :len_keep]
    mask = torch.ones(b, length, dtype=torch.bool)
    mask.scatter_(1, keep, False)
    return mask


@torch.no_grad()
def timm_v3_ema_update_reference(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """timm ``ModelEmaV3`` rule: every floating entry of the state dict (parameters *and* buffers)
    becomes ``decay * ema + (1 - decay) * model``; integer entries are copied."""
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.lerp_(m.to(e.dtype), 1.0 - decay)
        else:
            e.copy_(m)


def albef_random_queue(dim: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """ALBEF's initial feature queue: ``[dim, size]`` standard normal columns, L2-normalised."""
    return F.normalize(torch.randn(dim, size, generator=generator), dim=0)


def albef_itc_loss_reference(
    image_feat: torch.Tensor,
    text_feat: torch.Tensor,
    image_feat_m: torch.Tensor,
    text_feat_m: torch.Tensor,
    image_queue: torch.Tensor,
    text_queue: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """ALBEF's ITC with momentum distillation: keys are the momentum features of the batch followed by
    the queue columns (``[dim, Q]``); targets ``alpha * softmax(momentum sims) + (1 - alpha) * onehot``;
    the loss is the mean over rows of the soft cross-entropy, averaged over both directions."""
    image_all = torch.cat([image_feat_m.t(), image_queue], dim=1)
    text_all = torch.cat([text_feat_m.t(), text_queue], dim=1)
    b = image_feat.shape[0]
    onehot = torch.zeros(b, image_all.shape[1])
    onehot[torch.arange(b), torch.arange(b)] = 1.0
    t_i2t = alpha * F.softmax(image_feat_m @ text_all / temperature, dim=1) + (1 - alpha) * onehot
    t_t2i = alpha * F.softmax(text_feat_m @ image_all / temperature, dim=1) + (1 - alpha) * onehot
    loss_i2t = -(F.log_softmax(image_feat @ text_all / temperature, dim=1) * t_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(text_feat @ image_all / temperature, dim=1) * t_t2i).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


# =========================================================================== helpers


def caption_batch(
    lengths: Sequence[int], *, vocab_size: int = BUILTIN_VOCAB, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, max(lengths)]`` laid out as the built-in tokenizer does: ``[CLS]``, ``n - 2``
    word ids (uniform over the non-special ids), ``[SEP]``, then ``[PAD]``; and the validity mask."""
    lengths_t = torch.tensor(list(lengths), dtype=torch.long)
    if (lengths_t < 2).any():
        raise ValueError("every caption length must be >= 2 (CLS and SEP)")
    b, width = len(lengths_t), int(lengths_t.max())
    words = torch.randint(len(SPECIAL_IDS), vocab_size, (b, width), generator=generator)
    pos = torch.arange(width).expand(b, width)
    ids = torch.where(pos < lengths_t[:, None] - 1, words, torch.full_like(words, PAD))
    ids[:, 0] = CLS
    ids[torch.arange(b), lengths_t - 1] = SEP
    return ids, pos < lengths_t[:, None]


def components(grid_mask: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """4-connected components of a 0/1 grid: ``(size, bbox height, bbox width)`` each."""
    gh, gw = len(grid_mask), len(grid_mask[0])
    seen = [[False] * gw for _ in range(gh)]
    out = []
    for i0 in range(gh):
        for j0 in range(gw):
            if not grid_mask[i0][j0] or seen[i0][j0]:
                continue
            stack, size = [(i0, j0)], 0
            seen[i0][j0] = True
            top, bottom, left, right = i0, i0, j0, j0
            while stack:
                i, j = stack.pop()
                size += 1
                top, bottom, left, right = min(top, i), max(bottom, i), min(left, j), max(right, j)
                for a, c in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                    if 0 <= a < gh and 0 <= c < gw and grid_mask[a][c] and not seen[a][c]:
                        seen[a][c] = True
                        stack.append((a, c))
            out.append((size, bottom - top + 1, right - left + 1))
    return out


def _std(values: Sequence[float]) -> float:
    n = len(values)
    if n == 0:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / n)


def _within_length_std(counts: Sequence[int], lengths: Sequence[int]) -> float:
    """Square root of the mean (over captions) of the count variance among captions of equal length."""
    groups: dict[int, list[int]] = defaultdict(list)
    for c, n in zip(counts, lengths):
        groups[n].append(c)
    total = sum(len(g) * _std(g) ** 2 for g in groups.values())
    return math.sqrt(total / max(len(counts), 1))


# =========================================================================== measurements


def measure_token_masking(
    lengths: Sequence[int], *, ratio: float = 0.15, vocab_size: int = BUILTIN_VOCAB, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Text masking of captions of the given token lengths (CLS and SEP included).

    For maskmm (``mask_tokens``, special ids ``0..4`` excluded), the ALBEF rule (Bernoulli, PAD/CLS
    excluded) and the Hugging Face collator rule (Bernoulli, every special token excluded), returns:
    ``zero_frac`` (captions with no chosen token), ``count_std`` (std of the chosen count across
    captions), ``count_std_given_length`` (std among captions of equal length), ``mean_count``,
    ``word_share`` (chosen tokens / word tokens), ``sep_chosen_frac`` (SEP tokens chosen),
    ``special_chosen`` (chosen positions holding a special id), ``random_special_frac`` (random
    replacements that are special ids) and ``random_replacements``.
    """
    g = torch.Generator().manual_seed(seed)
    ids, valid = caption_batch(lengths, vocab_size=vocab_size, generator=g)
    is_special = torch.zeros_like(ids, dtype=torch.bool)
    for s in SPECIAL_IDS:
        is_special |= ids == s
    words = int((valid & ~is_special).sum())
    seps = int((ids == SEP).sum())
    out = {}
    runs = {
        "maskmm": None,
        "albef": (PAD, CLS),
        "hf_collator": SPECIAL_IDS,
    }
    for name, never in runs.items():
        if never is None:
            tm = mask_tokens(
                ids,
                valid,
                ratio,
                mask_token_id=MASK,
                vocab_size=vocab_size,
                special_ids=SPECIAL_IDS,
                generator=g,
            )
            chosen, corrupted = tm.mask, tm.input_ids
        else:
            chosen, corrupted = bernoulli_token_mask_reference(
                ids, ratio, never, vocab_size=vocab_size, generator=g
            )
        counts = chosen.sum(1).tolist()
        replaced_random = chosen & (corrupted != ids) & (corrupted != MASK)
        drawn = corrupted[replaced_random]
        drawn_special = sum(int((drawn == s).sum()) for s in SPECIAL_IDS)
        out[name] = {
            "captions": len(counts),
            "zero_frac": sum(c == 0 for c in counts) / len(counts),
            "count_std": _std(counts),
            "count_std_given_length": _within_length_std(counts, list(lengths)),
            "mean_count": sum(counts) / len(counts),
            "word_share": int(chosen.sum()) / words,
            "sep_chosen_frac": int((chosen & (ids == SEP)).sum()) / seps,
            "special_chosen": int((chosen & is_special).sum()),
            "random_replacements": int(replaced_random.sum()),
            "random_special_frac": drawn_special / max(int(replaced_random.sum()), 1),
        }
    return out


def measure_block_masking(
    draws: int,
    *,
    grid: tuple[int, int] = (14, 14),
    num_masked: int = 75,
    min_patches: int = 16,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Block masking at BEiT's pretraining setting (default: 14x14 grid, 75 patches, >= 16 per block,
    aspect 0.3-1/0.3, 10 attempts) for maskmm and BEiT's generator, ``draws`` masks each.

    Returns per method: ``shortfall_frac`` (masks with fewer than ``num_masked`` patches),
    ``mean_count``, ``min_count``, ``max_count``, ``components_per_mask`` (4-connected), and over
    all components ``mean_elongation`` (bounding box long side / short side), ``frac_elongated``
    (elongation above the largest aspect ``1 / 0.3``), ``mean_fill`` (size / bbox area).
    """
    n = grid[0] * grid[1]
    g = torch.Generator().manual_seed(seed)
    pm = block_patch_masking(
        draws,
        grid,
        num_masked / n,
        min_block_patches=min_patches,
        aspect_ratio=aspect,
        generator=g,
    )
    ours = [row.view(grid).tolist() for row in pm.mask.to(torch.int64)]
    rng = random.Random(seed)
    theirs = [
        beit_block_mask_reference(
            rng, grid, num_masked, min_patches=min_patches, min_aspect=aspect[0], max_aspect=aspect[1]
        )
        for _ in range(draws)
    ]
    out = {}
    for name, masks in (("maskmm", ours), ("beit", theirs)):
        counts = [sum(map(sum, m)) for m in masks]
        comps = [c for m in masks for c in components(m)]
        elong = [max(h, w) / min(h, w) for _, h, w in comps]
        out[name] = {
            "draws": draws,
            "shortfall_frac": sum(c < num_masked for c in counts) / draws,
            "mean_count": sum(counts) / draws,
            "min_count": min(counts),
            "max_count": max(counts),
            "components_per_mask": len(comps) / draws,
            "mean_elongation": sum(elong) / len(elong),
            "frac_elongated": sum(e > aspect[1] + 1e-9 for e in elong) / len(elong),
            "mean_fill": sum(s / (h * w) for s, h, w in comps) / len(comps),
        }
    return out


def measure_random_masking(
    cases: Sequence[tuple[int, float]],
    *,
    sweep_lengths: Sequence[int] = range(1, 1025),
    sweep_ratios: Sequence[float] = (0.15, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9),
    batch: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Masked counts and masks of ``random_patch_masking`` and MAE's rule.

    ``cases``: ``(L, ratio)`` pairs, each drawn for real (``batch`` rows) by maskmm and by the MAE rule
    on the *same* noise (a generator seeded alike). Per case: both counts, whether maskmm masks the
    lowest-noise patches, whether MAE on ``1 - noise`` gives maskmm's mask (equal counts only), and
    the overlap of the two masked sets. ``sweep``: for every ratio, how many ``L`` in
    ``sweep_lengths`` give different counts, and the largest difference (counts from the rules).
    """
    rows = []
    for length, ratio in cases:
        pm = random_patch_masking(batch, length, ratio, generator=torch.Generator().manual_seed(seed))
        noise = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed))
        ours = pm.mask
        k = int(ours[0].sum())
        lowest = torch.zeros_like(ours).scatter_(1, noise.argsort(dim=1)[:, :k], True)
        theirs = mae_random_mask_reference(noise, ratio)
        mirrored = mae_random_mask_reference(1.0 - noise, ratio)
        rows.append(
            {
                "L": length,
                "ratio": ratio,
                "maskmm": k,
                "mae": int(theirs[0].sum()),
                "maskmm_masks_lowest_noise": bool((ours == lowest).all()),
                "mae_on_one_minus_noise_equals_maskmm": bool((mirrored == ours).all()),
                "overlap_same_noise": float((ours & theirs).sum() / ours.sum().clamp(min=1)),
            }
        )
    sweep = []
    for ratio in sweep_ratios:
        diffs = []
        mae_all = 0
        for length in sweep_lengths:
            ours_k = min(math.floor(ratio * length + 0.5), length - 1)
            theirs_k = length - int(length * (1 - ratio))
            diffs.append(theirs_k - ours_k)
            mae_all += theirs_k == length
        sweep.append(
            {
                "ratio": ratio,
                "lengths": len(diffs),
                "differ": sum(d != 0 for d in diffs),
                "mae_more": sum(d > 0 for d in diffs),
                "max_diff": max(abs(d) for d in diffs),
                "mae_masks_all": mae_all,
            }
        )
    return {"cases": rows, "sweep": sweep}


def measure_ema(steps: int = 20, *, decay: float = 0.995, seed: int = 0) -> dict[str, float]:
    """A student ``BatchNorm1d(8) -> Linear(8, 4)`` trained ``steps`` SGD steps on inputs of mean 3,
    followed by maskmm's ``EMATeacher`` and by the ``ModelEmaV3`` rule (same decay, updated after
    every step). Returns the largest parameter difference between the two teachers and the mean of
    the BatchNorm ``running_mean`` in the student and in both teachers."""
    torch.manual_seed(seed)
    student = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 4))
    ours = EMATeacher(student, decay=decay)
    theirs = type(student)(nn.BatchNorm1d(8), nn.Linear(8, 4))
    theirs.load_state_dict(student.state_dict())
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(32, 8, generator=g) + 3.0
        y = torch.randn(32, 4, generator=g)
        loss = F.mse_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ours.update(step)
        timm_v3_ema_update_reference(theirs, student, decay)
    ours_sd, theirs_sd = ours.module.state_dict(), theirs.state_dict()
    param_names = [n for n, _ in student.named_parameters()]
    return {
        "steps": steps,
        "decay": decay,
        "param_max_abs_diff": max(float((ours_sd[n] - theirs_sd[n]).abs().max()) for n in param_names),
        "student_running_mean": float(student[0].running_mean.mean()),
        "maskmm_running_mean": float(ours_sd["0.running_mean"].mean()),
        "timm_v3_running_mean": float(theirs_sd["0.running_mean"].mean()),
        "student_running_var": float(student[0].running_var.mean()),
        "maskmm_running_var": float(ours_sd["0.running_var"].mean()),
        "timm_v3_running_var": float(theirs_sd["0.running_var"].mean()),
        "num_batches_tracked_equal": bool(
            int(ours_sd["0.num_batches_tracked"])
            == int(theirs_sd["0.num_batches_tracked"])
            == int(student[0].num_batches_tracked)
        ),
    }


#: Noise added to the image feature to make its caption's feature: positive-pair cosine about
#: ``1 / sqrt(1 + 2**2) = 0.45`` (a partly aligned pair of encoders, as early in pretraining).
PAIR_NOISE = 2.0


def _pair_features(batch: int, dim: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit image features and unit text features correlated with them (cosine about 0.45)."""
    img = F.normalize(torch.randn(batch, dim, generator=g), dim=1)
    txt = F.normalize(img + PAIR_NOISE * torch.randn(batch, dim, generator=g) / math.sqrt(dim), dim=1)
    return img, txt


def measure_queue(
    *,
    batch: int = 32,
    queue_size: int = 1024,
    dim: int = 256,
    temperature: float = 0.07,
    alpha: float = 0.4,
    extra_steps: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """ITC over ``queue_size / batch + extra_steps`` steps, momentum features equal to the online ones,
    for maskmm's ``ImageTextContrastive`` (queue starts empty; unwritten slots ignored) and ALBEF's
    rule (queue starts as random unit vectors). Also maskmm's loss function fed ALBEF's random queue
    at step 1 (to show that only the initial queue differs)."""
    if queue_size % batch:
        raise ValueError("ALBEF's queue needs queue_size to be a multiple of the batch")
    g = torch.Generator().manual_seed(seed)
    itc = ImageTextContrastive(dim, queue_size, temperature, learnable_temperature=False).train()
    q_img = albef_random_queue(dim, queue_size, g)
    q_txt = albef_random_queue(dim, queue_size, g)
    ptr = 0
    fill_steps = queue_size // batch
    ours_l, theirs_l, cosines = [], [], []
    step1_same_queue = None
    for step in range(fill_steps + extra_steps):
        img, txt = _pair_features(batch, dim, g)
        cosines.append(float((img * txt).sum(1).mean()))
        with torch.no_grad():
            ours_l.append(float(itc(img, txt, image_feat_m=img, text_feat_m=txt, alpha=alpha).loss))
            ref = albef_itc_loss_reference(img, txt, img, txt, q_img, q_txt, temperature, alpha)
            theirs_l.append(float(ref))
            if step == 0:
                step1_same_queue = float(
                    image_text_contrastive_loss(
                        img,
                        txt,
                        temperature,
                        image_feat_m=img,
                        text_feat_m=txt,
                        alpha=alpha,
                        image_queue=q_img.t(),
                        text_queue=q_txt.t(),
                        gather=False,
                    ).loss
                )
        q_img[:, ptr : ptr + batch] = img.t()
        q_txt[:, ptr : ptr + batch] = txt.t()
        ptr = (ptr + batch) % queue_size
    diffs = [abs(a - b) for a, b in zip(ours_l, theirs_l)]
    return {
        "batch": batch,
        "queue_size": queue_size,
        "dim": dim,
        "steps_until_full": fill_steps,
        "positive_cosine": sum(cosines) / len(cosines),
        "step1_maskmm": ours_l[0],
        "step1_albef": theirs_l[0],
        "step1_maskmm_fn_with_albef_queue": step1_same_queue,
        "losses_maskmm": ours_l,
        "losses_albef": theirs_l,
        "max_abs_diff_while_filling": max(diffs[:fill_steps]),
        "max_abs_diff_after_full": max(diffs[fill_steps:]) if extra_steps else 0.0,
        "first_equal_step": next(
            (i + 1 for i, d in enumerate(diffs) if d <= 1e-5 * max(1.0, abs(theirs_l[i]))), None
        ),
    }


def measure_queue_step1(
    *, batch: int = 64, queue_size: int = 65536, dim: int = 256, temperature: float = 0.07, seed: int = 0
) -> dict[str, float]:
    """The step-1 ITC loss at ALBEF's queue size: maskmm (empty queue) and ALBEF (random queue)."""
    g = torch.Generator().manual_seed(seed)
    img, txt = _pair_features(batch, dim, g)
    itc = ImageTextContrastive(dim, queue_size, temperature, learnable_temperature=False).train()
    with torch.no_grad():
        ours = float(itc(img, txt, image_feat_m=img, text_feat_m=txt, alpha=0.4).loss)
        q_img = albef_random_queue(dim, queue_size, g)
        q_txt = albef_random_queue(dim, queue_size, g)
        theirs = float(albef_itc_loss_reference(img, txt, img, txt, q_img, q_txt, temperature, 0.4))
    return {"batch": batch, "queue_size": queue_size, "dim": dim, "maskmm": ours, "albef": theirs}


# =========================================================================== environment, output


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def environment(argv: Sequence[str]) -> dict[str, Any]:
    threads = torch.get_num_threads()
    return {
        "device": f"cpu: {cpu_model()}, {threads} thread{'s' if threads != 1 else ''}",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/reference_differences.py", *argv]),
    }


def builtin_caption_lengths(count: int) -> list[int]:
    """Token lengths (CLS and SEP included) of the first ``count`` built-in training captions."""
    from maskmm.data import ShapesDataset, WordTokenizer

    ds, tok = ShapesDataset("train", length=count), WordTokenizer()
    return [len(tok.split(ds.scene(i).caption)) + 2 for i in range(count)]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        "# maskmm against the reference implementations: where they differ by design",
        "",
        f"Device: {env['device']}; torch {env['torch']}; {env['date']}; {res['seconds']:.1f} s.",
        f"Command: `{env['command']}`.",
        "",
        "## Token masking (ratio 0.15, 80/10/10)",
        "",
        "maskmm: `mask_tokens` (exact count `max(1, floor(0.15 n + 0.5))` of the n maskable tokens, "
        "special ids 0-4 never chosen nor drawn). ALBEF: Bernoulli(0.15) per token, PAD and CLS excluded, "
        "random replacements uniform over the vocabulary. HF collator: Bernoulli(0.15), every special "
        "token excluded. Vocabulary: the built-in tokenizer's 39 ids (5 special).",
        "",
    ]
    names = {"maskmm": "maskmm", "albef": "ALBEF rule", "hf_collator": "HF collator rule"}
    for key, title in res["token_masking"]["distributions"].items():
        t = res["token_masking"][key]
        lines += [
            f"**{title}** ({t['maskmm']['captions']:,} captions)",
            "",
            "| method | captions with no masked token | std of the count across captions | "
            "std among captions of equal length | mean count | masked / word tokens | SEP chosen | "
            "random replacements that are special ids |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, row in t.items():
            lines.append(
                f"| {names[m]} | {_pct(row['zero_frac'])} | {row['count_std']:.2f} | "
                f"{row['count_std_given_length']:.2f} | {row['mean_count']:.2f} | "
                f"{_pct(row['word_share'])} | {_pct(row['sep_chosen_frac'])} | "
                f"{_pct(row['random_special_frac'])} |"
            )
        lines.append("")
    b = res["block_masking"]
    lines += [
        "## Block masking (14x14 grid, 75 patches, >= 16 per block, aspect 0.3-1/0.3)",
        "",
        "maskmm: `block_patch_masking(B, (14, 14), 75 / 196, min_block_patches=16)`. BEiT: its per-sample "
        "generator (10 attempts per block, stops when a round of attempts adds nothing). Shape statistics "
        "over the 4-connected components of the final masks; elongation = bounding-box long side / short "
        "side.",
        "",
        "| method | draws | masks short of 75 | mean count | min count | components per mask | "
        "mean elongation | components more elongated than 1/0.3 | mean fill of the bounding box |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, title in (("maskmm", "maskmm"), ("beit", "BEiT generator")):
        r = b[m]
        lines.append(
            f"| {title} | {r['draws']:,} | {_pct(r['shortfall_frac'])} | {r['mean_count']:.2f} | "
            f"{r['min_count']} | {r['components_per_mask']:.2f} | {r['mean_elongation']:.2f} | "
            f"{_pct(r['frac_elongated'])} | {r['mean_fill']:.2f} |"
        )
    rm = res["random_masking"]
    lines += [
        "",
        "## Random patch masking",
        "",
        "maskmm: `random_patch_masking` masks `floor(ratio * L + 0.5)` patches (at most `L - 1`), the "
        "lowest-noise ones. MAE: keeps `int(L * (1 - ratio))` patches, the lowest-noise ones. Same noise "
        "(same seed), 64 rows per case:",
        "",
        "| L | ratio | maskmm masked | MAE masked | maskmm masks the lowest noise | "
        "MAE on 1 - noise = maskmm | masked-set overlap, same noise |",
        "|---:|---:|---:|---:|:---:|:---:|---:|",
    ]
    for r in rm["cases"]:
        same = "yes" if r["mae_on_one_minus_noise_equals_maskmm"] else "no"
        if r["maskmm"] != r["mae"]:
            same = "– (counts differ)"
        lines.append(
            f"| {r['L']} | {r['ratio']} | {r['maskmm']} | {r['mae']} | "
            f"{'yes' if r['maskmm_masks_lowest_noise'] else 'no'} | "
            f"{same} | {_pct(r['overlap_same_noise'])} |"
        )
    lines += [
        "",
        f"Counts over L = {rm['sweep'][0]['lengths']} lengths (1-{rm['sweep'][0]['lengths']}):",
        "",
        "| ratio | L with different counts | of which MAE masks more | largest difference | "
        "L where MAE masks every patch |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rm["sweep"]:
        lines.append(
            f"| {r['ratio']} | {r['differ']} ({_pct(r['differ'] / r['lengths'])}) | {r['mae_more']} | "
            f"{r['max_diff']} | {r['mae_masks_all']} |"
        )
    e = res["ema"]
    lines += [
        "",
        f"## EMA buffers (BatchNorm1d -> Linear, inputs of mean 3, {e['steps']} SGD steps, "
        f"decay {e['decay']})",
        "",
        "| | student | maskmm `EMATeacher` (copies buffers) | `ModelEmaV3` rule (averages them) |",
        "|---|---:|---:|---:|",
        f"| BatchNorm running_mean (mean over features) | {e['student_running_mean']:.4f} | "
        f"{e['maskmm_running_mean']:.4f} | {e['timm_v3_running_mean']:.4f} |",
        f"| BatchNorm running_var (mean over features) | {e['student_running_var']:.4f} | "
        f"{e['maskmm_running_var']:.4f} | {e['timm_v3_running_var']:.4f} |",
        "",
        f"Parameters of the two teachers: largest difference {e['param_max_abs_diff']:.1e}; "
        f"num_batches_tracked equal in all three: {'yes' if e['num_batches_tracked_equal'] else 'no'}.",
    ]
    q, q1 = res["queue"], res["queue_step1"]
    lines += [
        "",
        "## ITC queue",
        "",
        f"Batch {q['batch']}, queue {q['queue_size']}, features {q['dim']}, temperature 0.07, alpha 0.4, "
        f"new unit features every step (positive-pair cosine {q['positive_cosine']:.2f}), momentum features "
        "equal to the online ones. maskmm: "
        "`ImageTextContrastive` (queue empty at start, unwritten slots ignored). ALBEF: queue of random "
        "unit vectors at start.",
        "",
        "| | maskmm | ALBEF rule |",
        "|---|---:|---:|",
        f"| ITC loss at step 1 | {q['step1_maskmm']:.4f} | {q['step1_albef']:.4f} |",
        f"| step-1 loss at ALBEF's queue of {q1['queue_size']:,} (batch {q1['batch']}) | "
        f"{q1['maskmm']:.4f} | {q1['albef']:.4f} |",
        "",
        "maskmm's loss function given ALBEF's random queue at step 1: "
        f"{q['step1_maskmm_fn_with_albef_queue']:.6f} (ALBEF rule {q['step1_albef']:.6f}). "
        f"Largest loss difference while the queue fills (steps 1-{q['steps_until_full']}): "
        f"{q['max_abs_diff_while_filling']:.4f}; from step {q['steps_until_full'] + 1} on: "
        f"{q['max_abs_diff_after_full']:.1e} (first equal step: {q['first_equal_step']}).",
        "",
    ]
    return "\n".join(lines)


def run(*, quick: bool = False, argv: Sequence[str] = ()) -> dict[str, Any]:
    start = time.perf_counter()
    n_captions = 500 if quick else 2000
    repeats = 2 if quick else 10
    builtin = builtin_caption_lengths(n_captions) * repeats
    rng = random.Random(0)
    uniform = [rng.randint(8, 30) for _ in range(n_captions * repeats)]
    res: dict[str, Any] = {"environment": environment(argv)}
    res["token_masking"] = {
        "distributions": {
            "builtin": f"Built-in training captions (first {n_captions:,}, each masked {repeats} times; "
            f"{min(builtin)}-{max(builtin)} tokens, mean {sum(builtin) / len(builtin):.1f})",
            "uniform_8_30": "Caption lengths uniform over 8-30 tokens",
        },
        "builtin": measure_token_masking(builtin, seed=0),
        "uniform_8_30": measure_token_masking(uniform, seed=1),
    }
    res["block_masking"] = measure_block_masking(500 if quick else 2000)
    res["random_masking"] = measure_random_masking(
        [(196, 0.75), (196, 0.4), (196, 0.15), (49, 0.6), (16, 0.75), (16, 0.4), (10, 0.33), (5, 0.9)]
    )
    res["ema"] = measure_ema(20)
    res["queue"] = measure_queue(batch=32, queue_size=512 if quick else 1024)
    res["queue_step1"] = measure_queue_step1(queue_size=8192 if quick else 65536)
    res["seconds"] = time.perf_counter() - start
    return res


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(RESULTS_DIR), help="output folder (default benchmarks/results)")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = run(quick=args.quick, argv=argv)
    out = Path(args.out)
    os.makedirs(out, exist_ok=True)
    (out / f"{STEM}.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    text = markdown(res)
    (out / f"{STEM}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
