"""Photometric attributes: the float64 reference against independent anchors, the torch path against the reference."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spc_fast import colour, photometric

# Tolerances of the fast paths against the float64 reference, per input dtype:
# (relative on exposure/contrast/saturation, relative on CCT, the magnitude below which errors count as
# absolute: attributes are in L* and C* units, so near-black or grey images are judged to 1e-5 absolute).
TOLERANCES = {
    torch.uint8: (1e-4, 1e-3, 0.1),
    torch.float32: (1e-4, 1e-3, 0.1),
    torch.float16: (1e-4, 1e-3, 0.1),
    torch.bfloat16: (1e-4, 1e-3, 0.1),
}


def assert_close_to_reference(got: torch.Tensor, images: torch.Tensor) -> None:
    """Compare attributes [B, 4] with the reference fed the very same (quantised) input values."""
    rel, rel_cct, floor = TOLERANCES[images.dtype]
    host = images.cpu()
    host = host if host.dtype == torch.uint8 else host.double()
    for attrs, image in zip(got, host, strict=True):
        truth = photometric.attributes_reference(image.permute(1, 2, 0).numpy())
        err = (attrs.double().numpy() - truth) / np.maximum(np.abs(truth), floor)
        assert np.all(np.abs(err[:3]) <= rel), (attrs, truth)
        assert abs(err[3]) <= rel_cct, (attrs, truth)


@st.composite
def image_batches(draw, max_side=40):
    batch = draw(st.integers(1, 3))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    dtype = draw(st.sampled_from(list(TOLERANCES)))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # mixture of full range, exact 0 and exact 1 pixels
    values = torch.rand(batch, 3, h, w, generator=gen, dtype=torch.float64)
    pick = torch.rand(batch, 1, h, w, generator=gen)
    values = torch.where(pick < 0.1, 0.0, torch.where(pick > 0.9, 1.0, values))
    images = (values * 255).round().to(torch.uint8) if dtype == torch.uint8 else values.to(dtype)
    if draw(st.booleans()):
        images = images.contiguous(memory_format=torch.channels_last)
    return images


# --- the reference against independent anchors -----------------------------------------------------------------


def test_d65_white_is_about_6504_kelvin_and_neutral():
    white = np.ones((2, 3, 3))
    exposure, contrast, saturation, cct = photometric.attributes_reference(white)
    assert exposure == pytest.approx(100.0, abs=1e-4)
    assert contrast == pytest.approx(0.0, abs=1e-9)
    assert saturation < 1e-2
    assert cct == pytest.approx(6504, abs=2)


def test_srgb_mid_grey_lightness_matches_hand_computation():
    y = ((0.5 + 0.055) / 1.055) ** 2.4  # sRGB 0.5 linearised; grey has Y = linear value
    expected = 116 * y ** (1 / 3) - 16
    grey = np.full((3, 5, 3), 0.5)
    # the matrix's Y row sums to 1.0000001, hence the 1e-5 tolerance
    assert photometric.attributes_reference(grey)[0] == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(53.389, abs=1e-3)


def test_black_image_reports_the_neutral_white_cct():
    attrs = photometric.attributes_reference(np.zeros((4, 4, 3), np.uint8))
    assert attrs[0] == 0 and attrs[1] == 0 and attrs[2] == 0
    assert attrs[3] == pytest.approx(photometric.NEUTRAL_WHITE_CCT)


def test_lightness_agrees_with_scikit_image(photos):
    skcolor = pytest.importorskip("skimage.color")
    for image in photos.values():
        ours = colour.srgb_to_lab(image / 255.0)[..., 0]
        theirs = skcolor.rgb2lab(image)[..., 0]
        # scikit-image rounds the RGB->XYZ matrix to 6 digits and uses the rounded CIE constants
        # (0.008856, 7.787): per-pixel differences up to ~5e-4, mean within 1e-4.
        assert np.abs(ours - theirs).mean() < 1e-4
        assert np.abs(ours - theirs).max() < 1e-3


@given(st.lists(st.floats(0, 1), min_size=3, max_size=3))
def test_lab_round_trip(rgb):
    back = colour.lab_to_srgb(colour.srgb_to_lab(np.array(rgb)))
    np.testing.assert_allclose(back, rgb, atol=1e-9)


def test_mccamy_of_this_matrix_white():
    white = colour.RGB_TO_XYZ.sum(1)  # linear (1, 1, 1)
    x, y = white[:2] / white.sum()
    assert colour.mccamy_cct(x, y) == pytest.approx(6504, abs=2)
    assert math.isclose(photometric.NEUTRAL_WHITE_CCT, colour.mccamy_cct(x, y), rel_tol=1e-4)


def test_uint16_and_float_inputs_give_the_same_reference():
    rng = np.random.default_rng(0)
    image16 = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)
    np.testing.assert_allclose(
        photometric.attributes_reference(image16), photometric.attributes_reference(image16 / 65535.0)
    )


# --- the torch path ----------------------------------------------------------------------------------------------


@given(image_batches())
def test_torch_path_matches_reference(images):
    assert_close_to_reference(photometric.finalize(photometric.block_stats_torch(images)), images)


@given(image_batches(), st.integers(1, 50))
def test_tiling_does_not_change_the_result(images, tile):
    whole = photometric.finalize(photometric.block_stats_torch(images, tile_pixels=1 << 20))
    tiled = photometric.finalize(photometric.block_stats_torch(images, tile_pixels=tile))
    torch.testing.assert_close(tiled, whole, rtol=2e-6, atol=1e-4)


def test_public_attributes_shapes_and_batch_consistency(photos):
    images = torch.stack([torch.from_numpy(p[:300, :280]).permute(2, 0, 1) for p in photos.values()])
    batched = photometric.attributes(images)
    assert batched.shape == (len(photos), 4) and batched.dtype == torch.float32
    single = torch.stack([photometric.attributes(img) for img in images])
    assert photometric.attributes(images[0]).shape == (4,)
    torch.testing.assert_close(batched, single)
    assert_close_to_reference(batched, images)


@pytest.mark.slow
def test_twelve_megapixel_low_contrast_variance_is_exact():
    # A large, nearly flat image: the naive sum-of-squares variance in float32 loses all digits here.
    gen = torch.Generator().manual_seed(0)
    images = (0.5 + 0.002 * torch.rand(1, 3, 3000, 4000, generator=gen)).float()
    got = photometric.finalize(photometric.block_stats_torch(images))
    truth = photometric.attributes_reference(images[0].permute(1, 2, 0).double().numpy())
    assert abs(got[0, 1].item() - truth[1]) / truth[1] < 1e-4


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.rand(2, 4, 5, 5), "RGB"),
        (torch.rand(5, 5), "RGB"),
        (torch.rand(1, 3, 0, 5), "empty"),
        (torch.full((1, 3, 2, 2), float("nan")), "NaN"),
        (torch.full((1, 3, 2, 2), float("inf")), "NaN or inf"),
        (torch.full((1, 3, 2, 2), 1.5), r"\[0, 1\]"),
        (torch.full((1, 3, 2, 2), -0.1), r"\[0, 1\]"),
        (torch.zeros(1, 3, 2, 2, dtype=torch.int32), "dtype"),
    ],
)
def test_bad_tensors_raise_clear_errors(images, message):
    with pytest.raises(ValueError, match=message):
        photometric.attributes(images)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4)), "RGB"),
        (np.zeros((4, 4, 4)), "RGB"),
        (np.zeros((0, 4, 3)), "empty"),
        (np.full((2, 2, 3), 255.0), r"\[0, 1\]"),
        (np.full((2, 2, 3), np.nan), "NaN"),
        (np.zeros((2, 2, 3), dtype=np.int64), "dtype"),
    ],
)
def test_bad_arrays_raise_clear_errors(image, message):
    with pytest.raises(ValueError, match=message):
        photometric.attributes_reference(image)


def test_not_a_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="torch.Tensor"):
        photometric.attributes(np.zeros((3, 2, 2)))
