"""Fused Triton kernel of the rule-based retouch chain (SPEC.md §3): one read and one write of the image.

temperature -> exposure -> contrast -> saturation, each step ending in an sRGB clip, per pixel in fp32:
decode (uint8 through a 256-entry table, floats upcast) -> linearise -> one per-image 3x3 matrix (temperature
and exposure gain folded together) clamped to [0, upper] -> Lab -> contrast around the image's mean L* -> clip
-> Lab -> saturation -> clip -> sRGB -> store in the input dtype. The mean L* comes from a separate reduction
(``spc_fast.kernels.photometric_stats`` with the same pre-transform), passed in as ``mu_l``.

Clipping sRGB to [0, 1] equals clipping linear RGB to [0, 1] (the transfer curve is monotone with 0 -> 0 and
1 -> 1), so every clip happens in linear space and the image is encoded only once, at the end. The torch
fallback of this op is ``spc_fast.retouch.retouch_torch``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from spc_fast import colour
from spc_fast.colour_torch import uint8_linear_table
from spc_fast.kernels.dispatch import record_launch
from spc_fast.kernels.tl_colour import lab_f, lab_f_inverse, linear_to_srgb, srgb_to_linear, store_rgb

BLOCK_PIXELS = 1024
NUM_WARPS = 4

# Row-major 3x3 matrices of the Lab conversions, with the D65 white folded in:
# [0:9] linear RGB -> XYZ / white, [9:18] XYZ / white -> linear RGB.
_LAB_MATRICES = np.concatenate(
    [
        (colour.RGB_TO_XYZ / colour.WHITE_D65[:, None]).ravel(),
        (colour.XYZ_TO_RGB * colour.WHITE_D65[None, :]).ravel(),
    ]
)


@triton.jit
def _matvec(m_ptr, x0, x1, x2):
    # [y0, y1, y2] = M @ [x0, x1, x2] with M row-major at m_ptr (nine scalar loads, cached)
    y0 = tl.load(m_ptr + 0) * x0 + tl.load(m_ptr + 1) * x1 + tl.load(m_ptr + 2) * x2
    y1 = tl.load(m_ptr + 3) * x0 + tl.load(m_ptr + 4) * x1 + tl.load(m_ptr + 5) * x2
    y2 = tl.load(m_ptr + 6) * x0 + tl.load(m_ptr + 7) * x1 + tl.load(m_ptr + 8) * x2
    return y0, y1, y2


@triton.jit
def _linear_to_lab(lab_ptr, r, g, b):
    x, y, z = _matvec(lab_ptr, r, g, b)  # XYZ / white
    fx = lab_f(x, True)  # the FMA-only Newton cube root
    fy = lab_f(y, True)
    fz = lab_f(z, True)
    return 116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)


@triton.jit
def _lab_to_clipped_linear(lab_ptr, lightness, a, b):
    fy = (lightness + 16.0) / 116.0
    x = lab_f_inverse(fy + a / 500.0)
    y = lab_f_inverse(fy)
    z = lab_f_inverse(fy - b / 200.0)
    r, g, bl = _matvec(lab_ptr + 9, x, y, z)
    # the sRGB clip of the step, done on the linear side
    return tl.clamp(r, 0.0, 1.0), tl.clamp(g, 0.0, 1.0), tl.clamp(bl, 0.0, 1.0)


@triton.jit
def _retouch_chain_kernel(
    x_ptr,  # input [B, 3, H, W], any strides, uint8 or float
    y_ptr,  # output [B, 3, H, W], same dtype, any strides
    matrix_ptr,  # [B, 9] fp32: 2^ev * temperature matrix, row-major
    upper_ptr,  # [B] fp32: min(2^ev, 1)
    mu_ptr,  # [B] fp32: mean L* of the image after temperature and exposure
    contrast_ptr,  # [B] fp32: c
    saturation_ptr,  # [B] fp32: s
    lab_ptr,  # [18] fp32: the Lab conversion matrices (_LAB_MATRICES)
    table_ptr,  # [256] fp32: uint8 -> linear decode table
    width,
    num_pixels,  # H * W
    sxb,  # input strides in elements: image, channel, row, column
    sxc,
    sxh,
    sxw,
    syb,  # output strides in elements
    syc,
    syh,
    syw,
    FLAT: tl.constexpr,  # sxh == width * sxw and syh == width * syw
    IS_UINT8: tl.constexpr,
    IS_BFLOAT16: tl.constexpr,  # output dtype bf16
    CONTRAST: tl.constexpr,  # some image has c != 1
    SATURATION: tl.constexpr,  # some image has s != 1
    BLOCK: tl.constexpr,
):
    pid_p = tl.program_id(0)
    img = tl.program_id(1)
    p = pid_p * BLOCK + tl.arange(0, BLOCK)
    mask = p < num_pixels
    if FLAT:
        # rows follow each other in memory (NCHW-contiguous or channels_last): pixel p sits at p * stride_w
        x_pix = x_ptr + img.to(tl.int64) * sxb + p * sxw
        y_pix = y_ptr + img.to(tl.int64) * syb + p * syw
    else:
        h = p // width
        w = p - h * width
        x_pix = x_ptr + img.to(tl.int64) * sxb + h * sxh + w * sxw
        y_pix = y_ptr + img.to(tl.int64) * syb + h * syh + w * syw

    if IS_UINT8:
        r = tl.load(table_ptr + tl.load(x_pix, mask=mask, other=0).to(tl.int32))
        g = tl.load(table_ptr + tl.load(x_pix + sxc, mask=mask, other=0).to(tl.int32))
        b = tl.load(table_ptr + tl.load(x_pix + 2 * sxc, mask=mask, other=0).to(tl.int32))
    else:
        r = srgb_to_linear(tl.load(x_pix, mask=mask, other=0.0).to(tl.float32))
        g = srgb_to_linear(tl.load(x_pix + sxc, mask=mask, other=0.0).to(tl.float32))
        b = srgb_to_linear(tl.load(x_pix + 2 * sxc, mask=mask, other=0.0).to(tl.float32))

    # temperature then exposure: clip(k clip(M lin, 0, 1), 0, 1) = clamp(k M lin, 0, min(k, 1)), k = 2^ev > 0
    upper = tl.load(upper_ptr + img)
    r, g, b = _matvec(matrix_ptr + img * 9, r, g, b)
    r = tl.clamp(r, 0.0, upper)
    g = tl.clamp(g, 0.0, upper)
    b = tl.clamp(b, 0.0, upper)

    if CONTRAST:
        # L* -> mu + c (L* - mu); a*, b* unchanged
        mu = tl.load(mu_ptr + img)
        lightness, a_star, b_star = _linear_to_lab(lab_ptr, r, g, b)
        lightness = mu + tl.load(contrast_ptr + img) * (lightness - mu)
        r, g, b = _lab_to_clipped_linear(lab_ptr, lightness, a_star, b_star)
    if SATURATION:
        # a*, b* -> s a*, s b*; L* unchanged
        s = tl.load(saturation_ptr + img)
        lightness, a_star, b_star = _linear_to_lab(lab_ptr, r, g, b)
        r, g, b = _lab_to_clipped_linear(lab_ptr, lightness, s * a_star, s * b_star)

    r = linear_to_srgb(r)
    g = linear_to_srgb(g)
    b = linear_to_srgb(b)
    store_rgb(y_pix, syc, r, g, b, mask, IS_UINT8, IS_BFLOAT16)


@functools.cache
def _constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # uploaded once per device: a host -> device copy per launch would stall the stream
    f32 = dict(dtype=torch.float32, device=device)
    return torch.as_tensor(_LAB_MATRICES, **f32), uint8_linear_table(torch.float32, device)


def _flat(images: torch.Tensor) -> bool:
    _, _, height, width = images.shape
    return height == 1 or images.stride(2) == width * images.stride(3)


def _check_offsets(images: torch.Tensor) -> None:
    # offsets inside one image are int32 in the kernel (the image offset is int64)
    span = sum(
        (size - 1) * stride for size, stride in zip(images.shape[1:], images.stride()[1:], strict=True)
    )
    if span >= 2**31:
        raise ValueError(
            f"image of shape {tuple(images.shape[1:])} spans {span} elements, too many for 32-bit offsets; "
            "retouch it in tiles (contrast needs the whole image's mean L*: pass it via retouch_chain's mu_l)"
        )


def _launch(
    images: torch.Tensor,
    matrix: torch.Tensor,
    upper: torch.Tensor,
    mu_l: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    apply_contrast: bool,
    apply_saturation: bool,
) -> torch.Tensor:
    batch, _, height, width = images.shape
    out = torch.empty_like(images)  # keeps the input's memory format
    _check_offsets(images)
    _check_offsets(out)
    f32 = dict(dtype=torch.float32, device=images.device)
    lab, table = _constants(images.device)
    grid = (triton.cdiv(height * width, BLOCK_PIXELS), batch)
    record_launch(_retouch_chain_kernel)
    _retouch_chain_kernel[grid](
        images,
        out,
        matrix.reshape(batch, 9).to(**f32).contiguous(),
        upper.to(**f32).contiguous(),
        mu_l.to(**f32).contiguous(),
        contrast.to(**f32).contiguous(),
        saturation.to(**f32).contiguous(),
        lab,
        table,
        width,
        height * width,
        *images.stride(),
        *out.stride(),
        FLAT=_flat(images) and _flat(out),
        IS_UINT8=images.dtype == torch.uint8,
        IS_BFLOAT16=images.dtype == torch.bfloat16,
        CONTRAST=apply_contrast,
        SATURATION=apply_saturation,
        BLOCK=BLOCK_PIXELS,
        num_warps=NUM_WARPS,
    )
    return out


@torch.library.custom_op("spc_fast::retouch_chain", mutates_args=())
def retouch_chain(
    images: torch.Tensor,
    matrix: torch.Tensor,
    upper: torch.Tensor,
    mu_l: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    apply_contrast: bool,
    apply_saturation: bool,
) -> torch.Tensor:
    """Retouch chain of validated images [B, 3, H, W] (uint8 or float in [0, 1]) -> same dtype/shape/strides.

    matrix [B, 3, 3]: 2^ev times the temperature matrix; upper [B]: min(2^ev, 1); mu_l [B]: mean L* after
    temperature and exposure (used only when apply_contrast); contrast, saturation [B]. The flags skip the Lab
    steps when every image of the batch has a neutral contrast / saturation.
    """
    return _launch(images, matrix, upper, mu_l, contrast, saturation, apply_contrast, apply_saturation)


@retouch_chain.register_fake
def _(images, matrix, upper, mu_l, contrast, saturation, apply_contrast, apply_saturation):
    return torch.empty_like(images)
