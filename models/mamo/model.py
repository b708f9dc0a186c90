"""The MAMO pretraining objective over injected parts.

One training step (:meth:`MAMO.forward`) computes, for a batch of image-caption pairs:

1. **ITC** (ALBEF): student image/text CLS features against the EMA teacher's features of the
   global batch plus a queue, with momentum distillation (soft targets weighted by ``alpha``).
2. **ITM** (ALBEF): one hard negative text per image and one hard negative image per text,
   drawn from the in-batch ITC similarities (same image id excluded); 2-way head on the fusion
   CLS (the first text state).
3. One **jointly masked** view (image patches at ``image_ratio``, text tokens at ``text_ratio``)
   through the student, and the clean pair through the teacher:

   - **MRM** (implicit target): the student's fusion states at the masked image *and* text
     positions regress the mean of the teacher's top-K fusion layers (each normalised),
     smooth-L1 or MSE, scaled by ``1/sqrt(D)``. With cross-attention fusion (no image states)
     only text positions are scored.
   - **MIM** (explicit target): a light decoder maps the student's states at the image
     positions (fusion image states for merged fusion; image-encoder states with mask tokens
     for cross fusion) to the teacher image encoder's layer-normalised patch features, scored
     at masked patches.
   - **MLM** (explicit target): masked tokens predicted from the fused text states; optionally
     distilled from the teacher run on the masked text and the clean image (as ALBEF).

Each loss is a term of :mod:`maskmm.losses.terms` (:attr:`MAMO.terms`), switchable and weighted; a
step builds the views the active terms read (the teacher on the clean pair, restricted to what they
read; the student on the clean pair; the jointly masked view) and adds up their losses. The teacher
(:class:`maskmm.teachers.EMATeacher` of the student) holds its weights as buffers, so
``MAMO.parameters()`` never yields them; the training loop calls :meth:`MAMO.update_teacher` after
the optimizer step.

Choices that are ours (not verified against the paper): listed in docs/methods.md (MAMO section)
and in :class:`MAMOSettings`.

**Data parallelism** (``torch.distributed`` initialised with more than one rank, every rank
passing the same local batch size ``b``): the step equals one process on the concatenated global
batch of ``world * b`` pairs (rank ``r``'s rows at ``[r * b, (r + 1) * b)``), given the same
``generator`` state on every rank:

- captions are padded to the longest length over ranks (:func:`maskmm.distributed.pad_to_common_length`);
- ITC gathers its keys (:class:`maskmm.losses.ImageTextContrastive`,
  :class:`~maskmm.losses.terms.ContrastiveTerm`);
- ITM gathers the image and text states with gradient, draws the negatives of the whole global
  batch from the gathered ITC similarities and fuses this rank's ``3b`` pairs (negatives may come
  from any rank; :class:`~maskmm.losses.terms.MatchingTerm`);
- the joint masking is drawn for the global batch (token ids and validity gathered) and each rank
  takes its rows, so the generator is consumed as in one process;
- ITM, MLM, MRM and MIM means are rescaled to this rank's share of the global mean
  (:func:`maskmm.distributed.rescale_to_global_mean`; the global counts are known on every rank).

Dropout and other draws of the global torch RNG stay per rank (the ``tiny`` preset has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from maskmm._checks import check_ratio
from maskmm.distributed import all_gather_no_grad, pad_to_common_length, world_info
from maskmm.losses import ImageTextContrastive
from maskmm.losses.terms import (
    ContrastiveTerm,
    FeatureRegressionTerm,
    FusionRegressionTerm,
    LossTerm,
    MaskedTokenTerm,
    MatchingTerm,
    fused_text_cls,
    pool_states,
)
from maskmm.masking import PatchMasking, TokenMasker, TokenMasking, random_patch_masking
from maskmm.nn import FusionOutput
from maskmm.targets import TopKLayerTargets
from maskmm.teachers import EMATeacher

from .._common import PartsContainer, StepLosses, batch_pair_positives, check_pair_batch, check_required_parts

__all__ = ["LOSS_NAMES", "MAMO", "MAMOOutput", "MAMOSettings", "MAMOStudent"]

LOSS_NAMES: tuple[str, ...] = ("itc", "itm", "mlm", "mrm", "mim")


@dataclass(frozen=True)
class MAMOSettings:
    """What :class:`MAMO` computes at every step (built from a config by the builder).

    Attributes:
        losses: names of the enabled losses, a subset of :data:`LOSS_NAMES`.
        weights: loss name -> weight (missing names weigh 1).
        image_ratio: patch masking ratio of the masked view (MAMO: 0.75; the text ratio, 0.25,
            is the ``text_masker``'s given to :class:`MAMO`).
        mask_mode: ``"drop"``: masked patches are dropped before the image encoder and mask
            tokens (+ position) are inserted before fusion; ``"token"``: a mask token replaces
            them at the encoder input.
        mrm_top_k, mrm_layer_norm, mrm_final_norm: MRM target = mean of the top-K teacher
            fusion layers, each normalised (``"instance"``: over tokens per channel; ``"layer"``:
            over channels), optional final norm.
        mrm_kind, mrm_scale_by_dim, mrm_beta: regression loss of MRM.
        mim_kind, mim_target_norm, mim_scale_by_dim: regression loss of MIM and whether the
            teacher features are layer-normalised.
        mlm_distill: distil MLM from the teacher (soft labels, weight ``alpha``).
        itc_distill: momentum distillation in ITC (soft targets, weight ``alpha``).
        itc_momentum_keys: ITC keys are the teacher's features of the global batch (ALBEF);
            ``False``: the online features (gathered with gradient), no distillation.
        itc_pool: ITC feature from the CLS state (ALBEF) or the mean of the other valid states.
        itm_input: the matching head reads the fused text CLS (ALBEF) or the mean of the fused
            states (:func:`~maskmm.losses.terms.fused_text_cls`).
    """

    losses: tuple[str, ...] = LOSS_NAMES
    weights: tuple[tuple[str, float], ...] = ()
    image_ratio: float = 0.75
    mask_mode: Literal["drop", "token"] = "drop"
    mrm_top_k: int = 2
    mrm_layer_norm: Literal["instance", "layer", "none"] = "layer"
    mrm_final_norm: Literal["none", "layer", "instance"] = "none"
    mrm_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mrm_scale_by_dim: bool = True
    mrm_beta: float = 1.0
    mim_kind: Literal["smooth_l1", "mse", "cosine"] = "smooth_l1"
    mim_target_norm: bool = True
    mim_scale_by_dim: bool = True
    mlm_distill: bool = False
    itc_distill: bool = True
    itc_momentum_keys: bool = True
    itc_pool: Literal["cls", "mean"] = "cls"
    itm_input: Literal["cls", "mean"] = "cls"

    def __post_init__(self) -> None:
        unknown = set(self.losses) - set(LOSS_NAMES)
        if unknown or not self.losses:
            raise ValueError(f"losses must be a non-empty subset of {LOSS_NAMES}, got {self.losses}")
        if self.mask_mode not in ("drop", "token"):
            raise ValueError(f"mask_mode must be 'drop' or 'token', got {self.mask_mode!r}")
        check_ratio("image_ratio", self.image_ratio)
        if self.mrm_top_k < 1:
            raise ValueError(f"mrm_top_k must be >= 1, got {self.mrm_top_k}")

    def weight(self, name: str) -> float:
        return dict(self.weights).get(name, 1.0)

    def on(self, name: str) -> bool:
        return name in self.losses


class MAMOSchedule(NamedTuple):
    """What changes with the training step: the distillation weight ``alpha(step)``, the ITM hardness
    ``itm_hardness(step)`` and the enabled losses computed at ``step`` (``active_losses``; ``None``:
    all of them from step 0). ``find_unused_parameters``: some loss joins later (DDP must know)."""

    alpha: Callable[[int], float] = lambda step: 0.4
    itm_hardness: Callable[[int], float] = lambda step: 1.0
    active_losses: Callable[[int], tuple[str, ...]] | None = None
    find_unused_parameters: bool = False


class MAMOOutput(NamedTuple):
    """Result of one :meth:`MAMO.forward`.

    Attributes:
        loss: fp32 scalar, the weighted sum of the enabled losses.
        losses: loss name -> fp32 scalar (unweighted; still attached to the graph).
        stats: name -> detached fp32 scalar (accuracies, variances, temperature, counts); no
            host sync has happened.
    """

    loss: Tensor
    losses: dict[str, Tensor]
    stats: dict[str, Tensor]


class MAMOStudent(PartsContainer):
    """Container of the trained parts (the teacher copies a subset of them by name).

    Args:
        vision: image encoder (``maskmm.nn.VisionTransformer`` interface).
        text: text encoder (``maskmm.nn.TextEncoder`` interface).
        fusion: ``MergedFusion`` or ``CrossAttentionFusion``.
        vision_proj, text_proj: ITC projection heads (``None`` without ITC).
        itm_head: 2-way matching head (``None`` without ITM).
        mlm_head: masked-token head (``None`` without MLM).
        mrm_head: regression head on fusion states (``None`` without MRM).
        mim_decoder: ``PredictionDecoder`` to teacher image features (``None`` without MIM).
    """

    def __init__(
        self,
        *,
        vision: nn.Module,
        text: nn.Module,
        fusion: nn.Module,
        vision_proj: nn.Module | None = None,
        text_proj: nn.Module | None = None,
        itm_head: nn.Module | None = None,
        mlm_head: nn.Module | None = None,
        mrm_head: nn.Module | None = None,
        mim_decoder: nn.Module | None = None,
    ) -> None:
        super().__init__(
            vision=vision,
            text=text,
            fusion=fusion,
            vision_proj=vision_proj,
            text_proj=text_proj,
            itm_head=itm_head,
            mlm_head=mlm_head,
            mrm_head=mrm_head,
            mim_decoder=mim_decoder,
        )


_REQUIRED = {
    "itc": ("vision_proj", "text_proj"),
    "itm": ("itm_head",),
    "mlm": ("mlm_head",),
    "mrm": ("mrm_head",),
    "mim": ("mim_decoder",),
}


class MAMO(nn.Module):
    """Masked multimodal model pretraining objective (see the module docstring).

    Args:
        student: the trained parts.
        settings: which losses and how (:class:`MAMOSettings`).
        itc: ``maskmm.losses.ImageTextContrastive`` (learnable temperature + queue); required
            with ITC, and used for the temperature of the hard-negative similarities.
        text_masker: :class:`maskmm.masking.TokenMasker` of the masked view (BERT 80/10/10 at the
            text ratio); required with MLM, MRM or MIM.
        ema_decay: float or schedule ``step -> decay`` of the teacher.
        fp32_shadow: keep fp32 master weights in the teacher (for bf16 students).
        schedule: the step-dependent settings :meth:`forward` uses (:class:`MAMOSchedule`).

    Attributes:
        terms: loss name -> its :mod:`maskmm.losses.terms` module (enabled losses only, in the order
            of :data:`LOSS_NAMES`), built from ``settings`` and the parts: ITC
            (:class:`~maskmm.losses.terms.ContrastiveTerm`), ITM (``MatchingTerm``), MLM
            (``MaskedTokenTerm``), MRM (``FusionRegressionTerm``), MIM (``FeatureRegressionTerm``).
            A plain dict, outside the module tree: the terms call the parts of ``student`` and
            ``itc`` (and read the teacher's), registered there, so the state dict is unchanged.

    Call :meth:`update_teacher` (or :meth:`after_optimizer_step`) after each optimizer step.
    """

    def __init__(
        self,
        student: MAMOStudent,
        settings: MAMOSettings,
        *,
        itc: ImageTextContrastive | None = None,
        text_masker: TokenMasker | None = None,
        ema_decay: object = 0.995,
        fp32_shadow: bool = False,
        schedule: MAMOSchedule | None = None,
    ) -> None:
        super().__init__()
        self.schedule = schedule if schedule is not None else MAMOSchedule()
        if not isinstance(student, MAMOStudent):
            raise TypeError(f"student must be a MAMOStudent, got {type(student).__name__}")
        if not isinstance(settings, MAMOSettings):
            raise TypeError(f"settings must be a MAMOSettings, got {type(settings).__name__}")
        check_required_parts(student, _REQUIRED, settings.on, "student.")
        if settings.on("itc") and itc is None:
            raise ValueError("loss 'itc' is enabled but no ImageTextContrastive module was given")
        masked_view = any(settings.on(n) for n in ("mlm", "mrm", "mim"))
        if masked_view and not isinstance(text_masker, TokenMasker):
            raise TypeError(
                "text_masker must be a TokenMasker when MLM, MRM or MIM is enabled, "
                f"got {type(text_masker).__name__}"
            )
        self.cross_fusion = not _has_image_states(student.fusion)
        depth = len(getattr(student.fusion, "layers", ()))
        if settings.on("mrm") and depth and settings.mrm_top_k > depth:
            raise ValueError(f"settings.mrm_top_k ({settings.mrm_top_k}) exceeds the fusion depth ({depth})")
        # Parts no enabled loss uses are frozen, so every trainable parameter receives a gradient
        # (DistributedDataParallel needs no find_unused_parameters).
        if not masked_view and getattr(student.vision, "mask_token", None) is not None:
            student.vision.mask_token.requires_grad_(False)
        if not masked_view and not settings.on("itm"):
            student.fusion.requires_grad_(False)
        self.settings = settings
        self.student = student
        self.itc = itc
        self.text_masker = text_masker
        include = ["vision", "text"]
        mlm_distill = settings.on("mlm") and settings.mlm_distill
        if settings.on("mrm") or mlm_distill:
            include.append("fusion")
        if settings.on("itc") and settings.itc_momentum_keys:
            include += ["vision_proj", "text_proj"]
        if mlm_distill:
            include.append("mlm_head")
        self.teacher = EMATeacher(student, decay=ema_decay, include=include, fp32_shadow=fp32_shadow)
        self._pad_id = int(getattr(getattr(student.text, "config", None), "pad_token_id", 0))
        self.terms: dict[str, LossTerm] = self._build_terms()

    def _build_terms(self) -> dict[str, LossTerm]:
        """The terms of the enabled losses, in the order of :data:`LOSS_NAMES`."""
        s, st, t = self.settings, self.student, self.teacher.module
        build: dict[str, Callable[[], LossTerm]] = {
            "itc": lambda: ContrastiveTerm(
                self.itc,
                st.vision_proj,
                st.text_proj,
                pool=s.itc_pool,
                momentum=(t.vision_proj, t.text_proj) if s.itc_momentum_keys else None,
                distill=s.itc_distill and s.itc_momentum_keys,
            ),
            "itm": lambda: MatchingTerm(st.fusion, st.itm_head, pool=self.settings.itm_input),
            "mlm": lambda: MaskedTokenTerm(st.mlm_head, distill=s.mlm_distill),
            "mrm": lambda: FusionRegressionTerm(
                st.mrm_head,
                TopKLayerTargets(s.mrm_top_k, layer_norm=s.mrm_layer_norm, final_norm=s.mrm_final_norm),
                kind=s.mrm_kind,
                scale_by_dim=s.mrm_scale_by_dim,
                beta=s.mrm_beta,
            ),
            "mim": lambda: FeatureRegressionTerm(
                st.mim_decoder,
                kind=s.mim_kind,
                target_norm=s.mim_target_norm,
                scale_by_dim=s.mim_scale_by_dim,
            ),
        }
        return {name: build[name]() for name in LOSS_NAMES if s.on(name)}

    # ------------------------------------------------------------------ teacher

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        """EMA update of the teacher; call after the optimizer step of ``step``."""
        self.teacher.update(step)

    # ------------------------------------------------------------------ encoders (also for eval)

    def pool_image(self, states: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the patch states (``itc_pool``)."""
        return pool_states(states, None, self.settings.itc_pool)

    def pool_text(self, states: Tensor, valid: Tensor) -> Tensor:
        """``[B, D]`` ITC input: the CLS state, or the mean of the other valid states."""
        return pool_states(states, valid, self.settings.itc_pool)

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student image states ``[B, 1 + N, D]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.vision(images).last_hidden
        proj = self.student.vision_proj
        return states, (proj(self.pool_image(states)) if proj is not None else None)

    def encode_text(self, input_ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor | None]:
        """Student text states ``[B, L, D]`` and ITC features ``[B, E]`` (``None`` without ITC)."""
        states = self.student.text(input_ids, valid).last_hidden
        proj = self.student.text_proj
        return states, (proj(self.pool_text(states, valid)) if proj is not None else None)

    def itm_logits(self, image_states: Tensor, text_states: Tensor, text_valid: Tensor) -> Tensor:
        """``[B, 2]`` matching logits (index 1 = match) of paired rows."""
        if self.student.itm_head is None:
            raise ValueError("this model was built without an ITM head")
        pair = fused_text_cls(self.student.fusion, self.settings.itm_input)
        return self.student.itm_head(pair(image_states, None, text_states, text_valid))

    # ------------------------------------------------------------------ masking

    def mask_batch(
        self,
        input_ids: Tensor,
        text_valid: Tensor,
        num_patches: int,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[PatchMasking, TokenMasking]:
        """The joint masking of one step: patches at ``image_ratio``, tokens by ``text_masker``."""
        if self.text_masker is None:
            raise ValueError("this model was built without a text masker (no masked-view loss)")
        b = input_ids.shape[0]
        ratio = self.settings.image_ratio
        pm = random_patch_masking(b, num_patches, ratio, device=input_ids.device, generator=generator)
        return pm, self.text_masker(input_ids, text_valid, generator=generator)

    # ------------------------------------------------------------------ recipe protocol

    has_itc = property(
        lambda self: self.student.vision_proj is not None and self.student.text_proj is not None
    )
    has_itm = property(lambda self: self.student.itm_head is not None)
    find_unused_parameters = property(lambda self: self.schedule.find_unused_parameters)

    def forward(
        self, batch: Mapping[str, Tensor], *, step: int = 0, generator: torch.Generator | None = None
    ) -> MAMOOutput:
        """The losses of the 0-based ``step`` on ``batch`` (``images``, ``input_ids``, ``text_valid``,
        ``image_ids``), with the distillation weight, ITM hardness and active losses the
        :class:`MAMOSchedule` gives for that step (:meth:`compute` takes them explicitly)."""
        sch = self.schedule
        active = sch.active_losses(step) if sch.active_losses is not None else None
        hardness = sch.itm_hardness(step)
        out = self.compute(
            batch["images"],
            batch["input_ids"],
            batch["text_valid"],
            batch.get("image_ids"),
            positives=batch_pair_positives(batch),
            alpha=sch.alpha(step),
            itm_hardness=hardness,
            active_losses=active,
            generator=generator,
        )
        if "itm" in (active if active is not None else self.settings.losses):
            out.stats["itm/hardness"] = torch.tensor(hardness)  # a CPU scalar: no device work
        return out

    def after_optimizer_step(self, step: int) -> None:
        """EMA update of the teacher (the trainer calls it after each optimiser step)."""
        self.update_teacher(step)

    # ------------------------------------------------------------------ losses

    def compute(
        self,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        image_ids: Tensor | None = None,
        *,
        positives: Tensor | None = None,
        alpha: float = 0.4,
        itm_hardness: float = 1.0,
        active_losses: Collection[str] | None = None,
        generator: torch.Generator | None = None,
    ) -> MAMOOutput:
        """One pretraining step's losses: the active :attr:`terms` on the views they read.

        Args:
            images: ``[B, 3, H, W]`` float.
            input_ids: ``long [B, L]`` token ids (CLS first).
            text_valid: ``bool [B, L]``, ``True`` = real token (attention key validity).
            image_ids: ``long [B]`` image ids: pairs sharing an id are positives of each other in
                ITC and never hard negatives in ITM. ``None`` = every pair distinct.
            positives: ``bool [W * B, W * B]`` over the global batch, ``[i, j]`` = caption ``j`` is
                true of image ``i`` (:func:`maskmm.losses.batch_positives`): an ITC positive, never an
                ITM negative. ``None``: only the own pair (and ``image_ids``).
            alpha: distillation weight of ITC soft targets (and MLM distillation), in ``[0, 1]``.
            itm_hardness: in ``[0, 1]``, how much the ITM negatives follow the ITC similarities
                rather than a uniform draw (see :func:`maskmm.losses.sample_hard_negatives`).
            active_losses: the enabled losses computed at this step (default: ``settings.losses``);
                the parts only the skipped losses use get no gradient at this step.
            generator: RNG of the masking and the hard-negative draws; under data parallelism in
                the same state on every rank (see the module docstring).
        """
        terms = self._active_terms(alpha, itm_hardness, active_losses)
        itc, itm, mlm, mrm, mim = (terms.get(name) for name in LOSS_NAMES)
        _, world = world_info()
        check_pair_batch(images, input_ids, text_valid, image_ids, generator, itm="itm" in terms, world=world)
        if terms.keys() - {"itc"}:  # global-batch draws: one caption length on every rank
            input_ids, text_valid = pad_to_common_length([input_ids, text_valid], [self._pad_id, False])
        teacher = _TeacherPass(self, images, input_ids, text_valid, terms.values(), alpha)
        step, st, valid, ids = StepLosses(), self.student, text_valid, image_ids
        if itc is not None or itm is not None:
            img, txt = st.vision(images).last_hidden, st.text(input_ids, valid).last_hidden
            feats = itc.features(img, txt, valid) if itc is not None else None
            if itc is not None:
                kw = {"image_ids": ids, "positives": positives, "alpha": alpha, "features": feats}
                out = itc(img, txt, valid, **teacher(itc), **kw)
                step.add("itc", out)
            if itm is not None:  # negatives drawn from the ITC similarities (uniformly without ITC)
                sim = itc.similarity(*feats) if itc is not None else None
                kw = {"image_ids": ids, "positives": positives, "generator": generator}
                out = itm(img, txt, valid, similarity=sim, hardness=itm_hardness, **kw)
                step.add("itm", out)
        if mlm is not None or mrm is not None or mim is not None:
            v = self._masked_view(images, input_ids, valid, generator)
            step.stats.update(v.stats())
            if mlm is not None:
                out = mlm(v.fused.text, v.labels, **teacher(mlm, v), alpha=alpha, global_count=v.n_tokens)
                step.add("mlm", out)
            if mrm is not None:
                out = mrm(v.fused, v.patch_mask, v.token_mask, valid, **teacher(mrm), global_counts=v.counts)
                step.add("mrm", out)
            if mim is not None:
                step.add("mim", mim(v.image_states, v.patch_mask, **teacher(mim), global_count=v.n_patches))
        return MAMOOutput(step.total(LOSS_NAMES, self.settings.weight), step.losses, step.stats)

    # ------------------------------------------------------------------ pieces

    def _active_terms(
        self, alpha: float, itm_hardness: float, active_losses: Collection[str] | None
    ) -> dict[str, LossTerm]:
        """The terms of ``active_losses`` (default: all enabled), after the checks of the step's options."""
        check_ratio("alpha", alpha, allow_one=True)
        check_ratio("itm_hardness", itm_hardness, allow_one=True)
        s = self.settings
        active = s.losses if active_losses is None else tuple(active_losses)
        if not active or not set(active) <= set(s.losses):
            raise ValueError(
                f"active_losses must be a non-empty subset of the enabled losses {s.losses}, got {active}"
            )
        return {name: term for name, term in self.terms.items() if name in active}

    def _masked_view(
        self, images: Tensor, input_ids: Tensor, text_valid: Tensor, generator: torch.Generator | None
    ) -> _MaskedView:
        """The student on the jointly masked pair. The masking is drawn for the global batch (the
        same on every rank, so the generator is consumed as in one process) and this rank keeps its
        rows; the global masked counts are known on every rank."""
        st = self.student
        rank, _ = world_info()
        b = images.shape[0]
        n_patches = math.prod(st.vision.patch_embed.grid_size(images))
        ids_all, valid_all = all_gather_no_grad(input_ids), all_gather_no_grad(text_valid)
        pm_all, tm_all = self.mask_batch(ids_all, valid_all, n_patches, generator=generator)
        pm = type(pm_all)(*(t[rank * b : (rank + 1) * b] for t in pm_all))
        tm = type(tm_all)(*(t[rank * b : (rank + 1) * b] for t in tm_all))
        v_full = st.vision.encode_masked_full(images, pm, self.settings.mask_mode)  # [B, 1+N, D]
        t_masked = st.text(tm.input_ids, text_valid).last_hidden
        fused = st.fusion(v_full, None, t_masked, text_valid)
        # the states at the image positions: the fused ones, or the encoder's (fusion of text only)
        image_states = fused.image if fused.image is not None else v_full
        return _MaskedView(pm, tm, pm_all.mask.sum(), tm_all.mask.sum(), fused, image_states)


class _MaskedView(NamedTuple):
    """The student on the jointly masked pair: this rank's masking of the ``patches`` and ``tokens``,
    the masked counts of the global batch, the fusion output and the states at the image positions
    (CLS first, then the full patch grid with mask tokens at the masked patches)."""

    patches: PatchMasking
    tokens: TokenMasking
    n_patches: Tensor
    n_tokens: Tensor
    fused: FusionOutput
    image_states: Tensor

    patch_mask = property(lambda self: self.patches.mask)
    token_mask = property(lambda self: self.tokens.mask)
    labels = property(lambda self: self.tokens.labels)
    counts = property(lambda self: (self.n_patches, self.n_tokens))

    def stats(self) -> dict[str, Tensor]:
        return {
            "mask/image_masked": self.patches.mask.float().sum(1).mean(),
            "mask/text_masked": self.tokens.mask.float().sum(1).mean(),
        }


class _TeacherPass:
    """The EMA teacher (no gradient), restricted to what the active ``terms`` read at ``alpha`` (the
    names of their ``teacher_*`` inputs, :meth:`maskmm.losses.terms.LossTerm.teacher_reads`): on the
    clean pair its image states, text states and top-``k`` fusion layers; on the masked text (with
    the clean image) its MLM logits at the masked positions."""

    def __init__(
        self,
        model: MAMO,
        images: Tensor,
        input_ids: Tensor,
        text_valid: Tensor,
        terms: Iterable[LossTerm],
        alpha: float,
    ) -> None:
        self._teacher, self._valid, self._alpha = model.teacher.module, text_valid, alpha
        reads = frozenset().union(*(term.teacher_reads(alpha) for term in terms))
        self.image = self.text = self.layers = None
        t = self._teacher
        with torch.no_grad():
            if reads & {"teacher_image", "teacher_text", "teacher_layers", "teacher_logits"}:
                self.image = t.vision(images).last_hidden  # [B, 1+N, D]
            if reads & {"teacher_text", "teacher_layers"}:
                self.text = t.text(input_ids, text_valid).last_hidden
            if "teacher_layers" in reads:
                k = model.settings.mrm_top_k
                self.layers = t.fusion(
                    self.image, None, self.text, text_valid, return_layers=list(range(-k, 0))
                ).hidden_states

    def __call__(self, term: LossTerm, view: _MaskedView | None = None) -> dict[str, object]:
        """The ``teacher_*`` keyword arguments ``term`` reads (``view``: the masked view, for MLM)."""
        values = {"teacher_image": self.image, "teacher_text": self.text, "teacher_layers": self.layers}
        reads = term.teacher_reads(self._alpha)
        if "teacher_logits" in reads:
            values["teacher_logits"] = self._masked_text_logits(view.tokens)
        return {name: values[name] for name in reads}

    @torch.no_grad()
    def _masked_text_logits(self, tm: TokenMasking) -> Tensor:
        """Teacher logits ``[M, V]`` at the masked text positions (masked text, clean image)."""
        t = self._teacher
        t_txt = t.text(tm.input_ids, self._valid).last_hidden
        fused = t.fusion(self.image, None, t_txt, self._valid)
        return t.mlm_head(fused.text[tm.labels != -100]).float()


def _has_image_states(fusion: nn.Module) -> bool:
    """Merged (single-stream) fusions return image states; cross-attention fusions do not."""
    from maskmm.nn import CrossAttentionFusion

    return not isinstance(fusion, CrossAttentionFusion)
