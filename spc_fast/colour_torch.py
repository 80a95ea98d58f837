"""The colour conversions of ``spc_fast.colour`` on torch tensors (channel axis 1: ``[B, 3, ...]``).

Same formulas and constants as the float64 reference; used by the vectorised CPU paths and as building blocks
of the retouch operators. Computations run in the dtype of the input (float32 in practice).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from spc_fast import colour


def constant(array, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)


def apply_matrix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Colour matrix (3, 3) or per-image (B, 3, 3) applied to x [B, 3, ...]."""
    flat = x.flatten(2)  # [B, 3, P]
    return torch.matmul(matrix, flat).view_as(x)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    return torch.where(c <= colour.SRGB_BREAK, c / 12.92, ((c + 0.055) / 1.055).pow(2.4))


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    safe = c.clamp_min(colour.SRGB_LINEAR_BREAK)
    return torch.where(c <= colour.SRGB_LINEAR_BREAK, c * 12.92, 1.055 * safe.pow(1.0 / 2.4) - 0.055)


def lab_f(t: torch.Tensor) -> torch.Tensor:
    # Below epsilon the CIE function is the tangent line delta + slope * (t - epsilon); above it the cube root.
    cube_root = t.clamp_min(colour.LAB_EPSILON).pow_(1.0 / 3.0)
    return (t - colour.LAB_EPSILON).clamp_max_(0.0).mul_(colour.LAB_SLOPE).add_(cube_root)


def lab_f_inverse(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f > colour.LAB_DELTA, f * f * f, (f - colour.LAB_OFFSET) / colour.LAB_SLOPE)


def linear_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """Linear RGB [B, 3, ...] -> Lab [B, 3, ...]."""
    to_xyz_scaled = constant(colour.RGB_TO_XYZ / colour.WHITE_D65[:, None], rgb)
    fx, fy, fz = lab_f(apply_matrix(to_xyz_scaled, rgb)).unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_linear(lab: torch.Tensor) -> torch.Tensor:
    """Lab [B, 3, ...] -> linear RGB [B, 3, ...] (not clipped)."""
    L, a, b = lab.unbind(1)
    fy = (L + 16.0) / 116.0
    xyz_scaled = lab_f_inverse(torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim=1))
    from_xyz_scaled = constant(colour.XYZ_TO_RGB * colour.WHITE_D65[None, :], lab)
    return apply_matrix(from_xyz_scaled, xyz_scaled)


@functools.cache
def uint8_linear_table(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Linear value of each of the 256 sRGB uint8 codes: decoding a uint8 image is a table lookup."""
    return torch.as_tensor(colour.srgb_to_linear(np.arange(256) / 255.0), dtype=dtype, device=device)
