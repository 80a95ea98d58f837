"""Rule-based retouch operators (SPEC.md §3): temperature -> exposure -> contrast -> saturation.

Every operator maps an sRGB image in [0, 1] to an sRGB image in [0, 1] and ends with a clip:
- ``temperature(delta_mired)``: von Kries adaptation in Bradford cone space between daylight-locus whites
  (``colour.temperature_matrix``); positive = warmer = lower measured CCT.
- ``exposure(ev)``: linear RGB x 2^ev.
- ``contrast(c)``: L* -> mu + c (L* - mu), mu the mean L* of the image entering the step; a*, b* unchanged.
- ``saturation(s)``: a*, b* x s; L* unchanged.

Parameter ranges (``RANGES``): a value outside is refused with a ValueError that names the range and why it
ends there (``_RANGE_NOTES``), never clipped. Within them the float32 paths stay finite (2^20, and L*, a*, b* of
at most about 10^4, are far from overflow), so every path saturates to white, black or the gamut boundary like the
float64 reference. At its neutral value an operator is the identity: its reference returns the input unchanged,
and a zero temperature shift is exactly the identity matrix.

``*_reference`` are the float64 numpy truth, one per operator, plus ``apply_reference`` composing them.
``apply`` is the batched torch entry point: the fused Triton kernel (``spc_fast.kernels.retouch_chain``, with
the mean L* from ``spc_fast.kernels.photometric_stats``) where ``kernels.dispatch.use_triton`` allows it, the
cache-tiled torch path ``retouch_torch`` elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from spc_fast import colour, colour_torch, photometric
from spc_fast.images import check_batch, from_unit_float, is_channels_last, numpy_to_unit, pixel_view
from spc_fast.kernels import dispatch
from spc_fast.retouch_params import (  # noqa: F401 - the parameters' public names, here too
    NEUTRAL,
    RANGES,
    Param,
    chain_parameters,
    check_parameter,
    temperature_matrices,
)


def _encode_clipped(linear: np.ndarray) -> np.ndarray:
    return np.clip(colour.linear_to_srgb(linear), 0.0, 1.0)


def temperature_reference(image: np.ndarray, delta_mired: float) -> np.ndarray:
    """Temperature shift of one H x W x 3 sRGB image (positive delta_mired = warmer), float64 in [0, 1]."""
    check_parameter("temperature", delta_mired)
    unit = numpy_to_unit(image)
    if delta_mired == NEUTRAL["temperature"]:
        return unit
    return _encode_clipped(colour.srgb_to_linear(unit) @ colour.temperature_matrix(delta_mired).T)


def exposure_reference(image: np.ndarray, ev: float) -> np.ndarray:
    """Exposure change of ``ev`` stops of one H x W x 3 sRGB image, float64 in [0, 1]."""
    check_parameter("exposure", ev)
    unit = numpy_to_unit(image)
    if ev == NEUTRAL["exposure"]:
        return unit
    return _encode_clipped(colour.srgb_to_linear(unit) * 2.0**ev)


def contrast_reference(image: np.ndarray, c: float) -> np.ndarray:
    """L* stretched by ``c`` around the image's mean L*, float64 in [0, 1]."""
    check_parameter("contrast", c)
    unit = numpy_to_unit(image)
    if c == NEUTRAL["contrast"]:
        return unit
    lab = colour.srgb_to_lab(unit)
    mu = lab[..., 0].mean()
    lab[..., 0] = mu + c * (lab[..., 0] - mu)
    return np.clip(colour.lab_to_srgb(lab), 0.0, 1.0)


def saturation_reference(image: np.ndarray, s: float) -> np.ndarray:
    """a*, b* scaled by ``s``, float64 in [0, 1]."""
    check_parameter("saturation", s)
    unit = numpy_to_unit(image)
    if s == NEUTRAL["saturation"]:
        return unit
    lab = colour.srgb_to_lab(unit)
    lab[..., 1:] *= s
    return np.clip(colour.lab_to_srgb(lab), 0.0, 1.0)


def apply_reference(
    image: np.ndarray,
    exposure: float = 0.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    temperature: float = 0.0,
) -> np.ndarray:
    """The four operators composed in the fixed order temperature -> exposure -> contrast -> saturation."""
    image = temperature_reference(image, temperature)
    image = exposure_reference(image, exposure)
    image = contrast_reference(image, contrast)
    return saturation_reference(image, saturation)



def _temperature_exposure(tile: torch.Tensor, matrix: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    # raw tile [B, 3, T] -> clipped linear RGB after temperature and exposure, folded as in the kernel
    if tile.dtype == torch.uint8:
        linear = colour_torch.uint8_linear_table(matrix.dtype, matrix.device).take(tile.long())
    else:
        linear = colour_torch.srgb_to_linear(tile.to(matrix.dtype))
    return torch.minimum(torch.matmul(matrix, linear).clamp_min_(0.0), upper[:, None, None])


def _tone(linear: torch.Tensor, mu_l, contrast, saturation, apply_contrast: bool, apply_saturation: bool):
    # contrast then saturation of clipped linear RGB [B, 3, T] -> clipped linear RGB
    if apply_contrast:
        lab = colour_torch.linear_to_lab(linear)
        lab[:, 0] = mu_l[:, None] + contrast[:, None] * (lab[:, 0] - mu_l[:, None])
        linear = colour_torch.lab_to_linear(lab).clamp_(0.0, 1.0)
    if apply_saturation:
        lab = colour_torch.linear_to_lab(linear)
        lab[:, 1:] *= saturation[:, None, None]
        linear = colour_torch.lab_to_linear(lab).clamp_(0.0, 1.0)
    return linear


def retouch_torch(
    images: torch.Tensor,
    matrix: torch.Tensor,
    upper: torch.Tensor,
    contrast: torch.Tensor,
    saturation: torch.Tensor,
    apply_contrast: bool = True,
    apply_saturation: bool = True,
    tile_pixels: int | None = None,
) -> torch.Tensor:
    """Torch path of the chain on validated images [B, 3, H, W] with per-image parameters (see retouch_chain).

    Tile by tile over the flattened pixels, like the kernel: a first pass for the mean L* (only when
    apply_contrast: photometric.block_stats_torch with the temperature+exposure pre-transform), a second for the
    chain. Float64 inputs compute in float64, everything else in float32.
    """
    dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    matrix, upper, contrast, saturation = (t.to(dtype) for t in (matrix, upper, contrast, saturation))
    batch = images.shape[0]
    pixels = pixel_view(images)  # [B, 3, P]
    num_pixels = pixels.shape[-1]
    tile_pixels = tile_pixels or photometric.default_tile_pixels(images)
    per_tile = max(1, tile_pixels // batch)
    tiles = [slice(start, start + per_tile) for start in range(0, num_pixels, per_tile)]

    mu_l = torch.zeros(batch, dtype=dtype, device=images.device)
    if apply_contrast:
        stats = photometric.block_stats_torch(images, tile_pixels, linear_matrix=matrix, upper=upper)
        mu_l = photometric.mean_lightness(stats).to(dtype)

    layout = torch.channels_last if is_channels_last(images) else torch.contiguous_format
    out = torch.empty_like(images, memory_format=layout)
    out_pixels = pixel_view(out)  # a view: written in place
    for tile in tiles:
        linear = _temperature_exposure(pixels[:, :, tile], matrix, upper)
        linear = _tone(linear, mu_l, contrast, saturation, apply_contrast, apply_saturation)
        out_pixels[:, :, tile] = from_unit_float(colour_torch.linear_to_srgb(linear), images.dtype)
    return out


def apply(
    images: torch.Tensor,
    exposure: Param = 0.0,
    contrast: Param = 1.0,
    saturation: Param = 1.0,
    temperature: Param = 0.0,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """Retouch sRGB images: temperature -> exposure -> contrast -> saturation (SPEC.md §3).

    images: (B, 3, H, W) or (3, H, W), uint8 or float16/bfloat16/float32 in [0, 1], any memory format/device.
    Parameters: Python numbers (whole batch) or (B,) tensors (per image). exposure in stops; contrast > 0;
    saturation >= 0; temperature in mired within [colour.TEMPERATURE_DELTA_MIN, colour.TEMPERATURE_DELTA_MAX]
    (positive = warmer). Returns the same dtype and shape (uint8 rounds to nearest); all-neutral parameters
    return ``images`` itself. Runs the fused Triton kernel where ``kernels.dispatch.use_triton`` allows (two
    reads and one write of the image; one read less when contrast is neutral), the tiled torch path elsewhere.

    ``validate=False`` trusts the images and tensor parameters (checked once by the caller, or valid by
    construction like the executor's): no host sync, tensor parameters stay on their device and their steps
    always run (a neutral value then changes nothing beyond rounding). Python numbers are checked either way.
    """
    batch, unbatched = check_batch(images, check_values=validate)
    kernel = dispatch.use_triton(batch, op="retouch_chain")
    dtype = torch.float32 if kernel else torch.float64  # the kernels' parameters are float32
    params, neutral = chain_parameters(batch, exposure, contrast, saturation, temperature, validate, dtype)
    if all(neutral.values()):
        return images
    apply_contrast, apply_saturation = not neutral["contrast"], not neutral["saturation"]

    if kernel:
        from spc_fast.kernels.photometric_finalize import photometric_finalize
        from spc_fast.kernels.retouch_chain import retouch_chain

        if apply_contrast:
            from spc_fast.kernels.photometric_stats import photometric_stats

            stats = photometric_stats(batch, linear_matrix=params["matrix"], upper=params["upper"])
            mu_l = photometric_finalize(stats, float(photometric.NEUTRAL_WHITE_CCT))[:, 0]  # mean L*: one launch
        else:
            mu_l = torch.zeros_like(params["upper"], dtype=torch.float32)
        matrix, upper, contrast, saturation = (
            params[k].float() for k in ("matrix", "upper", "contrast", "saturation")
        )
        out = retouch_chain(
            batch, matrix, upper, mu_l, contrast, saturation, apply_contrast, apply_saturation
        )
    else:
        out = retouch_torch(batch, **params, apply_contrast=apply_contrast, apply_saturation=apply_saturation)
    return out[0] if unbatched else out
