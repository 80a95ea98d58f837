"""spc_fast.imagefiles, writing: every format, 16-bit PNG through the codecs, EXIF and ICC carried over (16-bit PNG
and TIFF round trips included), atomic saves, clear errors."""

from __future__ import annotations

import os

import numpy as np
import png
import pytest
import tifffile
import torch
from image_files import matrix_profile, write_png16
from imagefile_cases import ORIENTED, as_unit, exif_block, icc_description, random_rgb, random_samples16, temporaries
from PIL import ExifTags, Image

from spc_fast.imagefiles import (
    FORMATS,
    ImageError,
    ImageMetadata,
    atomic,
    check_output_path,
    load_image,
    read_metadata,
    save_image,
    srgb_icc_profile,
)

EXISTS = r"out\.png: already exists; pass --overwrite to replace it, or --skip-existing to keep it"

# ---- saving ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_save_every_format(tmp_path, suffix):
    pixels = np.kron(random_rgb(4, 6), np.ones((8, 8, 1), np.uint8))
    path = save_image(tmp_path / f"out{suffix}", pixels)
    with Image.open(path) as image:
        assert image.format == FORMATS[suffix]
    error = np.abs(load_image(path).astype(int) - pixels.astype(int)).mean()
    assert error <= {"PNG": 0, "TIFF": 0, "JPEG": 3, "WEBP": 8}[FORMATS[suffix]]  # WebP is always 4:2:0


def test_save_tensors_and_float_arrays(tmp_path):
    pixels = random_rgb()
    chw = torch.from_numpy(pixels).permute(2, 0, 1)
    for name, image in [
        ("u8.png", chw),
        ("batched.png", chw[None]),
        ("f32.png", chw.float() / 255),
        ("f16.png", chw.half() / 255),
        ("np.png", pixels.astype(np.float64) / 255),
    ]:
        np.testing.assert_array_equal(load_image(save_image(tmp_path / name, image)), pixels)
    with pytest.raises(ValueError, match="one image"):
        save_image(tmp_path / "two.png", torch.stack([chw, chw]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        save_image(tmp_path / "bad.png", chw.float())
    with pytest.raises(ValueError, match="H x W x 3"):
        save_image(tmp_path / "bad.png", pixels[..., 0])
    with pytest.raises(TypeError):
        save_image(tmp_path / "bad.png", pixels.tolist())


def test_16bit_png_round_trip_is_exact(tmp_path):
    unit = as_unit(random_samples16())
    path = save_image(tmp_path / "w.png", unit, bit_depth=16)
    np.testing.assert_array_equal(load_image(path), unit)
    chw = torch.from_numpy(unit).permute(2, 0, 1)
    for name, tensor in [("t.png", chw), ("contiguous.png", chw.contiguous())]:  # as a model returns it
        np.testing.assert_array_equal(load_image(save_image(tmp_path / name, tensor, bit_depth=16)), unit)
    with pytest.raises(ImageError, match=r"w\.jpg: 16-bit output is written as PNG or TIFF only"):
        save_image(tmp_path / "w.jpg", unit, bit_depth=16)
    with pytest.raises(ValueError, match="8 or 16"):
        save_image(tmp_path / "w.png", unit, bit_depth=12)


def test_16bit_png_is_a_valid_png_for_an_independent_decoder(tmp_path):
    samples = random_samples16(6, 5)
    path = save_image(tmp_path / "w.png", as_unit(samples), bit_depth=16)
    width, height, rows, info = png.Reader(filename=str(path)).read()  # pypng decodes in pure Python
    assert (width, height, info["bitdepth"], info["planes"]) == (5, 6, 16, 3)
    np.testing.assert_array_equal(np.array([list(row) for row in rows]).reshape(6, 5, 3), samples)


def test_unknown_extension_and_bad_folders(tmp_path):
    pixels = random_rgb()
    with pytest.raises(ImageError, match=r"out\.bmp.*extension '\.bmp'; use one of"):
        save_image(tmp_path / "out.bmp", pixels)
    with pytest.raises(ImageError, match="does not exist.*create it first"):
        save_image(tmp_path / "missing" / "out.png", pixels)
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ImageError, match="does not exist"):
        save_image(tmp_path / "file" / "out.png", pixels)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        save_image(tmp_path / "dir.png", pixels, overwrite=True)


def test_overwrite_refused_unless_asked(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"keep me")
    with pytest.raises(ImageError, match=EXISTS):
        save_image(target, random_rgb())
    assert target.read_bytes() == b"keep me"
    save_image(target, random_rgb(), overwrite=True)
    assert load_image(target).shape == (13, 17, 3)


def test_refuses_to_replace_its_source(tmp_path, monkeypatch):
    source = tmp_path / "in.png"
    Image.fromarray(random_rgb()).save(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for spelling in [source, "in.png", "sub/../in.png"]:
        with pytest.raises(ImageError, match="is the input file"):
            save_image(spelling, random_rgb(), source=source)
        with pytest.raises(ImageError, match="is the input file"):
            check_output_path(spelling, source=read_metadata(source))
    assert source.read_bytes() == before
    save_image("in.png", random_rgb(), source=source, overwrite=True)
    assert source.read_bytes() != before


def test_failed_encode_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="exploded"):
        save_image(tmp_path / "new.png", random_rgb())
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "old.jpg"
    existing.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="exploded"):
        save_image(existing, random_rgb(), overwrite=True)
    assert existing.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["old.jpg"]


def test_unwritable_target_gives_a_clear_error(tmp_path, monkeypatch):
    existing = tmp_path / "old.png"
    existing.write_bytes(b"original")

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(atomic.os, "replace", denied)
    with pytest.raises(
        ImageError, match=r"old\.png: cannot write the file \(Permission denied\).*writable folder"
    ):
        save_image(existing, random_rgb(), overwrite=True)
    assert existing.read_bytes() == b"original" and temporaries(tmp_path) == []


def test_folder_without_write_permission(tmp_path, monkeypatch):
    real_open = os.open

    def read_only_folder(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(atomic.os, "open", read_only_folder)
    with pytest.raises(ImageError, match="Permission denied"):
        save_image(tmp_path / "new.png", random_rgb())
    assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_file_permissions(tmp_path):
    target = save_image(tmp_path / "out.png", random_rgb())
    target.chmod(0o640)
    save_image(target, random_rgb(), overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o640


# ---- metadata ----------------------------------------------------------------------------------------------


def _assert_exif_carried_over(image: Image.Image) -> None:
    exif = image.getexif()
    assert exif[ExifTags.Base.Make] == "TestCam"
    assert exif.get(ExifTags.Base.Orientation, 1) == 1


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_carried_over_with_orientation_reset(tmp_path, suffix):
    source = tmp_path / "in.jpg"
    Image.fromarray(random_rgb(16, 24)).save(source, exif=exif_block(6).tobytes())
    upright = load_image(source)
    assert upright.shape == (24, 16, 3)
    out = save_image(tmp_path / f"out{suffix}", upright, source=source)
    with Image.open(out) as image:
        _assert_exif_carried_over(image)
        assert image.getexif().get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2021:06:01 12:34:56"
        assert "icc_profile" not in image.info or not image.info["icc_profile"]
    assert load_image(out).shape == (24, 16, 3)  # not turned a second time


def test_16bit_png_carries_exif_and_profile(tmp_path):
    source = tmp_path / "in.jpg"
    Image.fromarray(random_rgb(8, 8)).save(
        source, exif=exif_block(3).tobytes(), icc_profile=matrix_profile("Adobe test")
    )
    out = save_image(tmp_path / "w.png", as_unit(random_samples16(8, 8)), source=source, bit_depth=16)
    with Image.open(out) as image:
        _assert_exif_carried_over(image)
        assert image.getexif()[ExifTags.Base.Orientation] == 1
        assert "sRGB" in icc_description(image.info["icc_profile"])
    kinds = [kind for kind, _ in png.Reader(filename=str(out)).chunks()]
    assert kinds[:3] == [b"IHDR", b"iCCP", b"eXIf"] and kinds[3] == b"IDAT" and kinds[-1] == b"IEND"


def _round_trip(tmp_path, source, samples: np.ndarray, orientation: int) -> None:
    """Load a 16-bit ``source`` (EXIF orientation + Make, sRGB profile), write it back as 16-bit PNG, and check
    pixels (exact), EXIF and ICC profile on the way."""
    upright = load_image(source)
    np.testing.assert_array_equal(upright, as_unit(ORIENTED[orientation](samples)))
    out = save_image(tmp_path / "out.png", upright, source=source, bit_depth=16)
    np.testing.assert_array_equal(load_image(out), upright)  # orientation reset: not turned a second time
    with Image.open(out) as image:
        _assert_exif_carried_over(image)
        assert image.info["icc_profile"] == srgb_icc_profile()


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_16bit_png_round_trip_keeps_exif_and_icc(tmp_path, orientation):
    samples = random_samples16(7, 10)
    source = write_png16(
        tmp_path / "in.png", samples, icc_profile=srgb_icc_profile(), exif=exif_block(orientation).tobytes()
    )
    _round_trip(tmp_path, source, samples, orientation)


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_16bit_tiff_round_trip_keeps_exif_and_icc(tmp_path, orientation):
    samples = random_samples16(7, 10)
    source = tmp_path / "in.tif"
    tags = [(271, "s", 0, "TestCam", True), (274, "H", 1, orientation, True)]  # Make, Orientation
    tifffile.imwrite(source, samples, photometric="rgb", iccprofile=srgb_icc_profile(), extratags=tags)
    _round_trip(tmp_path, source, samples, orientation)


def test_srgb_profile_written_when_source_had_one(tmp_path):
    source = tmp_path / "in.png"
    blocks = np.kron(random_rgb(4, 4), np.ones((8, 8, 1), np.uint8))
    Image.fromarray(blocks).save(source, icc_profile=matrix_profile("Adobe test"))
    metadata = read_metadata(source)
    assert isinstance(metadata, ImageMetadata) and metadata.path == source and metadata.exif is None
    assert icc_description(metadata.icc_profile) == "Adobe test"
    out = save_image(tmp_path / "out.jpg", load_image(source), source=metadata)
    with Image.open(out) as image:
        assert "sRGB" in icc_description(image.info["icc_profile"])
    assert (
        np.abs(load_image(out).astype(int) - load_image(source).astype(int)).mean() < 3
    )  # profile not applied twice


def test_tiff_source_layout_tags_are_not_copied(tmp_path):
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, random_samples16(), photometric="rgb", software="TestSoft")
    exif = Image.Exif()
    exif.load(read_metadata(source).exif)
    assert exif[ExifTags.Base.Software] == "TestSoft"
    assert not {256, 257, 258, 273, 279} & set(exif)
