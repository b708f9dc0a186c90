"""Regression of :meth:`MAMO.compute` against values recorded before its losses became composed terms.

Every case of :data:`CASES` builds the tiny MAMO of ``TINY`` (+ its overrides) under
``torch.manual_seed(0)``, moves the student away from the teacher (seeded noise, so a teacher /
student mix-up would show) and runs steps on one fixed batch through the public API only
(:func:`_fingerprint`): step 0 with generator seed 11, then the backward of the total (absolute
gradient sums per part, count of trainable parameters left without gradient), then step 1 with seed
12 (the ITC queue now holds step 0's keys; losses only). It records the losses, the statistics of
step 0, the gradient sums and which teacher parts ran how often at each step (forward hooks).

How the stored values were made (CPU, fp32, one thread), with the version of ``models/mamo`` whose
values are wanted (here: the one before the refactor, ``MAMO.compute`` as one method)::

    python tests/models/test_mamo_terms_regression.py > /tmp/ref.py   # then paste its REFERENCE

The fingerprint uses nothing but ``build_model``, ``MAMO.compute`` / ``MAMO.forward`` and
``backward``, so the same command regenerates the values on any version of the code. On the machine
that recorded them the refactored code reproduced every value bit for bit (and so did every loss,
statistic, per-parameter gradient and state entry over three steps with EMA updates, compared
separately); the comparison below allows float rounding (other CPUs may block their matrix products
differently).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from maskmm.models.mamo.builder import build_model
from maskmm.models.mamo.config import load_config

VOCAB = 40
TINY = [
    "model.image_size=16",
    "data.image_size=16",
    "model.patch_size=4",
    "model.vision_dim=32",
    "model.text_dim=32",
    "model.vision_depth=1",
    "model.text_depth=1",
    "model.fusion=merged",
    "model.fusion_depth=2",
    "model.vision_heads=2",
    "model.text_heads=2",
    "model.fusion_heads=2",
    "model.mlp_ratio=2.0",
    "model.embed_dim=16",
    "model.max_text_len=12",
    "data.max_text_len=12",
    "itc.queue_size=8",
    "losses.mim_decoder_depth=1",
]

_OTHERS_OFF = ["losses.itm=false", "losses.mlm=false", "losses.mrm=false", "losses.mim=false"]
_MOMENTUM = ["itc.momentum_keys=true", "itc.pool=cls"]

#: name -> (config overrides, compute keyword arguments); ``"steps"`` in the kwargs runs
#: ``MAMO.forward`` at those steps (the schedule) instead of ``compute``.
CASES: dict[str, tuple[list[str], dict]] = {
    "all": ([], {}),
    "all_momentum": (_MOMENTUM, {}),
    "itc_only": (_OTHERS_OFF, {}),
    "itc_only_momentum": ([*_OTHERS_OFF, *_MOMENTUM], {}),
    "itc_momentum_no_distill": ([*_MOMENTUM, "itc.distill=false"], {}),
    "itc_no_queue": (["itc.queue_size=0"], {}),
    "mlm_distill": (["losses.mlm_distill=true"], {"alpha": 0.3}),
    "mlm_distill_alone": (
        [
            *_OTHERS_OFF[:1],
            "losses.itc=false",
            "losses.mrm=false",
            "losses.mim=false",
            "losses.mlm_distill=true",
        ],
        {"alpha": 0.3},
    ),
    "mlm_distill_alpha0": (
        [
            "losses.itc=false",
            "losses.itm=false",
            "losses.mrm=false",
            "losses.mim=false",
            "losses.mlm_distill=true",
        ],
        {"alpha": 0.0},
    ),
    "cross": (["model.fusion=cross"], {}),
    "cross_momentum_distill": (
        ["model.fusion=cross", *_MOMENTUM, "losses.mlm_distill=true", "masking.mode=token"],
        {"alpha": 0.2},
    ),
    "token": (["masking.mode=token"], {}),
    "active_itc": ([], {"active_losses": ("itc",)}),
    "active_itc_mlm": (_MOMENTUM, {"active_losses": ("itc", "mlm")}),
    "active_itm_mrm_mim": (_MOMENTUM, {"active_losses": ("itm", "mrm", "mim")}),
    "active_mim": (["model.fusion=cross"], {"active_losses": ("mim",)}),
    "no_itc": (["losses.itc=false"], {}),
    "itm_hardness": ([], {"itm_hardness": 0.5, "alpha": 0.1}),
    "dup_ids": (_MOMENTUM, {"image_ids": [0, 0, 1, 2, 2]}),
    "no_image_ids": ([], {"image_ids": None}),
    "regression_options": (
        [
            "losses.mrm_layer_norm=instance",
            "losses.mrm_final_norm=layer",
            "losses.mrm_kind=mse",
            "losses.mrm_scale_by_dim=false",
            "losses.mrm_top_k=1",
            "losses.mim_kind=cosine",
            "losses.mim_target_norm=false",
            "losses.mrm_beta=0.5",
        ],
        {},
    ),
    "mrm_smooth_beta": (
        ["losses.mrm_beta=0.25", "losses.mrm_final_norm=instance", "losses.mrm_layer_norm=none"],
        {},
    ),
    "weights": (["losses.itm_weight=0.5", "losses.mim_weight=2.0", "losses.mlm_weight=0.0"], {}),
    "nothing_masked": (["masking.image_ratio=0.0", "masking.text_ratio=0.0"], {}),
    "schedule": (
        [
            "losses.itm_start_step=2",
            "losses.masked_start_step=1",
            "itm.easy_steps=1",
            "itm.ramp_steps=4",
            *_MOMENTUM,
        ],
        {"steps": (0, 1, 3)},
    ),
}

_TEACHER_PARTS = ("vision", "text", "fusion", "vision_proj", "text_proj", "mlm_head")
_PARTS = (
    "vision",
    "text",
    "fusion",
    "vision_proj",
    "text_proj",
    "itm_head",
    "mlm_head",
    "mrm_head",
    "mim_decoder",
)


def _batch(b: int = 5, length: int = 9, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 16, 16, generator=g)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    ids[:, 0] = 1
    lengths = torch.randint(3, length + 1, (b,), generator=g)
    lengths[0] = length
    valid = torch.arange(length)[None] < lengths[:, None]
    ids[~valid] = 0
    return images, ids, valid, torch.arange(b)


def _fingerprint(name: str) -> dict[str, float | str]:
    overrides, kwargs = CASES[name]
    kwargs = dict(kwargs)
    torch.manual_seed(0)
    m = build_model(load_config("tiny", [*TINY, *overrides]), vocab_size=VOCAB)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    calls: dict[str, int] = {}
    for part in _TEACHER_PARTS:
        module = getattr(m.teacher.module, part, None)
        if module is not None:
            module.register_forward_hook(
                lambda mod, args, out, part=part: calls.__setitem__(part, calls.get(part, 0) + 1)
            )
    images, ids, valid, image_ids = _batch()
    if "image_ids" in kwargs:
        given = kwargs.pop("image_ids")
        image_ids = None if given is None else torch.tensor(given)
    steps = kwargs.pop("steps", None)
    out: dict[str, float | str] = {}

    def record(tag: str, res, stats: bool) -> None:
        out[f"{tag}/loss"] = res.loss.item()
        out.update({f"{tag}/{k}": v.item() for k, v in res.losses.items()})
        if stats:
            out.update({f"{tag}/{k}": v.item() for k, v in res.stats.items() if not k.startswith("loss_")})

    for i in range(2 if steps is None else len(steps)):
        gen = torch.Generator().manual_seed(11 + i)
        if steps is None:
            res = m.compute(images, ids, valid, image_ids, generator=gen, **kwargs)
        else:
            batch = {"images": images, "input_ids": ids, "text_valid": valid, "image_ids": image_ids}
            res = m.forward(batch, step=steps[i], generator=gen)
        assert all(torch.equal(res.stats[f"loss_{k}"], v.detach()) for k, v in res.losses.items())
        record(f"s{i}", res, stats=i == 0 or steps is not None)
        out[f"s{i}/teacher"] = ",".join(f"{k}:{v}" for k, v in sorted(calls.items()))
        calls.clear()
        if i == 0:
            res.loss.backward()
            params = [(f"student.{n}", p) for n, p in m.student.named_parameters()]
            params += [(f"itc.{n}", p) for n, p in (m.itc.named_parameters() if m.itc is not None else ())]
            out["grad/none"] = float(sum(p.grad is None and p.requires_grad for _, p in params))
            for part in (*(f"student.{p}" for p in _PARTS), "itc"):
                grads = [p.grad for n, p in params if n.startswith(part + ".") and p.grad is not None]
                if grads:
                    out[f"grad/{part.removeprefix('student.')}"] = sum(
                        gr.double().abs().sum() for gr in grads
                    ).item()
            m.zero_grad(set_to_none=True)
    return out


# Values of the code before the refactor (see the module docstring).
# fmt: off
REFERENCE: dict[str, dict[str, float | str]] = {
    "all": {
        "s0/loss": 10.926823616027832, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 412.3231154983523,
        "grad/text": 214.7899772177143, "grad/fusion": 229.83411979830367,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.54269790649414, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "all_momentum": {
        "s0/loss": 10.933830261230469, "s0/itc": 1.6861748695373535, "s0/itm": 0.6715583801269531,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7425873279571533, "s0/itc/loss_t2i": 1.6297622919082642,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 0.0,
        "grad/vision": 344.76203797986545, "grad/text": 143.04799422776364, "grad/fusion": 229.46358124547922,
        "grad/vision_proj": 12.362848457432847, "grad/text_proj": 4.783124470102848,
        "grad/itm_head": 6.194668145850301, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.544939041137695, "s1/itc": 2.379322052001953, "s1/itm": 0.6674520373344421,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1",
    },
    "itc_only": {
        "s0/loss": 1.6845135688781738, "s0/itc": 1.6845135688781738, "s0/itc/i2t_acc": 0.20000000298023224,
        "s0/itc/t2i_acc": 0.20000000298023224, "s0/itc/loss_i2t": 1.7122732400894165,
        "s0/itc/loss_t2i": 1.6567538976669312, "s0/itc/temperature": 0.07000000029802322, "s0/teacher": "",
        "grad/none": 0.0, "grad/vision": 221.79249252458249, "grad/text": 141.9394629863118,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "s1/loss": 2.3776607513427734, "s1/itc": 2.3776607513427734, "s1/teacher": "",
    },
    "itc_only_momentum": {
        "s0/loss": 1.6861748695373535, "s0/itc": 1.6861748695373535, "s0/itc/i2t_acc": 0.20000000298023224,
        "s0/itc/t2i_acc": 0.20000000298023224, "s0/itc/loss_i2t": 1.7425873279571533,
        "s0/itc/loss_t2i": 1.6297622919082642, "s0/itc/temperature": 0.07000000029802322,
        "s0/teacher": "text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 0.0,
        "grad/vision": 99.58198924864888, "grad/text": 11.362323873594496,
        "grad/vision_proj": 12.362848457432847, "grad/text_proj": 4.783124470102848,
        "s1/loss": 2.379322052001953, "s1/itc": 2.379322052001953,
        "s1/teacher": "text:1,text_proj:1,vision:1,vision_proj:1",
    },
    "itc_momentum_no_distill": {
        "s0/loss": 10.971698760986328, "s0/itc": 1.7240434885025024, "s0/itm": 0.6715583801269531,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.8261467218399048, "s0/itc/loss_t2i": 1.6219402551651,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 0.0,
        "grad/vision": 365.22682260937745, "grad/text": 143.88881950935865, "grad/fusion": 229.46358124547922,
        "grad/vision_proj": 15.547175456122204, "grad/text_proj": 4.681013684952632,
        "grad/itm_head": 6.194668145850301, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.582807540893555, "s1/itc": 2.4171907901763916, "s1/itm": 0.6674520373344421,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1",
    },
    "itc_no_queue": {
        "s0/loss": 10.926823616027832, "s0/itc": 1.6845134496688843, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122730016708374, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 412.3230667563703,
        "grad/text": 214.7899731293328, "grad/fusion": 229.83411979830367,
        "grad/vision_proj": 37.94100629978493, "grad/text_proj": 52.35705688234884,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 10.849550247192383, "s1/itc": 1.6845134496688843, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "mlm_distill": {
        "s0/loss": 10.868834495544434, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.873234748840332, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:2,mlm_head:1,text:2,vision:1", "grad/none": 0.0,
        "grad/vision": 410.241691922829, "grad/text": 198.7579909740798, "grad/fusion": 224.96504232861577,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 27.15833259730516,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.489507675170898, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.8596396446228027, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:2,mlm_head:1,text:2,vision:1",
    },
    "mlm_distill_alone": {
        "s0/loss": 3.6537744998931885, "s0/mlm": 3.6537744998931885, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/teacher": "fusion:1,mlm_head:1,text:1,vision:1", "grad/none": 0.0,
        "grad/vision": 22.827308742770647, "grad/text": 57.23587485637992, "grad/fusion": 35.485275260818106,
        "grad/mlm_head": 27.039825305575505, "s1/loss": 3.7411818504333496, "s1/mlm": 3.7411818504333496,
        "s1/teacher": "fusion:1,mlm_head:1,text:1,vision:1",
    },
    "mlm_distill_alpha0": {
        "s0/loss": 3.6211447715759277, "s0/mlm": 3.6211447715759277, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/teacher": "", "grad/none": 0.0, "grad/vision": 34.044571314447175, "grad/text": 82.9975436080423,
        "grad/fusion": 51.89256432778032, "grad/mlm_head": 38.869204863854975, "s1/loss": 3.747166395187378,
        "s1/mlm": 3.747166395187378, "s1/teacher": "",
    },
    "cross": {
        "s0/loss": 11.298338890075684, "s0/itc": 1.855118751525879, "s0/itm": 0.8371009230613708,
        "s0/mlm": 3.7105445861816406, "s0/mrm": 2.21083927154541, "s0/mim": 2.6847352981567383,
        "s0/itc/i2t_acc": 0.4000000059604645, "s0/itc/t2i_acc": 0.0, "s0/itc/loss_i2t": 2.082068920135498,
        "s0/itc/loss_t2i": 1.6281687021255493, "s0/itc/temperature": 0.07000000029802322,
        "s0/itm/accuracy": 0.3333333432674408, "s0/itm/pos_acc": 1.0, "s0/itm/neg_acc": 0.0,
        "s0/mask/image_masked": 12.0, "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0,
        "s0/mlm/num_masked": 8.0, "s0/mrm/pred_var": 0.0004864619695581496,
        "s0/mrm/target_var": 0.18979352712631226, "s0/mrm/num_masked": 8.0,
        "s0/mim/pred_var": 0.024684999138116837, "s0/mim/target_var": 0.051238320767879486,
        "s0/mim/num_masked": 60.0, "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0,
        "grad/vision": 522.1356263951639, "grad/text": 369.11283061337235, "grad/fusion": 182.07242727645587,
        "grad/vision_proj": 88.49834721939988, "grad/text_proj": 78.53479977620736,
        "grad/itm_head": 15.816999066155404, "grad/mlm_head": 44.4991038078515,
        "grad/mrm_head": 23.52903305579804, "grad/mim_decoder": 297.8215486460965,
        "s1/loss": 12.141006469726562, "s1/itc": 2.5482659339904785, "s1/itm": 0.8232660293579102,
        "s1/mlm": 3.8565590381622314, "s1/mrm": 2.2321226596832275, "s1/mim": 2.680792808532715,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "cross_momentum_distill": {
        "s0/loss": 11.045172691345215, "s0/itc": 1.7568719387054443, "s0/itm": 0.8326481580734253,
        "s0/mlm": 3.752584457397461, "s0/mrm": 2.246704578399658, "s0/mim": 2.4563636779785156,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.6175483465194702, "s0/itc/loss_t2i": 1.896195411682129,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.3333333432674408,
        "s0/itm/pos_acc": 1.0, "s0/itm/neg_acc": 0.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00013901805505156517, "s0/mrm/target_var": 0.18979352712631226,
        "s0/mrm/num_masked": 8.0, "s0/mim/pred_var": 0.0036762673407793045,
        "s0/mim/target_var": 0.051238320767879486, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:2,mlm_head:1,text:2,text_proj:1,vision:1,vision_proj:1", "grad/none": 0.0,
        "grad/vision": 294.1236552185328, "grad/text": 131.20744648626533, "grad/fusion": 173.50881659957224,
        "grad/vision_proj": 6.4026817694411875, "grad/text_proj": 34.377452700773574,
        "grad/itm_head": 16.04147270321846, "grad/mlm_head": 42.09007398566723,
        "grad/mrm_head": 25.350687830534298, "grad/mim_decoder": 131.7512548612452,
        "s1/loss": 11.727499961853027, "s1/itc": 2.450018882751465, "s1/itm": 0.8324275612831116,
        "s1/mlm": 3.7266831398010254, "s1/mrm": 2.2683496475219727, "s1/mim": 2.4500210285186768,
        "s1/teacher": "fusion:2,mlm_head:1,text:2,text_proj:1,vision:1,vision_proj:1",
    },
    "token": {
        "s0/loss": 11.143499374389648, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.902674674987793, "s0/mrm": 2.1428580284118652, "s0/mim": 2.747239828109741,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.0002410165616311133, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.004902952816337347,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 352.9809740860728,
        "grad/text": 197.5006489940135, "grad/fusion": 159.4327797075162,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 41.77809520327901,
        "grad/mrm_head": 22.169576516497557, "grad/mim_decoder": 117.0773228746747,
        "s1/loss": 11.77238941192627, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.874021291732788, "s1/mrm": 2.1519970893859863, "s1/mim": 2.701838254928589,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "active_itc": {
        "s0/loss": 1.6845135688781738, "s0/itc": 1.6845135688781738, "s0/itc/i2t_acc": 0.20000000298023224,
        "s0/itc/t2i_acc": 0.20000000298023224, "s0/itc/loss_i2t": 1.7122732400894165,
        "s0/itc/loss_t2i": 1.6567538976669312, "s0/itc/temperature": 0.07000000029802322, "s0/teacher": "",
        "grad/none": 53.0, "grad/vision": 221.79249252458249, "grad/text": 141.9394629863118,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "s1/loss": 2.3776607513427734, "s1/itc": 2.3776607513427734, "s1/teacher": "",
    },
    "active_itc_mlm": {
        "s0/loss": 5.462089538574219, "s0/itc": 1.6861748695373535, "s0/mlm": 3.775914430618286,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7425873279571533, "s0/itc/loss_t2i": 1.6297622919082642,
        "s0/itc/temperature": 0.07000000029802322, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/teacher": "text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 22.0,
        "grad/vision": 92.14026299839134, "grad/text": 83.59842147542327, "grad/fusion": 47.03785455263473,
        "grad/vision_proj": 12.362848457432847, "grad/text_proj": 4.783124470102848,
        "grad/mlm_head": 33.486409983455815, "s1/loss": 6.236452102661133, "s1/itc": 2.379322052001953,
        "s1/mlm": 3.8571298122406006, "s1/teacher": "text:1,text_proj:1,vision:1,vision_proj:1",
    },
    "active_itm_mrm_mim": {
        "s0/loss": 5.312249183654785, "s0/itm": 0.6673768758773804, "s0/mrm": 2.166314125061035,
        "s0/mim": 2.478558301925659, "s0/itm/accuracy": 0.6666666865348816, "s0/itm/pos_acc": 0.0,
        "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0, "s0/mask/text_masked": 1.600000023841858,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 9.0, "grad/vision": 320.73294230476995,
        "grad/text": 85.98831816948325, "grad/fusion": 223.03767918667705, "grad/itm_head": 6.031000627204776,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 5.248491287231445, "s1/itm": 0.6631549596786499, "s1/mrm": 2.1666088104248047,
        "s1/mim": 2.418727397918701, "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "active_mim": {
        "s0/loss": 2.683831214904785, "s0/mim": 2.683831214904785, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mim/pred_var": 0.023003503680229187,
        "s0/mim/target_var": 0.04821746051311493, "s0/mim/num_masked": 60.0, "s0/teacher": "vision:1",
        "grad/none": 72.0, "grad/vision": 62.99946171778018, "grad/mim_decoder": 292.4419336965576,
        "s1/loss": 2.680854558944702, "s1/mim": 2.680854558944702, "s1/teacher": "vision:1",
    },
    "no_itc": {
        "s0/loss": 9.228361129760742, "s0/itm": 0.7154403924942017, "s0/mlm": 3.8404998779296875,
        "s0/mrm": 2.135749340057373, "s0/mim": 2.5366718769073486, "s0/itm/accuracy": 0.3333333432674408,
        "s0/itm/pos_acc": 1.0, "s0/itm/neg_acc": 0.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00045885893632657826, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.009507816284894943,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 208.3932852541293,
        "grad/text": 97.49061148874279, "grad/fusion": 138.68598078519636, "grad/itm_head": 9.709423242136836,
        "grad/mlm_head": 38.42821116987761, "grad/mrm_head": 18.225462230032747,
        "grad/mim_decoder": 111.7242366409628, "s1/loss": 9.275693893432617, "s1/itm": 0.709114134311676,
        "s1/mlm": 3.9051036834716797, "s1/mrm": 2.135040044784546, "s1/mim": 2.526435375213623,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "itm_hardness": {
        "s0/loss": 10.926823616027832, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 412.3231154983523,
        "grad/text": 214.7899772177143, "grad/fusion": 229.83411979830367,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.54269790649414, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "dup_ids": {
        "s0/loss": 10.935211181640625, "s0/itc": 1.6875555515289307, "s0/itm": 0.6715583801269531,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.4000000059604645, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7418609857559204, "s0/itc/loss_t2i": 1.6332499980926514,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 0.0,
        "grad/vision": 335.6800476468061, "grad/text": 142.97740806081572, "grad/fusion": 229.46358124547922,
        "grad/vision_proj": 10.93249071230457, "grad/text_proj": 4.5196330627859425,
        "grad/itm_head": 6.194668145850301, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.547576904296875, "s1/itc": 2.380702495574951, "s1/itm": 0.6687100529670715,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1",
    },
    "no_image_ids": {
        "s0/loss": 10.926823616027832, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 412.3231154983523,
        "grad/text": 214.7899772177143, "grad/fusion": 229.83411979830367,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 21.857528088323463, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.54269790649414, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "regression_options": {
        "s0/loss": 8.265625, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 0.9885271787643433, "s0/mim": 0.995146632194519,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.5328311920166016,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.03406558185815811, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 382.40895441311295,
        "grad/text": 210.6816979498044, "grad/fusion": 202.13635106065027,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 10.12302292692624, "grad/mim_decoder": 85.13836682740347,
        "s1/loss": 8.913924217224121, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 0.9970049262046814, "s1/mim": 0.9595584869384766,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "mrm_smooth_beta": {
        "s0/loss": 11.223837852478027, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.4633281230926514, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.5399365425109863,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 423.2845297896811,
        "grad/text": 213.88421227165964, "grad/fusion": 236.50838394179078,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 37.850919721472565,
        "grad/mrm_head": 25.59260043300037, "grad/mim_decoder": 123.6934747227496,
        "s1/loss": 11.820625305175781, "s1/itc": 2.3776607513427734, "s1/itm": 0.6668717265129089,
        "s1/mlm": 3.912828207015991, "s1/mrm": 2.4445364475250244, "s1/mim": 2.418727397918701,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "weights": {
        "s0/loss": 9.141050338745117, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 3.9312243461608887, "s0/mrm": 2.166314125061035, "s0/mim": 2.478558301925659,
        "s0/itc/i2t_acc": 0.20000000298023224, "s0/itc/t2i_acc": 0.20000000298023224,
        "s0/itc/loss_i2t": 1.7122732400894165, "s0/itc/loss_t2i": 1.6567538976669312,
        "s0/itc/temperature": 0.07000000029802322, "s0/itm/accuracy": 0.6666666865348816,
        "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0, "s0/mask/image_masked": 12.0,
        "s0/mask/text_masked": 1.600000023841858, "s0/mlm/accuracy": 0.0, "s0/mlm/num_masked": 8.0,
        "s0/mrm/pred_var": 0.00038855287129990757, "s0/mrm/target_var": 0.15271902084350586,
        "s0/mrm/num_masked": 68.0, "s0/mim/pred_var": 0.01169197540730238,
        "s0/mim/target_var": 0.034065309911966324, "s0/mim/num_masked": 60.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 697.844435553674,
        "grad/text": 233.0026399350918, "grad/fusion": 448.38369471901893,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 3.012132545467466, "grad/mlm_head": 0.0, "grad/mrm_head": 21.857528088323463,
        "grad/mim_decoder": 247.3869494454992, "s1/loss": 9.715160369873047, "s1/itc": 2.3776607513427734,
        "s1/itm": 0.6668717265129089, "s1/mlm": 3.912828207015991, "s1/mrm": 2.1666088104248047,
        "s1/mim": 2.418727397918701, "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "nothing_masked": {
        "s0/loss": 2.350727081298828, "s0/itc": 1.6845135688781738, "s0/itm": 0.6662134528160095,
        "s0/mlm": 0.0, "s0/mrm": 0.0, "s0/mim": 0.0, "s0/itc/i2t_acc": 0.20000000298023224,
        "s0/itc/t2i_acc": 0.20000000298023224, "s0/itc/loss_i2t": 1.7122732400894165,
        "s0/itc/loss_t2i": 1.6567538976669312, "s0/itc/temperature": 0.07000000029802322,
        "s0/itm/accuracy": 0.6666666865348816, "s0/itm/pos_acc": 0.0, "s0/itm/neg_acc": 1.0,
        "s0/mask/image_masked": 0.0, "s0/mask/text_masked": 0.0, "s0/mlm/accuracy": 0.0,
        "s0/mlm/num_masked": 0.0, "s0/mrm/pred_var": 0.0, "s0/mrm/target_var": 0.0, "s0/mrm/num_masked": 0.0,
        "s0/mim/pred_var": 0.0, "s0/mim/target_var": 0.0, "s0/mim/num_masked": 0.0,
        "s0/teacher": "fusion:1,text:1,vision:1", "grad/none": 0.0, "grad/vision": 225.8174124089772,
        "grad/text": 143.88486237173214, "grad/fusion": 26.27682240021437,
        "grad/vision_proj": 37.94101257541115, "grad/text_proj": 52.35706373836001,
        "grad/itm_head": 6.024265090934932, "grad/mlm_head": 0.0, "grad/mrm_head": 0.0,
        "grad/mim_decoder": 0.0, "s1/loss": 3.044532537460327, "s1/itc": 2.3776607513427734,
        "s1/itm": 0.6668717265129089, "s1/mlm": 0.0, "s1/mrm": 0.0, "s1/mim": 0.0,
        "s1/teacher": "fusion:1,text:1,vision:1",
    },
    "schedule": {
        "s0/loss": 1.7240434885025024, "s0/itc": 1.7240434885025024, "s0/itc/i2t_acc": 0.20000000298023224,
        "s0/itc/t2i_acc": 0.20000000298023224, "s0/itc/loss_i2t": 1.8261467218399048,
        "s0/itc/loss_t2i": 1.6219402551651, "s0/itc/temperature": 0.07000000029802322,
        "s0/teacher": "text:1,text_proj:1,vision:1,vision_proj:1", "grad/none": 53.0,
        "grad/vision": 106.19634402246186, "grad/text": 14.908541557837836,
        "grad/vision_proj": 15.547175456122204, "grad/text_proj": 4.681013684952632,
        "s1/loss": 10.890701293945312, "s1/itc": 2.417001485824585, "s1/mlm": 3.8571298122406006,
        "s1/mrm": 2.1660654544830322, "s1/mim": 2.4505045413970947, "s1/itc/i2t_acc": 0.20000000298023224,
        "s1/itc/t2i_acc": 0.20000000298023224, "s1/itc/loss_i2t": 2.518876314163208,
        "s1/itc/loss_t2i": 2.315126657485962, "s1/itc/temperature": 0.07000000029802322,
        "s1/mask/image_masked": 12.0, "s1/mask/text_masked": 1.600000023841858, "s1/mlm/accuracy": 0.0,
        "s1/mlm/num_masked": 8.0, "s1/mrm/pred_var": 0.000485942728118971,
        "s1/mrm/target_var": 0.15387415885925293, "s1/mrm/num_masked": 68.0,
        "s1/mim/pred_var": 0.018739966675639153, "s1/mim/target_var": 0.03407847136259079,
        "s1/mim/num_masked": 60.0, "s1/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1",
        "s2/loss": 11.890810012817383, "s2/itc": 2.6576051712036133, "s2/itm": 0.67406165599823,
        "s2/mlm": 3.890768051147461, "s2/mrm": 2.1705260276794434, "s2/mim": 2.4978485107421875,
        "s2/itc/i2t_acc": 0.20000000298023224, "s2/itc/t2i_acc": 0.20000000298023224,
        "s2/itc/loss_i2t": 2.7430331707000732, "s2/itc/loss_t2i": 2.5721771717071533,
        "s2/itc/temperature": 0.07000000029802322, "s2/itm/accuracy": 0.6666666865348816,
        "s2/itm/pos_acc": 0.0, "s2/itm/neg_acc": 1.0, "s2/mask/image_masked": 12.0,
        "s2/mask/text_masked": 1.600000023841858, "s2/mlm/accuracy": 0.0, "s2/mlm/num_masked": 8.0,
        "s2/mrm/pred_var": 0.0003371539060026407, "s2/mrm/target_var": 0.15093925595283508,
        "s2/mrm/num_masked": 68.0, "s2/mim/pred_var": 0.010205422528088093,
        "s2/mim/target_var": 0.03244020789861679, "s2/mim/num_masked": 60.0, "s2/itm/hardness": 0.0,
        "s2/teacher": "fusion:1,text:1,text_proj:1,vision:1,vision_proj:1",
    },
}
# fmt: on


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compute_matches_the_recorded_values(name, one_thread):
    got = _fingerprint(name)
    want = REFERENCE[name]
    assert got.keys() == want.keys()
    bad = {
        k: (got[k], v)
        for k, v in want.items()
        if (got[k] != v if isinstance(v, str) else not math.isclose(got[k], v, rel_tol=1e-5, abs_tol=1e-6))
    }
    assert not bad, bad


def test_terms_call_the_registered_parts():
    """The terms hold the student's parts, the ITC module and the teacher's projections by reference:
    the state dict has no extra entries, and a deep copy keeps the sharing."""
    torch.manual_seed(0)
    m = build_model(load_config("tiny", [*TINY, *_MOMENTUM]), vocab_size=VOCAB)
    assert list(m.terms) == ["itc", "itm", "mlm", "mrm", "mim"]
    assert not any(k.startswith("terms") for k in m.state_dict())
    for model in (m, copy.deepcopy(m)):
        t, st = model.terms, model.student
        assert t["itc"].contrastive is model.itc and t["itc"].image_proj is st.vision_proj
        assert t["itc"].momentum[0] is model.teacher.module.vision_proj
        assert t["itm"].fusion is st.fusion and t["itm"].head is st.itm_head
        assert t["mlm"].head is st.mlm_head and t["mrm"].head is st.mrm_head
        assert t["mim"].decoder is st.mim_decoder


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("# fmt: off\nREFERENCE: dict[str, dict[str, float | str]] = {")
    for case in CASES:
        print(f"    {case!r}: {{")
        line = "       "
        for k, v in _fingerprint(case).items():
            item = f" {k!r}: {v!r},"
            if len(line) + len(item) > 110:
                print(line)
                line = "       "
            line += item
        print(line + "\n    },")
    print("}\n# fmt: on")
