"""Shared cases of the retouch tests: random batches, per-image parameters, the float64 truth, tolerances."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st

from spc_fast import colour, retouch

# Max absolute error against the float64 reference fed the same (quantised) input, in [0, 1] units: float32
# compute error (seen: 4e-6), plus for fp16 / bf16 half an output ulp at 1 (2.4e-4 / 2.0e-3). uint8 is judged
# in LSBs of the rounded reference instead.
ATOL = {torch.float32: 2e-5, torch.float16: 3e-4, torch.bfloat16: 2.5e-3}
UINT8_MAX_LSB = 1
# At the ends of retouch.RANGES contrast and saturation multiply the float32 error of L*, a*, b* by up to 100, and
# near black (-20 EV) a*, b* come from the cancellation f(X) - f(Y) of two values near 4/29: measured up to 1.0e-4
# (kernel) and 6.2e-5 (torch path) on random float32 images; 2e-4 is a twentieth of an 8-bit step.
EDGE_ATOL = {**ATOL, torch.float32: 2e-4}

DTYPES = (torch.uint8, torch.float32, torch.bfloat16, torch.float16)
SIDES = (1, 2, 3, 5, 7, 13, 17)
PARAM_NAMES = ("exposure", "contrast", "saturation", "temperature")

exposures = st.one_of(st.just(0.0), st.floats(-3.0, 3.0))
contrasts = st.one_of(st.just(1.0), st.floats(0.2, 3.0))
saturations = st.one_of(st.just(1.0), st.just(0.0), st.floats(0.0, 3.0))
temperatures = st.one_of(st.just(0.0), st.floats(-100.0, 300.0))
STRATEGIES = dict(zip(PARAM_NAMES, (exposures, contrasts, saturations, temperatures), strict=True))

# Each parameter at the ends of its range (retouch.RANGES), alone and all together.
_LOW, _HIGH = ({name: retouch.RANGES[name][end] for name in PARAM_NAMES} for end in (0, 1))
RANGE_EDGES = [
    {"exposure": _HIGH["exposure"]},
    {"exposure": _LOW["exposure"]},
    {"contrast": _HIGH["contrast"]},
    {"contrast": 1e-6},
    {"saturation": _HIGH["saturation"]},
    {"saturation": 0.0},
    dict(_HIGH),
    {**_LOW, "contrast": _HIGH["contrast"], "saturation": _HIGH["saturation"]},
]


@st.composite
def batches(draw, dtypes=DTYPES, max_batch: int = 3):
    """(images [B, 3, H, W], per-image params {name: float64 array (B,)}, per_image flag)."""
    batch = draw(st.integers(1, max_batch))
    height, width = draw(st.sampled_from(SIDES)), draw(st.sampled_from(SIDES))
    dtype = draw(st.sampled_from(dtypes))
    channels_last = draw(st.booleans())
    per_image = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    images = random_images(batch, height, width, dtype, seed)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    params = {}
    for name in PARAM_NAMES:
        values = [draw(STRATEGIES[name]) for _ in range(batch if per_image else 1)]
        params[name] = np.resize(np.array(values, dtype=np.float64), batch)
    return images, params, per_image


def random_images(batch: int, height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (batch, 3, height, width), generator=generator, dtype=torch.uint8)
    return torch.rand(batch, 3, height, width, generator=generator).to(dtype)


def as_arguments(params: dict[str, np.ndarray], per_image: bool) -> dict:
    """The parameters as ``retouch.apply`` takes them: (B,) tensors, or Python floats for a shared value."""
    if per_image:
        return {k: torch.as_tensor(v) for k, v in params.items()}
    return {k: float(v[0]) for k, v in params.items()}


def reference_input(images: torch.Tensor) -> list[np.ndarray]:
    """Each image as the reference sees it: H x W x 3 uint8, or float64 holding the exact quantised values."""
    x = images if images.dtype == torch.uint8 else images.double()
    return [image.permute(1, 2, 0).numpy() for image in x]


def reference(images: torch.Tensor, params: dict[str, np.ndarray], op=retouch.apply_reference) -> np.ndarray:
    """Float64 truth [B, H, W, 3] of ``op`` applied per image with its own parameters."""
    return np.stack(
        [
            op(image, **{k: float(v[i]) for k, v in params.items()})
            for i, image in enumerate(reference_input(images))
        ]
    )


def mean_lightness_after_linear_steps(images: torch.Tensor, params: dict[str, np.ndarray]) -> np.ndarray:
    """Float64 mean L* [B] of each image after temperature and exposure, the contrast pivot."""
    linear = {k: params[k] for k in ("exposure", "temperature")}
    after = reference(
        images,
        linear,
        lambda im, exposure, temperature: retouch.exposure_reference(
            retouch.temperature_reference(im, temperature), exposure
        ),
    )
    return colour.srgb_to_lab(after)[..., 0].mean(axis=(1, 2))


def full_parameters(params: dict[str, float], batch: int) -> dict[str, np.ndarray]:
    """Per-image arrays of every parameter: the given values, neutral for the others."""
    return {name: np.full(batch, float(params.get(name, retouch.NEUTRAL[name]))) for name in PARAM_NAMES}


def assert_matches_reference(
    out: torch.Tensor, truth: np.ndarray, dtype: torch.dtype, atol: dict[torch.dtype, float] = ATOL
) -> None:
    got = out.permute(0, 2, 3, 1).double().numpy()
    assert np.isfinite(got).all(), "non-finite output"
    if dtype == torch.uint8:
        lsb = np.abs(got - np.round(truth * 255.0)).max()
        assert lsb <= UINT8_MAX_LSB, f"uint8 off by {lsb} LSB"
        return
    error = np.abs(got - truth).max()
    assert error <= atol[dtype], f"{dtype}: max error {error:.3g} > {atol[dtype]:.3g}"
