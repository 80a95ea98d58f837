"""Rule-based retouch operators (SPEC.md §3): temperature -> exposure -> contrast -> saturation.

Every operator maps an sRGB image in [0, 1] to an sRGB image in [0, 1] and ends with a clip:
- ``temperature(delta_mired)``: von Kries adaptation in Bradford cone space between daylight-locus whites
  (``colour.temperature_matrix``); positive = warmer = lower measured CCT.
- ``exposure(ev)``: linear RGB x 2^ev.
- ``contrast(c)``: L* -> mu + c (L* - mu), mu the mean L* of the image entering the step; a*, b* unchanged.
- ``saturation(s)``: a*, b* x s; L* unchanged.

``*_reference`` are the float64 numpy truth, one per operator, plus ``apply_reference`` composing them.
``apply`` is the batched torch entry point: the fused Triton kernel (``spc_fast.kernels.retouch_chain``, with
the mean L* from ``spc_fast.kernels.photometric_stats``) where ``kernels.dispatch.use_triton`` allows it, the
cache-tiled torch path ``retouch_torch`` elsewhere.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from spc_fast import colour, colour_torch, photometric
from spc_fast.images import check_batch, from_unit_float, is_channels_last, numpy_to_unit, pixel_view

NEUTRAL = {"exposure": 0.0, "contrast": 1.0, "saturation": 1.0, "temperature": 0.0}

Param = float | torch.Tensor


def _encode_clipped(linear: np.ndarray) -> np.ndarray:
    return np.clip(colour.linear_to_srgb(linear), 0.0, 1.0)


def temperature_reference(image: np.ndarray, delta_mired: float) -> np.ndarray:
    """Temperature shift of one H x W x 3 sRGB image (positive delta_mired = warmer), float64 in [0, 1]."""
    linear = colour.srgb_to_linear(numpy_to_unit(image))
    return _encode_clipped(linear @ colour.temperature_matrix(delta_mired).T)


def exposure_reference(image: np.ndarray, ev: float) -> np.ndarray:
    """Exposure change of ``ev`` stops of one H x W x 3 sRGB image, float64 in [0, 1]."""
    _check_value("exposure", ev)
    return _encode_clipped(colour.srgb_to_linear(numpy_to_unit(image)) * 2.0**ev)


def contrast_reference(image: np.ndarray, c: float) -> np.ndarray:
    """L* stretched by ``c`` around the image's mean L*, float64 in [0, 1]."""
    _check_value("contrast", c)
    lab = colour.srgb_to_lab(numpy_to_unit(image))
    mu = lab[..., 0].mean()
    lab[..., 0] = mu + c * (lab[..., 0] - mu)
    return np.clip(colour.lab_to_srgb(lab), 0.0, 1.0)


def saturation_reference(image: np.ndarray, s: float) -> np.ndarray:
    """a*, b* scaled by ``s``, float64 in [0, 1]."""
    _check_value("saturation", s)
    lab = colour.srgb_to_lab(numpy_to_unit(image))
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


def _check_value(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}; pass a real number (neutral: {NEUTRAL[name]})")
    if name == "contrast" and value <= 0.0:
        raise ValueError(
            f"contrast must be > 0, got {value}; 1 is neutral, values below 1 flatten, above 1 stretch"
        )
    if name == "saturation" and value < 0.0:
        raise ValueError(f"saturation must be >= 0, got {value}; 1 is neutral, 0 gives a grey image")
    if name == "temperature":
        colour.temperature_matrix(value)


def _per_image(name: str, value: Param, batch: int) -> np.ndarray:
    # a scalar or (B,) parameter -> validated float64 array (B,) on the host (one sync for a device tensor)
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != batch):
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but the batch holds {batch} image(s); "
                f"pass a Python number or a tensor of shape ({batch},)"
            )
        values = np.broadcast_to(value.detach().double().cpu().numpy(), (batch,)).copy()
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        values = np.full(batch, float(value))
    else:
        raise ValueError(f"{name} must be a Python number or a ({batch},) tensor, got {type(value).__name__}")
    for v in np.unique(values):
        _check_value(name, float(v))
    return values


def _chain_parameters(
    batch: torch.Tensor, exposure: Param, contrast: Param, saturation: Param, temperature: Param
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    # Per-image float64 tensors on the images' device: matrix [B, 3, 3] = 2^ev * temperature matrix,
    # upper [B] = min(2^ev, 1), contrast [B], saturation [B]; and which steps are neutral for the whole batch.
    n = batch.shape[0]
    ev = _per_image("exposure", exposure, n)
    deltas = _per_image("temperature", temperature, n)
    contrast_values = _per_image("contrast", contrast, n)
    saturation_values = _per_image("saturation", saturation, n)
    unique, index = np.unique(deltas, return_inverse=True)
    temp = np.stack([colour.temperature_matrix(float(d)) for d in unique])[index.reshape(-1)]
    gain = 2.0**ev
    values = {
        "matrix": gain[:, None, None] * temp,
        "upper": np.minimum(gain, 1.0),
        "contrast": contrast_values,
        "saturation": saturation_values,
    }
    tensors = {k: torch.as_tensor(v, dtype=torch.float64, device=batch.device) for k, v in values.items()}
    neutral = {
        "linear": bool((ev == 0.0).all() and (deltas == 0.0).all()),
        "contrast": bool((contrast_values == 1.0).all()),
        "saturation": bool((saturation_values == 1.0).all()),
    }
    return tensors, neutral


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
) -> torch.Tensor:
    """Retouch sRGB images: temperature -> exposure -> contrast -> saturation (SPEC.md §3).

    images: (B, 3, H, W) or (3, H, W), uint8 or float16/bfloat16/float32 in [0, 1], any memory format/device.
    Parameters: Python numbers (whole batch) or (B,) tensors (per image). exposure in stops; contrast > 0;
    saturation >= 0; temperature in mired within [colour.TEMPERATURE_DELTA_MIN, colour.TEMPERATURE_DELTA_MAX]
    (positive = warmer). Returns the same dtype and shape (uint8 rounds to nearest); all-neutral parameters
    return ``images`` itself. Runs the fused Triton kernel where ``kernels.dispatch.use_triton`` allows (two
    reads and one write of the image; one read less when contrast is neutral), the tiled torch path elsewhere.
    """
    from spc_fast.kernels import dispatch

    batch, unbatched = check_batch(images)
    params, neutral = _chain_parameters(batch, exposure, contrast, saturation, temperature)
    if all(neutral.values()):
        return images
    apply_contrast, apply_saturation = not neutral["contrast"], not neutral["saturation"]

    if dispatch.use_triton(batch):
        from spc_fast.kernels.retouch_chain import retouch_chain

        if apply_contrast:
            from spc_fast.kernels.photometric_stats import photometric_stats

            stats = photometric_stats(batch, linear_matrix=params["matrix"].float(), upper=params["upper"].float())
            mu_l = photometric.mean_lightness(stats).float()
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
