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

import functools
import math
import numbers

import numpy as np
import torch

from spc_fast import colour, colour_torch, photometric
from spc_fast.images import check_batch, from_unit_float, is_channels_last, numpy_to_unit, pixel_view
from spc_fast.kernels import dispatch

NEUTRAL = {"exposure": 0.0, "contrast": 1.0, "saturation": 1.0, "temperature": 0.0}
RANGES = {
    "exposure": (-20.0, 20.0),
    "contrast": (0.0, 100.0),  # 0 itself excluded
    "saturation": (0.0, 100.0),
    "temperature": (colour.TEMPERATURE_DELTA_MIN, colour.TEMPERATURE_DELTA_MAX),
}
_RANGE_NOTES = {  # unit, and why the range ends there
    "exposure": (" EV", "20 stops span every level of a 16-bit photo, whose darkest step is 2^-19.7 in linear "
                 "light: beyond them it is all white or all black"),
    "contrast": ("", "at 100 one L* unit of difference, about one just-noticeable step, already spans all of L*"),
    "saturation": ("", "at 100 one C* unit of chroma already reaches past every sRGB colour, whose C* is at most 134"),
    "temperature": (" mired", "the target white stays between 25000 K and 2000 K, where the daylight locus holds"),
}

Param = float | torch.Tensor


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


def check_parameter(name: str, value: float) -> None:
    """Raise ValueError, naming the range and why it ends there, unless ``value`` is a valid ``name`` parameter."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}; pass a real number (neutral: {NEUTRAL[name]})")
    if name == "contrast" and value <= 0.0:
        raise ValueError(
            f"contrast must be > 0, got {value}; 1 is neutral, values below 1 flatten, above 1 stretch"
        )
    if name == "saturation" and value < 0.0:
        raise ValueError(f"saturation must be >= 0, got {value}; 1 is neutral, 0 gives a grey image")
    low, high = RANGES[name]
    if not low <= value <= high:
        unit, why = _RANGE_NOTES[name]
        opening = "(" if name == "contrast" else "["
        raise ValueError(
            f"{name}={value:g}{unit} is out of range; use a value in {opening}{low:g}, {high:g}]{unit} "
            f"({why}; neutral: {NEUTRAL[name]:g})"
        )


@functools.cache
def _bradford_constants(device: torch.device) -> tuple[torch.Tensor, ...]:
    # colour.temperature_matrix(d) = I + from_cones @ diag(target(d) / source - 1) @ to_cones: the factors that
    # do not depend on d, float64, made once per device
    source = colour.BRADFORD @ colour.xy_to_white(*colour.daylight_xy(colour.NEUTRAL_CCT))
    to_cones = colour.BRADFORD @ colour.RGB_TO_XYZ
    from_cones = colour.XYZ_TO_RGB @ np.linalg.inv(colour.BRADFORD)
    arrays = (colour.BRADFORD, source, to_cones, from_cones)
    return tuple(torch.as_tensor(a, dtype=torch.float64, device=device) for a in arrays)


def temperature_matrices(delta_mired: torch.Tensor) -> torch.Tensor:
    """``colour.temperature_matrix`` of every shift in ``delta_mired`` [B] (float64), computed on its device:
    [B, 3, 3]. No range check: the shifts must lie in [colour.TEMPERATURE_DELTA_MIN, TEMPERATURE_DELTA_MAX]."""
    bradford, source, to_cones, from_cones = _bradford_constants(delta_mired.device)
    delta = delta_mired.double()
    target_cct = colour.NEUTRAL_CCT / (1.0 + delta * (colour.NEUTRAL_CCT / 1e6))
    s = 1e3 / target_cct
    branches = (colour.DAYLIGHT_X_LOW, colour.DAYLIGHT_X_HIGH)
    low, high = (c0 + s * (c1 + s * (c2 + s * c3)) for c0, c1, c2, c3 in branches)
    x = torch.where(target_cct <= 7000.0, low, high)
    y = colour.DAYLIGHT_Y[0] + colour.DAYLIGHT_Y[1] * x + colour.DAYLIGHT_Y[2] * x * x
    white = torch.stack([x / y, torch.ones_like(x), (1.0 - x - y) / y], dim=-1)  # [B, 3], Y = 1
    # target / source cone response minus 1, exactly 0 for no shift (this and numpy's daylight formula may differ
    # in the last bit): then the matrix below is exactly the identity
    change = torch.where(delta[:, None] == 0.0, 0.0, (white @ bradford.T) / source - 1.0)  # [B, 3]
    identity = torch.eye(3, dtype=torch.float64, device=delta.device)
    return identity + from_cones @ (change[:, :, None] * to_cones)


def _per_image(
    name: str, value: Param, batch: torch.Tensor, validate: bool, device: torch.device
) -> tuple[torch.Tensor, bool]:
    # A scalar or (B,) parameter -> float64 (B,) on ``device``, and whether it is neutral for every image.
    # Numbers are checked on the host (free). A tensor is checked through one host copy when ``validate``, else
    # trusted: it never leaves its device, and its step runs (whether it is neutral is not looked at).
    n = batch.shape[0]
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or (value.dim() == 1 and value.shape[0] != n):
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but the batch holds {n} image(s); "
                f"pass a Python number or a tensor of shape ({n},)"
            )
        values = value.detach().to(device=device, dtype=torch.float64).expand(n).contiguous()
        if not validate:
            return values, False
        host = value.detach().double().cpu()
        for v in host.unique().tolist():
            check_parameter(name, v)
        return values, bool((host == NEUTRAL[name]).all())
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        check_parameter(name, float(value))
        values = torch.full((n,), float(value), dtype=torch.float64, device=device)
        return values, float(value) == NEUTRAL[name]
    raise ValueError(f"{name} must be a Python number or a ({n},) tensor, got {type(value).__name__}")


def _chain_parameters(
    batch: torch.Tensor,
    exposure: Param,
    contrast: Param,
    saturation: Param,
    temperature: Param,
    validate: bool = True,
    dtype: torch.dtype = torch.float64,
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    # Per-image tensors (worked out in float64, given in ``dtype``) on the images' device: matrix [B, 3, 3] =
    # 2^ev * temperature matrix,
    # upper [B] = min(2^ev, 1), contrast [B], saturation [B]; and which steps are neutral for the whole batch.
    # Parameters given as numbers or CPU tensors are worked out on the host and moved in one copy: on a GPU the
    # ~60 tiny ops of this would otherwise be as many launches, most of a 12 MP retouch's time.
    params = (exposure, contrast, saturation, temperature)
    on_host = all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in params)
    device = torch.device("cpu") if on_host else batch.device
    ev, neutral_ev = _per_image("exposure", exposure, batch, validate, device)
    deltas, neutral_temperature = _per_image("temperature", temperature, batch, validate, device)
    contrast_values, neutral_contrast = _per_image("contrast", contrast, batch, validate, device)
    saturation_values, neutral_saturation = _per_image("saturation", saturation, batch, validate, device)
    n = batch.shape[0]
    if not any(isinstance(v, torch.Tensor) for v in params):  # one set for the batch: numpy, microseconds
        gain = 2.0 ** float(exposure)
        row = np.concatenate([gain * colour.temperature_matrix(float(temperature)).ravel(),
                              [min(gain, 1.0), float(contrast), float(saturation)]])
        packed = torch.from_numpy(row)[None].expand(n, -1)
    else:
        gain = torch.exp2(ev)
        packed = torch.cat(
            [(gain[:, None, None] * temperature_matrices(deltas)).reshape(n, 9),
             torch.stack([gain.clamp_max(1.0), contrast_values, saturation_values], dim=1)],
            dim=1,
        )  # [B, 12]
    if on_host and batch.device.type == "cuda":  # pinned: the copy queues behind the GPU's work, no host wait
        packed = packed.to(dtype).pin_memory().to(batch.device, non_blocking=True)
    else:
        packed = packed.to(batch.device, dtype)
    tensors = {
        "matrix": packed[:, :9].reshape(n, 3, 3),
        "upper": packed[:, 9],
        "contrast": packed[:, 10],
        "saturation": packed[:, 11],
    }
    neutral = {
        "linear": neutral_ev and neutral_temperature,
        "contrast": neutral_contrast,
        "saturation": neutral_saturation,
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
    params, neutral = _chain_parameters(batch, exposure, contrast, saturation, temperature, validate, dtype)
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
