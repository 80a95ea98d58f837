"""spc_fast.imagefiles, more than 8 bits: floating-point RGB TIFFs load (tifffile reads what Pillow cannot open),
16-bit output to TIFF stays 16-bit with its ICC profile and whole EXIF block, and ICC profiles are judged sRGB by
what they do, not by their name."""

from __future__ import annotations

import io
import logging

import imagecodecs
import numpy as np
import pytest
import tifffile
from image_files import SRGB_COLORANTS, matrix_profile, srgb_curve
from imagefile_cases import ORIENTED, RNG, as_unit, exif_block, random_rgb, random_samples16, to_srgb_with
from PIL import ExifTags, Image

from spc_fast.imagefiles import ImageError, load_image, read_metadata, read_photo, save_image, srgb_icc_profile

# ---- floating-point TIFF ------------------------------------------------------------------------------------


def _float_rgb(height: int = 6, width: int = 5, channels: int = 3) -> np.ndarray:
    return RNG.random((height, width, channels), dtype=np.float32)


def test_float32_rgb_tiff_loads_at_full_precision(tmp_path):
    values = _float_rgb()
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb")
    photo = read_photo(tmp_path / "f.tif")
    assert photo.bit_depth == 16 and photo.alpha is None
    np.testing.assert_array_equal(photo.pixels.permute(1, 2, 0).numpy(), values)


@pytest.mark.parametrize("orientation", [3, 6])
def test_float32_tiff_orientation_and_alpha(tmp_path, orientation):
    values = _float_rgb(channels=4)
    tags = [(274, "H", 1, orientation, True)]
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb", extrasamples=["unassalpha"], extratags=tags)
    photo = read_photo(tmp_path / "f.tif")
    turned = ORIENTED[orientation](values)
    np.testing.assert_array_equal(photo.pixels.permute(1, 2, 0).numpy(), turned[..., :3])
    np.testing.assert_array_equal(photo.alpha[0].numpy(), turned[..., 3])


def test_float32_tiff_outside_unit_range_names_the_range(tmp_path):
    values = _float_rgb() * 3.0 - 0.5
    tifffile.imwrite(tmp_path / "hdr.tif", values, photometric="rgb")
    low, high = f"{values.min():g}", f"{values.max():g}"
    with pytest.raises(ImageError, match=rf"hdr\.tif: .*outside \[0, 1\] \(found {low} to {high}.*normalise"):
        load_image(tmp_path / "hdr.tif")
    values[0, 0, 0] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", values, photometric="rgb")
    with pytest.raises(ImageError, match=r"nan\.tif: .*NaN"):
        load_image(tmp_path / "nan.tif")


def test_float32_tiff_profile_and_limits(tmp_path, caplog):
    adobe = matrix_profile("Adobe RGB (1998) test")
    values = _float_rgb(16, 16)
    tifffile.imwrite(tmp_path / "f.tif", values, photometric="rgb", iccprofile=adobe)
    assert read_metadata(tmp_path / "f.tif").icc_profile == adobe
    with caplog.at_level(logging.WARNING, logger="spc_fast.imagefiles"):
        out = load_image(tmp_path / "f.tif")
    expected = to_srgb_with(Image.fromarray(np.round(values * 255).astype(np.uint8)), adobe)
    np.testing.assert_array_equal(out, expected.astype(np.float32) / np.float32(255.0))
    assert "8-bit precision" in caplog.text
    with pytest.raises(ImageError, match=r"16x16 = 256 pixels is above the limit of 255"):
        load_image(tmp_path / "f.tif", max_pixels=255)


def test_float_tiff_pillow_cannot_open_is_not_called_corrupt(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", _float_rgb(), photometric="rgb")
    with pytest.raises(Exception):  # noqa: B017 - the premise: Pillow alone cannot open it
        Image.open(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif").dtype == np.float32


# ---- 16-bit TIFF output -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["w.tif", "w.tiff"])
def test_16bit_tiff_round_trip_is_exact_for_three_readers(tmp_path, name):
    samples = random_samples16(7, 10)
    path = save_image(tmp_path / name, as_unit(samples), bit_depth=16)
    np.testing.assert_array_equal(load_image(path), as_unit(samples))
    np.testing.assert_array_equal(tifffile.imread(path), samples)
    np.testing.assert_array_equal(imagecodecs.tiff_decode(path.read_bytes()), samples)  # libtiff
    with Image.open(path) as image:
        assert image.format == "TIFF" and image.size == (10, 7)


def test_16bit_tiff_keeps_icc_and_the_whole_exif_block(tmp_path):
    exif = exif_block(6)
    exif[ExifTags.Base.Model] = "Model 7"
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
    source = tmp_path / "in.tif"
    Image.fromarray(random_rgb(8, 6)).save(source, exif=exif.tobytes(), icc_profile=matrix_profile("Adobe test"))
    out = save_image(tmp_path / "out.tif", as_unit(random_samples16(6, 8)), source=source, bit_depth=16)
    with Image.open(out) as image:
        written = image.getexif()
        assert image.info["icc_profile"] == srgb_icc_profile()
        assert (written[ExifTags.Base.Make], written[ExifTags.Base.Model]) == ("TestCam", "Model 7")
        assert written[ExifTags.Base.Orientation] == 1
        assert written.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2021:06:01 12:34:56"
        assert written.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (52.0, 31.0, 12.5)
    with tifffile.TiffFile(out) as tiff:
        assert tiff.pages[0].dtype == np.uint16 and tiff.pages[0].bitspersample == 16


def test_16bit_tiff_source_written_to_tiff_stays_16bit(tmp_path):
    samples = random_samples16(7, 10)
    source = tmp_path / "in.tif"
    tags = [(271, "s", 0, "TestCam", True), (274, "H", 1, 8, True)]  # Make, Orientation
    tifffile.imwrite(source, samples, photometric="rgb", iccprofile=srgb_icc_profile(), extratags=tags)
    upright = load_image(source)
    out = save_image(tmp_path / "out.tif", upright, source=source, bit_depth=16)
    np.testing.assert_array_equal(load_image(out), upright)  # not turned a second time, no 8-bit step
    np.testing.assert_array_equal(tifffile.imread(out), ORIENTED[8](samples))
    assert read_metadata(out).icc_profile == srgb_icc_profile()


def test_16bit_tiff_written_bytes_are_a_valid_baseline_tiff(tmp_path):
    path = save_image(tmp_path / "w.tif", as_unit(random_samples16(3, 4, channels=3)), bit_depth=16)
    with tifffile.TiffFile(io.BytesIO(path.read_bytes())) as tiff:
        page = tiff.pages[0]
        assert tiff.byteorder == "<" and len(tiff.pages) == 1
        assert (page.photometric, page.compression, page.planarconfig) == (2, 1, 1)
        assert page.bitspersample == 16 and page.samplesperpixel == 3 and not page.extrasamples


# ---- ICC profiles judged by content -------------------------------------------------------------------------


def test_wide_gamut_profile_named_srgb_is_converted(tmp_path):
    mislabelled = matrix_profile("sRGB IEC61966-2.1 (really Adobe RGB)")
    pixels = random_rgb(16, 16)
    Image.fromarray(pixels).save(tmp_path / "m.png", icc_profile=mislabelled)
    out = load_image(tmp_path / "m.png")
    np.testing.assert_array_equal(out, to_srgb_with(Image.fromarray(pixels), mislabelled))
    assert np.abs(out.astype(int) - pixels.astype(int)).mean() > 3


@pytest.mark.parametrize("name", ["Camera RGB", "sRGB IEC61966-2.1"])
def test_srgb_profile_under_any_name_leaves_pixels_alone(tmp_path, name):
    srgb = matrix_profile(name, SRGB_COLORANTS, curve=srgb_curve())
    pixels = random_rgb()
    Image.fromarray(pixels).save(tmp_path / "s.png", icc_profile=srgb)
    np.testing.assert_array_equal(load_image(tmp_path / "s.png"), pixels)


def test_gamma_22_profile_named_srgb_is_converted(tmp_path):
    near = matrix_profile("sRGB built-in", SRGB_COLORANTS, gamma=2.2)  # sRGB primaries, not the sRGB curve
    pixels = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)[..., None].repeat(3, -1)
    Image.fromarray(pixels).save(tmp_path / "g.png", icc_profile=near)
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), to_srgb_with(Image.fromarray(pixels), near))
