"""The artist reward r_PA (eq. 7) of a batch: eager per-attribute torch vs our path, and where the time goes.

r_PA needs the photometric attributes of three batches (input X, edit X_e, reference X_gt), compliance and
photometric-control rewards from them, and LPIPS(X_e, X_gt). The baseline is the straightforward eager
implementation: each batch converted to full-size linear RGB, XYZ and Lab tensors, then one reduction per
attribute. Ours is ``rewards.artist_reward`` (attributes by ``photometric.attributes``: the fused Triton
kernel on CUDA, the cache-tiled torch path on the CPU). LPIPS uses a randomly initialised AlexNet
(``load_lpips(random_backbone=True)``): same cost as the real network, distances that are not LPIPS.

Rows per case: r_PA (both paths), the attributes of the three batches alone (both paths) and LPIPS alone, so
the split between attributes and LPIPS is visible. The error column is the largest |r_PA - reference| over
the first ``REFERENCE_IMAGES`` images, the reference being float64 numpy attributes (``attributes_reference``)
with the same LPIPS values.
"""

from __future__ import annotations

import numpy as np
import torch

from spc_fast import colour, colour_torch, photometric, retouch, rewards
from spc_fast.bench.harness import Row, measure
from spc_fast.bench.photos import photo_batch
from spc_fast.critic.vocabulary import TONE_OPS, Suggestion

BASELINES = ("eager torch",)
ERROR_KIND = "max |r_PA - float64-attribute reference| over the first 8 images"
REFERENCE_IMAGES = 8
EDIT = {"exposure": 0.4, "contrast": 1.2, "saturation": 1.15, "temperature": 15.0}
TARGET = {"exposure": 0.3, "contrast": 1.1, "saturation": 1.3, "temperature": 25.0}
SUGGESTIONS = [
    Suggestion("exposure", 1, "slightly"),
    Suggestion("contrast", 1, "slightly"),
    Suggestion("saturation", 1, "slightly"),
    Suggestion("temperature", 1, "slightly"),
]


def eager_attributes(images: torch.Tensor) -> torch.Tensor:
    """Attributes [B, 4] the straightforward way: full-size float32 linear RGB, XYZ and Lab, one reduction
    per attribute."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    linear = colour_torch.srgb_to_linear(x)  # [B, 3, H, W]
    xyz = colour_torch.apply_matrix(colour_torch.constant(colour.RGB_TO_XYZ, linear), linear)
    white = colour_torch.constant(colour.WHITE_D65, xyz)[None, :, None, None]
    f = colour_torch.lab_f(xyz / white)
    lightness = 116.0 * f[:, 1] - 16.0
    a, b = 500.0 * (f[:, 0] - f[:, 1]), 200.0 * (f[:, 1] - f[:, 2])
    exposure = lightness.mean((1, 2))
    contrast = lightness.std((1, 2), correction=0)
    saturation = torch.sqrt(a * a + b * b).mean((1, 2))
    cct = photometric.cct_from_xyz(xyz.mean((2, 3)))
    return torch.stack([exposure, contrast, saturation, cct], dim=1)


def eager_artist_reward(x, x_edit, x_gt, suggestions, lpips_model) -> torch.Tensor:
    """r_PA with eager attributes and the rewards written out attribute by attribute."""
    base, edit, gt = (rewards.to_mired(eager_attributes(t)) for t in (x, x_edit, x_gt))  # [B, 4] each
    tau = rewards.DEFAULT_TAU
    photo_terms = []
    for k in range(photometric.NUM_ATTRIBUTES):
        d_edit, d_gt = edit[:, k] - base[:, k], gt[:, k] - base[:, k]
        follow = (1.0 - (d_edit - d_gt).abs() / (d_gt.abs() + rewards.DEFAULT_EPS)).clamp_min(0.0)
        keep = (d_edit.abs() <= tau[k]).float()
        photo_terms.append(torch.where(d_gt.abs() < tau[k], keep, follow))
    r_photo = torch.stack(photo_terms, 1).mean(1)
    complied = []
    for b, image_suggestions in enumerate(suggestions):
        hits = []
        for s in image_suggestions:
            k = TONE_OPS.index(s.op)
            hits.append(float(s.direction * float(edit[b, k] - base[b, k]) > tau[k]))
        complied.append(sum(hits) / len(hits) if hits else 1.0)
    r_comp = torch.tensor(complied, device=base.device)
    r_perc = rewards.perceptual_reward(x_edit, x_gt, lpips_model)
    return r_comp * (rewards.LAMBDA_PHOTO * r_photo + rewards.LAMBDA_PERC * r_perc)


def reference_reward(x, x_edit, x_gt, suggestions, lpips_model, count: int) -> np.ndarray:
    """r_PA of the first ``count`` images with float64 numpy attributes (the truth) and the same LPIPS."""

    def attrs(batch):
        return torch.from_numpy(
            np.stack([photometric.attributes_reference(img.permute(1, 2, 0).float().cpu().numpy())
                      for img in batch[:count]])
        )

    a_x, a_e, a_gt = attrs(x), attrs(x_edit), attrs(x_gt)
    r_comp = rewards.compliance_from_attributes(a_x, a_e, suggestions[:count])
    r_photo = rewards.photometric_control_from_attributes(a_x, a_e, a_gt)
    r_perc = rewards.perceptual_reward(x_edit[:count], x_gt[:count], lpips_model).cpu()
    return (r_comp * (rewards.LAMBDA_PHOTO * r_photo + rewards.LAMBDA_PERC * r_perc)).double().numpy()


def cases(quick: bool) -> list[tuple[int, int, int]]:
    return [(4, 64, 64)] if quick else [(64, 512, 512)]


def _case_rows(batch: int, h: int, w: int, device: torch.device, lpips_model: torch.nn.Module) -> list[Row]:
    x = photo_batch(batch, h, w, torch.float32, device)
    x_edit, x_gt = retouch.apply(x, **EDIT), retouch.apply(x, **TARGET)
    suggestions = [SUGGESTIONS] * batch
    shape = f"{batch}x3x{h}x{w} float32"
    count = min(batch, REFERENCE_IMAGES)
    truth = reference_reward(x, x_edit, x_gt, suggestions, lpips_model, count)
    triple = 3 * x.numel() * x.element_size()
    timed = {  # (case, provider) -> (fn, returns r_PA, bytes read)
        (f"{shape} r_PA", "eager torch"): (
            lambda: eager_artist_reward(x, x_edit, x_gt, suggestions, lpips_model), True, triple),
        (f"{shape} r_PA", "spc-fast"): (
            lambda: rewards.artist_reward(x, x_edit, x_gt, suggestions, lpips_model), True, triple),
        (f"{shape} attributes x3", "eager torch"): (
            lambda: [eager_attributes(t) for t in (x, x_edit, x_gt)], False, triple),
        (f"{shape} attributes x3", "spc-fast"): (
            lambda: [photometric.attributes(t) for t in (x, x_edit, x_gt)], False, triple),
        (f"{shape} LPIPS", "lpips (random AlexNet)"): (
            lambda: rewards.perceptual_reward(x_edit, x_gt, lpips_model), False, triple * 2 // 3),
    }
    rows, medians = [], {}
    for (case, provider), (fn, is_reward, nbytes) in timed.items():
        with torch.no_grad():
            p20, p50, p80 = measure(fn, device, budget_s=1.0)
            error = float(np.abs(fn()[:count].double().cpu().numpy() - truth).max()) if is_reward else None
        medians[(case, provider)] = p50
        rows.append(Row(bench="rewards", case=case, provider=provider, p20_ms=p20, p50_ms=p50, p80_ms=p80,
                        bytes_moved=nbytes, gb_per_s=nbytes / p50 / 1e6, max_error=error))
    lpips_ms = medians[(f"{shape} LPIPS", "lpips (random AlexNet)")]
    for row in rows:
        if row.case == f"{shape} r_PA":
            attributes = medians[(f"{shape} attributes x3", row.provider)]
            row.note = (f"attributes {100 * attributes / row.p50_ms:.0f}%, LPIPS {100 * lpips_ms / row.p50_ms:.0f}%"
                        " of the r_PA time")
    return rows


def run(device: torch.device, quick: bool = False) -> list[Row]:
    lpips_model = rewards.load_lpips(random_backbone=True).to(device)
    return [row for shape in cases(quick) for row in _case_rows(*shape, device, lpips_model)]
