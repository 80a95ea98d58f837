"""The retouch chain's parameters (SPEC.md §3): their neutral values and ranges, the check that refuses a value
outside them (naming the range and why it ends there, ``_RANGE_NOTES``), and the per-image tensors the torch path
and the fused kernel take: the temperature (Bradford) and exposure matrix, the exposure clamp, contrast and
saturation."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch

from spc_fast import colour

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
) -> tuple[torch.Tensor | float, bool]:
    # A number (checked, returned as a float) or a (B,) tensor (-> float64 (B,) on ``device``), and whether it is
    # neutral for every image. A tensor is checked through one host copy when ``validate``, else trusted: it never
    # leaves its device, and its step runs (whether it is neutral is not looked at).
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
        return float(value), float(value) == NEUTRAL[name]
    raise ValueError(f"{name} must be a Python number or a ({n},) tensor, got {type(value).__name__}")


def chain_parameters(
    batch: torch.Tensor,
    exposure: Param,
    contrast: Param,
    saturation: Param,
    temperature: Param,
    validate: bool = True,
    dtype: torch.dtype = torch.float64,
) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    # Per-image tensors (worked out in float64, given in ``dtype``) on the images' device: matrix [B, 3, 3] =
    # 2^ev * temperature matrix, upper [B] = min(2^ev, 1), contrast [B], saturation [B]; and which steps are
    # neutral for the whole batch.
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
        gain = 2.0**ev
        row = np.concatenate([gain * colour.temperature_matrix(deltas).ravel(),
                              [min(gain, 1.0), contrast_values, saturation_values]])
        packed = torch.from_numpy(row)[None].expand(n, -1)
    else:
        ev, deltas, contrast_values, saturation_values = (
            v if isinstance(v, torch.Tensor) else torch.full((n,), v, dtype=torch.float64, device=device)
            for v in (ev, deltas, contrast_values, saturation_values)
        )
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
