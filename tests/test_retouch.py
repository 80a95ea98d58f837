"""Retouch operators: numpy references, the torch path against them, invariants, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from retouch_cases import (
    DTYPES,
    as_arguments,
    assert_matches_reference,
    batches,
    random_images,
    reference,
)

from spc_fast import colour, colour_torch, retouch
from spc_fast.kernels import dispatch
from spc_fast.photometric import attributes_reference

SINGLE_OPS = {
    "exposure": (retouch.exposure_reference, st.floats(-3.0, 3.0)),
    "contrast": (retouch.contrast_reference, st.floats(0.2, 3.0)),
    "saturation": (retouch.saturation_reference, st.floats(0.0, 3.0)),
    "temperature": (retouch.temperature_reference, st.floats(-113.0, 346.0)),
}


def torch_apply(images: torch.Tensor, **params) -> torch.Tensor:
    with dispatch.torch_fallback():
        return retouch.apply(images, **params)


@pytest.fixture(scope="module")
def small_photos(photos):
    """Every bundled photo downsampled to about 64 x 64 (strided), uint8 H x W x 3."""
    return {
        name: np.ascontiguousarray(p[:: p.shape[0] // 64, :: p.shape[1] // 64]) for name, p in photos.items()
    }


def test_public_names():
    for name in (
        "apply",
        "apply_reference",
        "exposure_reference",
        "contrast_reference",
        "saturation_reference",
        "temperature_reference",
        "retouch_torch",
    ):
        assert callable(getattr(retouch, name))


def test_reference_is_the_composition():
    image = np.random.default_rng(0).random((5, 7, 3))
    step = retouch.temperature_reference(image, 40.0)
    step = retouch.exposure_reference(step, -0.5)
    step = retouch.contrast_reference(step, 1.3)
    step = retouch.saturation_reference(step, 0.6)
    composed = retouch.apply_reference(image, exposure=-0.5, contrast=1.3, saturation=0.6, temperature=40.0)
    np.testing.assert_array_equal(composed, step)


@pytest.mark.parametrize("op", ["exposure", "contrast", "saturation", "temperature"])
def test_reference_neutral_is_identity(op):
    image = np.random.default_rng(1).random((6, 5, 3))
    fn = SINGLE_OPS[op][0]
    np.testing.assert_array_equal(fn(image, retouch.NEUTRAL[op]), image)  # bit for bit


@settings(max_examples=12)
@given(case=batches())
def test_torch_path_matches_reference(case):
    images, params, per_image = case
    out = torch_apply(images, **as_arguments(params, per_image))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert_matches_reference(out, reference(images, params), images.dtype)


@settings(max_examples=6)
@given(
    op=st.sampled_from(sorted(SINGLE_OPS)),
    data=st.data(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 1000),
)
def test_torch_path_single_operator(op, data, dtype, seed):
    fn, values = SINGLE_OPS[op]
    value = data.draw(values)
    images = random_images(2, 7, 5, dtype, seed)
    out = torch_apply(images, **{op: value})
    truth = reference(images, {op: np.full(2, value)}, lambda im, **p: fn(im, p[op]))
    assert_matches_reference(out, truth, dtype)


def test_torch_path_float64_is_exact():
    images = random_images(2, 5, 3, torch.float64, 3)
    params = {
        "exposure": np.array([0.4, -1.0]),
        "contrast": np.array([1.4, 0.5]),
        "saturation": np.array([1.6, 0.2]),
        "temperature": np.array([30.0, -60.0]),
    }
    out = torch_apply(images, **as_arguments(params, per_image=True))
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), reference(images, params), atol=1e-10)


def test_unbatched_and_tiled():
    image = random_images(1, 31, 29, torch.float32, 4)
    params = dict(exposure=0.3, contrast=1.2, saturation=1.1, temperature=15.0)
    whole = torch_apply(image, **params)
    assert torch.equal(torch_apply(image[0], **params), whole[0])
    b = retouch.chain_parameters(image, **params)[0]
    tiled = retouch.retouch_torch(image, **b, tile_pixels=97)  # ragged last tile
    torch.testing.assert_close(tiled, whole, atol=2e-5, rtol=0)  # only summation order differs


@pytest.mark.parametrize("layout", ["channels_last", "transposed", "strided"])
def test_torch_path_layouts(layout):
    images = random_images(2, 6, 7, torch.float32, 11)
    if layout == "channels_last":
        x = images.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = images.transpose(2, 3).contiguous().transpose(2, 3)  # dense, but neither NCHW nor channels_last
    else:
        x = torch.stack([images, images], dim=-1)[..., 0]  # every other element
    params = dict(exposure=0.3, contrast=1.2, saturation=0.8, temperature=-15.0)
    out = torch_apply(x, **params)
    torch.testing.assert_close(out, torch_apply(x.contiguous(), **params), atol=1e-6, rtol=0)


def test_neutral_returns_input():
    images = random_images(2, 5, 7, torch.uint8, 5)
    assert retouch.apply(images) is images
    neutral = {k: torch.full((2,), v) for k, v in retouch.NEUTRAL.items()}
    assert retouch.apply(images, **neutral) is images


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_neutral_chain_leaves_image_unchanged(dtype):
    # the full chain (every step switched on) at neutral values: Lab round trips only
    images = random_images(2, 13, 11, dtype, 6)
    identity = {k: torch.full((2,), v, dtype=torch.float64) for k, v in retouch.NEUTRAL.items()}
    params = {
        "matrix": torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
        "upper": torch.ones(2, dtype=torch.float64),
        "contrast": identity["contrast"],
        "saturation": identity["saturation"],
    }
    out = retouch.retouch_torch(images, **params)
    diff = (out.double() - images.double()).abs().max()
    assert diff <= (1 if dtype == torch.uint8 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lab_round_trip(dtype):
    linear = torch.rand(2, 3, 17, 5, generator=torch.Generator().manual_seed(7), dtype=dtype)
    back = colour_torch.lab_to_linear(colour_torch.linear_to_lab(linear))
    torch.testing.assert_close(back, linear, atol=1e-10 if dtype == torch.float64 else 2e-6, rtol=0)


def _attributes(image: torch.Tensor) -> np.ndarray:
    return attributes_reference(image.permute(1, 2, 0).numpy())


def test_exposure_raises_measured_exposure_monotonically(small_photos):
    for photo in small_photos.values():
        image = torch.from_numpy(photo).permute(2, 0, 1)
        measured = [_attributes(torch_apply(image, exposure=ev))[0] for ev in (-1.0, -0.3, 0.3, 1.0)]
        assert np.all(np.diff(measured) > 0), measured


def test_warmer_lowers_measured_cct_monotonically(small_photos):
    for photo in small_photos.values():
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        measured = [
            _attributes(torch_apply(image, temperature=d))[3] for d in (-100.0, -25.0, 10.0, 50.0, 300.0)
        ]
        assert np.all(np.diff(measured) < 0), measured


def test_saturation_zero_removes_chroma(small_photos):
    for photo in small_photos.values():
        image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        assert _attributes(torch_apply(image, saturation=0.0))[2] < 0.05


def test_contrast_keeps_mean_lightness_in_gamut():
    # mid-grey-ish colours with a gentle stretch never leave the gamut, so no clip moves the mean
    image = 0.35 + 0.3 * torch.rand(3, 17, 13, generator=torch.Generator().manual_seed(8))
    before = _attributes(image)[0]
    for c in (0.5, 0.8, 1.25):
        out = torch_apply(image, contrast=c)
        after = _attributes(out)
        assert abs(after[0] - before) < 1e-3
        assert out.min() > 0 and out.max() < 1


def test_contrast_scales_lightness_spread(small_photos):
    image = torch.from_numpy(small_photos["coffee"]).permute(2, 0, 1).float() / 255
    spread = [_attributes(torch_apply(image, contrast=c))[1] for c in (0.5, 1.0, 1.5)]
    assert spread[0] < spread[1] < spread[2]


BAD_PARAMS = [
    ({"contrast": 0.0}, "contrast must be > 0"),
    ({"contrast": -1.0}, "contrast must be > 0"),
    ({"saturation": -0.1}, "saturation must be >= 0"),
    ({"exposure": float("nan")}, "exposure must be finite"),
    ({"contrast": float("inf")}, "contrast must be finite"),
    ({"temperature": 400.0}, "out of range"),
    ({"temperature": -200.0}, "out of range"),
    ({"exposure": torch.zeros(3)}, "batch holds 2"),
    ({"saturation": torch.ones(2, 1)}, "batch holds 2"),
    ({"contrast": torch.tensor([1.0, 0.0])}, "contrast must be > 0"),
    ({"temperature": torch.tensor([0.0, float("nan")])}, "temperature must be finite"),
    ({"exposure": "bright"}, "Python number"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_bad_parameters(params, message):
    with pytest.raises(ValueError, match=message):
        retouch.apply(random_images(2, 3, 3, torch.float32, 9), **params)


def test_bad_reference_parameters():
    image = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match="contrast must be > 0"):
        retouch.contrast_reference(image, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        retouch.temperature_reference(image, colour.TEMPERATURE_DELTA_MAX + 1.0)


def test_bad_images():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        retouch.apply(torch.full((3, 2, 2), 1.5), exposure=0.1)
    with pytest.raises(ValueError, match="RGB"):
        retouch.apply(torch.zeros(1, 4, 2, 2), exposure=0.1)


def test_temperature_domain_edges_are_allowed():
    colour.temperature_matrix(colour.TEMPERATURE_DELTA_MIN)
    colour.temperature_matrix(colour.TEMPERATURE_DELTA_MAX)
    out = torch_apply(random_images(1, 2, 2, torch.float32, 10), temperature=colour.TEMPERATURE_DELTA_MAX)
    assert out.isfinite().all()


def test_temperature_matrices_match_the_reference():
    # both daylight-locus branches (target above and below 7000 K, at about -10.9 mired) and the domain's edges
    deltas = [colour.TEMPERATURE_DELTA_MIN, -60.0, -10.0, -11.5, 0.0, 25.0, 150.0, colour.TEMPERATURE_DELTA_MAX]
    matrices = retouch.temperature_matrices(torch.tensor(deltas, dtype=torch.float64))
    expected = np.stack([colour.temperature_matrix(d) for d in deltas])
    np.testing.assert_allclose(matrices.numpy(), expected, rtol=0, atol=1e-13)


def test_trusted_tensor_parameters_are_never_read_on_the_host(monkeypatch):
    images = random_images(2, 9, 7, torch.float32, 12)
    params = {
        "exposure": torch.tensor([0.4, -0.3], dtype=torch.float64),
        "contrast": torch.tensor([1.2, 0.8]),
        "saturation": torch.tensor([1.3, 1.1]),
        "temperature": torch.tensor([25.0, -40.0]),
    }
    expected = torch_apply(images, **params)

    def host_read(*args, **kwargs):
        raise AssertionError("the trusted path read a tensor on the host")

    for name in ("cpu", "numpy", "tolist", "item", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    with dispatch.torch_fallback():
        trusted = retouch.apply(images, **params, validate=False)
    monkeypatch.undo()
    assert torch.equal(trusted, expected)


def test_trusted_neutral_tensors_run_their_steps():
    images = random_images(2, 5, 7, torch.uint8, 13)
    neutral = {k: torch.full((2,), v) for k, v in retouch.NEUTRAL.items()}
    out = torch_apply(images, **neutral, validate=False)
    assert out is not images and (out.int() - images.int()).abs().max() <= 1
    with pytest.raises(ValueError, match="contrast must be > 0"):  # numbers are checked either way
        torch_apply(images, contrast=0.0, validate=False)
