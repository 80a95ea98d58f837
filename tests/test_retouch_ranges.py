"""Retouch parameters at and beyond the ends of their ranges: refused outside with the range named, saturating to
white, black or the gamut boundary at the ends (torch path against the float64 reference; the kernel in
test_retouch_kernel.py), and a zero temperature shift that is exactly the identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from retouch_cases import (
    EDGE_ATOL,
    RANGE_EDGES,
    assert_matches_reference,
    full_parameters,
    random_images,
    reference,
)

from spc_fast import cli, colour, retouch
from spc_fast.kernels import dispatch

pytestmark = pytest.mark.usefixtures("torch_path")

OUT_OF_RANGE = [
    ({"exposure": 200.0}, r"exposure=200 EV is out of range; use a value in \[-20, 20\] EV"),
    ({"exposure": -20.5}, r"exposure=-20.5 EV is out of range"),
    ({"contrast": 1e15}, r"contrast=1e\+15 is out of range; use a value in \(0, 100\]"),
    ({"contrast": 100.5}, r"contrast=100.5 is out of range"),
    ({"saturation": 1e30}, r"saturation=1e\+30 is out of range; use a value in \[0, 100\]"),
    ({"temperature": 346.3}, r"temperature=346.3 mired is out of range; use a value in \[-113.752, 346.248\] mired"),
    ({"exposure": torch.tensor([0.5, 21.0])}, r"exposure=21 EV is out of range"),
]


@pytest.mark.parametrize(("params", "message"), OUT_OF_RANGE)
def test_values_outside_the_ranges_are_refused(params, message):
    with pytest.raises(ValueError, match=message):
        retouch.apply(random_images(2, 3, 3, torch.float32, 0), **params)


@pytest.mark.parametrize(("params", "message"), OUT_OF_RANGE[:6])
def test_references_refuse_them_too(params, message):
    name, value = next(iter(params.items()))
    with pytest.raises(ValueError, match=message):
        retouch.apply_reference(np.zeros((2, 2, 3)), **{name: value})


def test_ranges_are_what_the_checks_allow():
    image = random_images(1, 4, 4, torch.float32, 1)
    for name, (low, high) in retouch.RANGES.items():
        ends = [high] if name == "contrast" else [low, high]
        for value in ends:
            assert retouch.apply(image, **{name: value}).isfinite().all()
    assert retouch.RANGES["temperature"] == (colour.TEMPERATURE_DELTA_MIN, colour.TEMPERATURE_DELTA_MAX)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.uint8])
@pytest.mark.parametrize("params", RANGE_EDGES, ids=lambda p: ",".join(f"{k}={v:.4g}" for k, v in p.items()))
def test_torch_path_at_the_range_ends_matches_the_reference(params, dtype):
    images = random_images(2, 17, 13, dtype, 2)
    with dispatch.torch_fallback():
        out = retouch.apply(images, **params)
    assert_matches_reference(out, reference(images, full_parameters(params, 2)), dtype, EDGE_ATOL)


def test_extremes_saturate_to_white_black_and_the_gamut():
    images = random_images(1, 16, 16, torch.uint8, 3)
    with dispatch.torch_fallback():
        brightest = retouch.apply(images, exposure=20.0)
        darkest = retouch.apply(images, exposure=-20.0)
        stretched = retouch.apply(images, contrast=100.0)
        saturated = retouch.apply(images, saturation=100.0)
    assert torch.equal(brightest, torch.where(images > 0, 255, 0).to(torch.uint8))  # every lit channel clips
    assert darkest.max() == 0
    # two-tone in lightness: each pixel ends near black or near white (its a*, b* kept, then clipped)
    lightness = stretched.float().mean(1)
    assert ((lightness < 60) | (lightness > 200)).float().mean() > 0.95
    # every coloured pixel lands on the gamut boundary: some channel at 0 or 255
    on_boundary = (saturated.amin(1) == 0) | (saturated.amax(1) == 255)
    assert on_boundary.all()


def test_retouch_command_names_the_range(tmp_path, capsys):
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.fromarray(random_images(1, 8, 8, torch.uint8, 4)[0].permute(1, 2, 0).numpy()).save(source)
    for flag, value, words in [
        ("--exposure", "200", "use a value in [-20, 20] EV"),
        ("--contrast", "1e15", "use a value in (0, 100]"),
        ("--saturation", "1e30", "use a value in [0, 100]"),
    ]:
        code = cli.main(["retouch", str(source), "-o", str(out), flag, value])
        _, err = capsys.readouterr()
        assert code == 1 and err.startswith("spc-fast: error:") and words in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists()


# ---- a zero temperature shift --------------------------------------------------------------------------------


def test_zero_shift_is_exactly_the_identity_matrix():
    assert np.array_equal(colour.temperature_matrix(0.0), np.eye(3))
    assert np.array_equal(colour.temperature_matrix(-0.0), np.eye(3))
    batch = retouch.temperature_matrices(torch.tensor([0.0, 25.0, 0.0], dtype=torch.float64))
    assert torch.equal(batch[[0, 2]], torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    np.testing.assert_allclose(batch[1].numpy(), colour.temperature_matrix(25.0), rtol=0, atol=1e-13)
    # a tiny shift stays tiny: the matrix is built as I + change, not from matrices and their inverses
    tiny = colour.temperature_matrix(1e-9) - np.eye(3)
    assert 0.0 < np.abs(tiny).max() < 1e-10


def test_zero_shift_leaves_pixels_exactly_unchanged():
    photo = random_images(1, 9, 7, torch.float64, 5)
    image = photo[0].permute(1, 2, 0).numpy()
    assert np.array_equal(retouch.temperature_reference(image, 0.0), image)  # every neutral op: test_retouch.py
    # the torch path's temperature step: linear values through the zero-shift matrix come out bit for bit
    matrix = retouch.temperature_matrices(torch.zeros(1, dtype=torch.float64))
    linear = retouch._temperature_exposure(photo.flatten(2), matrix, torch.ones(1, dtype=torch.float64))
    assert torch.equal(linear, retouch.colour_torch.srgb_to_linear(photo.flatten(2)))
    # and uint8 images through the step (decode, zero shift as a trusted tensor, encode) come back unchanged
    images = random_images(2, 11, 5, torch.uint8, 6)
    params, _ = retouch.chain_parameters(images, 0.0, 1.0, 1.0, torch.zeros(2), validate=False)
    out = retouch.retouch_torch(images, **params, apply_contrast=False, apply_saturation=False)
    assert torch.equal(out, images)
