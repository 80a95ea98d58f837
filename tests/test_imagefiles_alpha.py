"""spc_fast.imagefiles, transparency: ``read_photo`` returns the alpha channel of every mode that has one (turned
upright with the colour, never colour-managed), and ``save_image(..., alpha=)`` writes it where the format holds it
and refuses a format that cannot (never drops it silently)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from image_files import matrix_profile, write_png16
from imagefile_cases import ORIENTED, RNG, as_unit, exif_block, random_rgb, random_samples16, to_srgb_with
from PIL import Image

from spc_fast.imagefiles import ImageError, Photo, load_image, load_tensor, read_photo, save_image


def _opacity(height: int = 13, width: int = 17) -> np.ndarray:
    alpha = RNG.integers(0, 256, (height, width), dtype=np.uint8)
    alpha[0, 0] = 0  # never opaque everywhere
    return alpha


def _assert_photo(photo: Photo, colour: np.ndarray, alpha: np.ndarray | None, bit_depth: int) -> None:
    assert photo.bit_depth == bit_depth
    assert photo.pixels.shape == (3, *colour.shape[:2]) and photo.pixels.is_contiguous()
    np.testing.assert_array_equal(photo.pixels.permute(1, 2, 0).numpy(), colour)
    if alpha is None:
        assert photo.alpha is None
    else:
        assert photo.alpha.shape == (1, *alpha.shape) and photo.alpha.dtype == photo.pixels.dtype
        np.testing.assert_array_equal(photo.alpha[0].numpy(), alpha)


# ---- reading ------------------------------------------------------------------------------------------------


def test_rgba_keeps_its_alpha_and_colour_under_transparent_pixels(tmp_path):
    colour, alpha = random_rgb(), _opacity()
    alpha[1] = 0  # a fully transparent row still carries its colour
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(tmp_path / "a.png")
    _assert_photo(read_photo(tmp_path / "a.png"), colour, alpha, 8)
    np.testing.assert_array_equal(load_tensor(tmp_path / "a.png").permute(1, 2, 0).numpy(), colour)  # colour only


def test_gray_with_alpha(tmp_path):
    gray, alpha = random_rgb()[..., 0], _opacity()
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(tmp_path / "g.png")
    _assert_photo(read_photo(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=-1), alpha, 8)


@pytest.mark.parametrize("name", ["p.png", "p.gif"])
def test_palette_transparency_becomes_alpha(tmp_path, name):
    indices = RNG.integers(0, 7, (13, 17), dtype=np.uint8)
    palette = RNG.integers(0, 256, (7, 3), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / name, transparency=3)
    _assert_photo(read_photo(tmp_path / name), palette[indices], np.where(indices == 3, 0, 255), 8)


def test_palette_with_alpha_per_entry(tmp_path):
    indices = RNG.integers(0, 7, (13, 17), dtype=np.uint8)
    palette = RNG.integers(0, 256, (7, 3), dtype=np.uint8)
    opacity = np.array([0, 40, 90, 128, 200, 250, 255], np.uint8)  # a PNG8 tRNS table: one alpha per entry
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png", transparency=opacity.tobytes())
    _assert_photo(read_photo(tmp_path / "p.png"), palette[indices], opacity[indices], 8)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_becomes_alpha(tmp_path, mode):
    colour = random_rgb() if mode == "RGB" else random_rgb()[..., 0]
    key = (1, 2, 3) if mode == "RGB" else 7
    colour[4, 5] = key
    Image.fromarray(colour).save(tmp_path / "k.png", transparency=key)
    photo = read_photo(tmp_path / "k.png")
    transparent = np.argwhere(photo.alpha[0].numpy() == 0)
    assert transparent.tolist() == np.argwhere((colour == key).all(-1) if mode == "RGB" else colour == key).tolist()


def test_opaque_alpha_counts_as_no_transparency(tmp_path):
    colour = random_rgb()
    Image.fromarray(np.dstack([colour, np.full((13, 17), 255, np.uint8)]), "RGBA").save(tmp_path / "o.png")
    _assert_photo(read_photo(tmp_path / "o.png"), colour, None, 8)
    Image.fromarray(colour).save(tmp_path / "rgb.png")
    assert read_photo(tmp_path / "rgb.png").alpha is None


@pytest.mark.parametrize("channels", [2, 4])
def test_16bit_png_alpha_keeps_full_precision(tmp_path, channels):
    samples = random_samples16(channels=channels)
    photo = read_photo(write_png16(tmp_path / "a16.png", samples))
    colour = samples[..., :3] if channels == 4 else np.repeat(samples[..., :1], 3, axis=-1)
    _assert_photo(photo, as_unit(colour), as_unit(samples[..., -1]), 16)
    assert photo.pixels.dtype == torch.float32


def test_16bit_tiff_unassociated_alpha(tmp_path):
    samples = random_samples16(channels=4)
    tifffile.imwrite(tmp_path / "a.tif", samples, photometric="rgb", extrasamples=["unassalpha"])
    _assert_photo(read_photo(tmp_path / "a.tif"), as_unit(samples[..., :3]), as_unit(samples[..., 3]), 16)


def test_16bit_tiff_associated_alpha_is_unpremultiplied(tmp_path):
    colour, alpha = random_samples16(), random_samples16(channels=1)
    alpha[0, 0] = 0
    premultiplied = np.round(colour.astype(np.float64) * alpha / 65535.0).astype(np.uint16)
    stored = np.dstack([premultiplied, alpha])
    tifffile.imwrite(tmp_path / "p.tif", stored, photometric="rgb", extrasamples=["assocalpha"])
    photo = read_photo(tmp_path / "p.tif")
    np.testing.assert_array_equal(photo.alpha[0].numpy(), as_unit(alpha[..., 0]))
    visible = alpha[..., 0] > 4096  # where the premultiplied samples kept enough precision to divide back
    error = np.abs(photo.pixels.permute(1, 2, 0).numpy() - as_unit(colour))[visible]
    assert error.max() < 1e-3
    np.testing.assert_array_equal(photo.pixels[:, 0, 0].numpy(), [0, 0, 0])  # fully transparent: no colour


def test_tiff_extra_sample_that_is_not_alpha_is_ignored(tmp_path):
    samples = random_samples16(channels=4)
    tifffile.imwrite(tmp_path / "x.tif", samples, photometric="rgb", extrasamples=["unspecified"])
    _assert_photo(read_photo(tmp_path / "x.tif"), as_unit(samples[..., :3]), None, 16)


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_orientation_turns_alpha_with_the_colour(tmp_path, orientation):
    colour, alpha = random_rgb(4, 6), _opacity(4, 6)
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(
        tmp_path / "o.png", exif=exif_block(orientation).tobytes()
    )
    turn = ORIENTED[orientation]
    _assert_photo(read_photo(tmp_path / "o.png"), turn(colour), turn(alpha[..., None])[..., 0], 8)


@pytest.mark.parametrize("orientation", [6, 8])
def test_orientation_turns_16bit_alpha(tmp_path, orientation):
    samples = random_samples16(5, 8, channels=4)
    path = write_png16(tmp_path / "o.png", samples, exif=exif_block(orientation).tobytes())
    turned = ORIENTED[orientation](samples)
    _assert_photo(read_photo(path), as_unit(turned[..., :3]), as_unit(turned[..., 3]), 16)


def test_profile_converts_colour_not_alpha(tmp_path):
    adobe = matrix_profile("Adobe RGB (1998) test")
    colour, alpha = random_rgb(16, 16), _opacity(16, 16)
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(tmp_path / "a.png", icc_profile=adobe)
    _assert_photo(read_photo(tmp_path / "a.png"), to_srgb_with(Image.fromarray(colour), adobe), alpha, 8)


# ---- writing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.png", "a.tif", "a.webp"])
def test_8bit_alpha_round_trip(tmp_path, name):
    colour = np.kron(random_rgb(4, 6), np.ones((8, 8, 1), np.uint8))
    alpha = np.kron(_opacity(4, 6), np.ones((8, 8), np.uint8))
    alpha[:8] = 0  # transparent pixels keep their colour (WebP "exact")
    photo = read_photo(save_image(tmp_path / name, colour, alpha=alpha))
    np.testing.assert_array_equal(photo.alpha[0].numpy(), alpha)  # WebP stores alpha losslessly
    error = np.abs(photo.pixels.permute(1, 2, 0).numpy().astype(int) - colour.astype(int)).mean()
    assert error <= (8 if name.endswith(".webp") else 0)


@pytest.mark.parametrize("name", ["a16.png", "a16.tif"])
def test_16bit_alpha_round_trip_is_exact(tmp_path, name):
    colour, alpha = as_unit(random_samples16()), as_unit(random_samples16(channels=1))[..., 0]
    alpha[0, 0] = 0.0
    photo = read_photo(save_image(tmp_path / name, colour, alpha=alpha, bit_depth=16))
    _assert_photo(photo, colour, alpha, 16)
    chw = torch.from_numpy(colour).permute(2, 0, 1)
    again = read_photo(save_image(tmp_path / f"t{name}", chw, alpha=torch.from_numpy(alpha)[None], bit_depth=16))
    _assert_photo(again, colour, alpha, 16)


def test_read_photo_then_save_image_passes_alpha_through(tmp_path):
    colour, alpha = random_rgb(), _opacity()
    Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(tmp_path / "in.png")
    photo = read_photo(tmp_path / "in.png")
    out = save_image(tmp_path / "out.tif", photo.pixels, alpha=photo.alpha, source=tmp_path / "in.png")
    _assert_photo(read_photo(out), colour, alpha, 8)


@pytest.mark.parametrize("name", ["out.jpg", "out.jpeg"])
def test_alpha_to_jpeg_is_refused_not_dropped(tmp_path, name):
    with pytest.raises(ImageError, match=r"JPEG cannot hold it; write \.png, \.tif or \.webp to keep transparency"):
        save_image(tmp_path / name, random_rgb(), alpha=_opacity())
    assert list(tmp_path.iterdir()) == []
    assert load_image(save_image(tmp_path / name, random_rgb())).shape == (13, 17, 3)  # without alpha: fine


def test_alpha_of_the_wrong_shape_or_range(tmp_path):
    with pytest.raises(ImageError, match="alpha of size"):
        save_image(tmp_path / "a.png", random_rgb(), alpha=_opacity(5, 5))
    with pytest.raises(ImageError, match=r"alpha as an H x W x 1 array"):
        save_image(tmp_path / "a.png", random_rgb(), alpha=np.zeros((13, 17, 2), np.uint8))
    with pytest.raises(ImageError, match=r"alpha as a \(1, H, W\) tensor"):
        save_image(tmp_path / "a.png", random_rgb(), alpha=torch.zeros(3, 13, 17))
    with pytest.raises(ValueError, match=r"alpha values must be finite and lie in \[0, 1\]"):
        save_image(tmp_path / "a.png", random_rgb(), alpha=np.full((13, 17), 2.0))
    assert list(tmp_path.iterdir()) == []
