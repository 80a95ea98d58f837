"""Photometric attributes a_k of an image: exposure, contrast, saturation, CCT (SPEC.md §2).

``attributes_reference`` is the float64 numpy truth. ``attributes`` is the batched torch entry point: the fused
Triton kernel on CUDA (``spc_fast.kernels.photometric_stats``), a cache-tiled vectorised torch path elsewhere.
Both produce the same per-block partial statistics and share ``finalize``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from spc_fast import colour, colour_torch
from spc_fast.images import check_batch, numpy_to_unit, pixel_view, same_size_groups
from spc_fast.kernels import dispatch
from spc_fast.kernels.photometric_partials import NUM_STATS, STAT_NAMES  # noqa: F401 - the kernel's contract

ATTRIBUTE_NAMES = ("exposure", "contrast", "saturation", "cct")
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)

NEUTRAL_WHITE_CCT = colour.mccamy_cct(*(colour.WHITE_D65[:2] / colour.WHITE_D65.sum()))

# Pixels per tile of the CPU path: small enough that a tile's float32 intermediates stay in L2.
CPU_TILE_PIXELS = 1 << 16


def cct_reference(mean_xyz: np.ndarray) -> float:
    total = float(mean_xyz.sum())
    if total < 1e-8:
        return NEUTRAL_WHITE_CCT
    cct = colour.mccamy_cct(mean_xyz[0] / total, mean_xyz[1] / total)
    return float(np.clip(cct, colour.CCT_MIN, colour.CCT_MAX))


def attributes_reference(image: np.ndarray) -> np.ndarray:
    """Attributes (exposure, contrast, saturation, cct) of one H x W x 3 sRGB image, float64, shape (4,)."""
    xyz = colour.linear_to_xyz(colour.srgb_to_linear(numpy_to_unit(image)))
    lab = colour.xyz_to_lab(xyz)
    L, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    chroma = np.sqrt(a**2 + b**2)
    mean_xyz = xyz.reshape(-1, 3).mean(axis=0)
    return np.array([L.mean(), L.std(), chroma.mean(), cct_reference(mean_xyz)])


def cct_from_xyz(mean_xyz: torch.Tensor) -> torch.Tensor:
    """McCamy CCT of per-image mean XYZ [B, 3] (any float dtype), clamped, black images -> neutral white."""
    total = mean_xyz.sum(-1)
    safe_total = torch.where(total < 1e-8, torch.ones_like(total), total)
    x, y = mean_xyz[:, 0] / safe_total, mean_xyz[:, 1] / safe_total
    n = (x - colour.MCCAMY_XE) / (y - colour.MCCAMY_YE)
    c3, c2, c1, c0 = colour.MCCAMY_COEFFS
    cct = (((c3 * n + c2) * n + c1) * n + c0).clamp(colour.CCT_MIN, colour.CCT_MAX)
    return torch.where(total < 1e-8, torch.full_like(cct, NEUTRAL_WHITE_CCT), cct)


def mean_lightness(partials: torch.Tensor) -> torch.Tensor:
    """Mean L* [B] (float64) from per-block statistics [B, NB, NUM_STATS] (retouch's contrast needs only this)."""
    p = partials.double()
    return (p[..., 0] * p[..., 1]).sum(1) / p[..., 0].sum(1)


def finalize(partials: torch.Tensor) -> torch.Tensor:
    """Combine per-block statistics [B, NB, NUM_STATS] into attributes [B, 4] (float32).

    Block means and M2 are merged with Chan et al.'s parallel formula in float64, which keeps the variance of a
    12-megapixel image exact to float32 precision (the naive sum-of-squares form loses it to cancellation).
    """
    p = partials.double()
    count, mean_l, m2_l = p[..., 0], p[..., 1], p[..., 2]
    n = count.sum(1)  # [B]
    mean = mean_lightness(p)
    m2 = m2_l.sum(1) + (count * (mean_l - mean[:, None]) ** 2).sum(1)
    sums = p[..., 3:].sum(1)  # [B, 4]: chroma, X, Y, Z
    cct = cct_from_xyz(sums[:, 1:] / n[:, None])
    out = torch.stack([mean, (m2 / n).clamp_min(0).sqrt(), sums[:, 0] / n, cct], dim=1)
    return out.float()


def default_tile_pixels(images: torch.Tensor) -> int:
    """Pixels per tile of the tiled torch paths: cache-sized on the CPU, the whole batch on an accelerator."""
    return CPU_TILE_PIXELS if images.device.type == "cpu" else images[:, 0].numel()


@functools.cache
def _xyz_matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # linear RGB -> XYZ, and -> XYZ / white, made once per device (no host-to-device copy per call)
    rgb_to_xyz = torch.as_tensor(colour.RGB_TO_XYZ, dtype=dtype, device=device)
    return rgb_to_xyz, rgb_to_xyz / torch.as_tensor(colour.WHITE_D65, dtype=dtype, device=device)[:, None]


def block_stats_torch(
    images: torch.Tensor,
    tile_pixels: int | None = None,
    *,
    linear_matrix: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-tile statistics [B, num_tiles, NUM_STATS] of validated images [B, 3, H, W].

    Computed in float32 (float64 for float64 images, which the retouch reference tests rely on).

    Works tile by tile over the flattened pixels of the whole batch so that every intermediate of a tile stays
    in cache: one pass over the image in memory instead of one per elementwise operation. With
    ``linear_matrix`` [B, 3, 3] and ``upper`` [B] each pixel's linear RGB first becomes
    ``clamp(linear_matrix @ rgb, 0, upper)``, the contract of ``spc_fast.kernels.photometric_stats``.
    """
    batch = images.shape[0]
    pixels = pixel_view(images)  # [B, 3, P]
    device = images.device
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    table = colour_torch.uint8_linear_table(dtype, device) if images.dtype == torch.uint8 else None
    rgb_to_xyz, to_xyz_scaled = _xyz_matrices(dtype, device)
    if linear_matrix is not None:
        linear_matrix, upper = linear_matrix.to(dtype), upper.to(dtype)
    per_tile = max(1, (tile_pixels or default_tile_pixels(images)) // batch)
    rows = []
    for start in range(0, pixels.shape[-1], per_tile):
        tile = pixels[:, :, start : start + per_tile]  # [B, 3, T]
        if table is not None:
            linear = table.index_select(0, tile.reshape(-1).long()).view(tile.shape)
        else:
            linear = colour_torch.srgb_to_linear(tile.to(dtype))
        if linear_matrix is not None:
            linear = torch.minimum(torch.matmul(linear_matrix, linear).clamp_min(0.0), upper[:, None, None])
        fx, fy, fz = colour_torch.lab_f(torch.matmul(to_xyz_scaled, linear)).unbind(1)  # [B, T] each
        # L* = 116 fy - 16, so its mean and M2 follow from those of fy.
        mean_fy = fy.mean(1)
        deviation = fy - mean_fy[:, None]
        m2_fy = torch.linalg.vecdot(deviation, deviation)
        chroma = torch.hypot(500.0 * (fx - fy), 200.0 * (fy - fz))
        sum_xyz = linear.sum(-1) @ rgb_to_xyz.T  # [B, 3]
        count = torch.full_like(mean_fy, tile.shape[-1])
        lightness_stats = [count, 116.0 * mean_fy - 16.0, 116.0**2 * m2_fy, chroma.sum(1)]
        rows.append(torch.cat([torch.stack(lightness_stats, 1), sum_xyz], 1))
    return torch.stack(rows, dim=1)


def attributes(images: torch.Tensor, *, validate: bool = True) -> torch.Tensor:
    """Photometric attributes of sRGB images.

    images: (B, 3, H, W) or (3, H, W), uint8 or float16/bfloat16/float32 in [0, 1], any memory format, any device.
    Returns float32 (B, 4) (or (4,)) in ATTRIBUTE_NAMES order. On CUDA the fused Triton kernel runs (one read of
    the image); elsewhere a tiled torch path. ``SPC_FAST_KERNELS=auto|triton|torch`` chooses (``kernels.dispatch``).
    ``validate=False`` skips the float range check (a host sync) for images a caller has already checked.
    """
    batch, unbatched = check_batch(images, check_values=validate)
    if dispatch.use_triton(batch, op="photometric_stats"):  # the kernel module imports triton: reached only then
        from spc_fast.kernels.photometric_finalize import photometric_finalize
        from spc_fast.kernels.photometric_stats import photometric_stats

        out = photometric_finalize(photometric_stats(batch), float(NEUTRAL_WHITE_CCT))
    else:
        out = finalize(block_stats_torch(batch))
    return out[0] if unbatched else out


def attributes_of(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attributes [B, 4] of (3, H, W) images of any sizes: one batched ``attributes`` call per size."""
    out = torch.empty(len(images), NUM_ATTRIBUTES)
    for indices in same_size_groups(images):
        out[indices] = attributes(torch.stack([images[i] for i in indices])).cpu()
    return out
