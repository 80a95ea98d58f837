"""spc_fast.io: every Pillow mode to sRGB, 16-bit precision, EXIF/ICC handling, clear errors, atomic saves."""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import pytest
import torch
from image_files import matrix_profile, write_png16
from PIL import ExifTags, Image, ImageCms

from spc_fast import io as sio
from spc_fast.io import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    ImageError,
    ImageMetadata,
    check_output_path,
    load_image,
    load_tensor,
    max_pixels_limit,
    read_metadata,
    save_image,
    srgb_icc_profile,
)

RNG = np.random.default_rng(20240601)


def _rgb(height: int = 13, width: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _samples16(height: int = 11, width: int = 9, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 65536, (height, width, channels)).astype(np.uint16)


def _as_unit(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / np.float32(65535.0)


def _description(icc: bytes) -> str:
    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()


def _adobe_to_srgb(image: Image.Image, icc: bytes) -> np.ndarray:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return np.asarray(
        ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    )


def _temporaries(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# ---- loading: modes ----------------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == pixels.shape and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)


def test_size_one_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    np.testing.assert_array_equal(load_image(tmp_path / "dot.png"), [[[10, 20, 30]]])


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_grayscale_modes_replicate_to_rgb(tmp_path, mode):
    gray = _rgb()[..., 0]
    if mode == "1":
        gray = np.where(gray > 127, 255, 0).astype(np.uint8)
    image = Image.fromarray(gray).convert(mode)
    if mode == "LA":
        image.putalpha(Image.fromarray(_rgb()[..., 1]))
    image.save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=-1))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.concatenate([_rgb(), np.zeros((13, 17, 1), np.uint8)], axis=-1)  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), rgba[..., :3])


@pytest.mark.parametrize("with_transparency", [False, True])
def test_palette_is_expanded(tmp_path, with_transparency):
    indices = RNG.integers(0, 7, (13, 17), dtype=np.uint8)
    palette = RNG.integers(0, 256, (7, 3), dtype=np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    if with_transparency:
        image.info["transparency"] = 3
    image.save(tmp_path / "p.png", **({"transparency": 3} if with_transparency else {}))
    np.testing.assert_array_equal(load_image(tmp_path / "p.png"), palette[indices])


def test_cmyk_without_profile_uses_pillows_conversion(tmp_path):
    cmyk = Image.fromarray(RNG.integers(0, 256, (13, 17, 4), dtype=np.uint8), "CMYK")
    cmyk.save(tmp_path / "c.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "c.tif"), np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("name", ["g16.png", "g16.tif"])
def test_16bit_grayscale_keeps_full_precision(tmp_path, name):
    samples = _samples16(channels=1)[..., 0]
    Image.fromarray(samples).save(tmp_path / name)
    out = load_image(tmp_path / name)
    assert out.dtype == np.float32 and out.shape == (*samples.shape, 3)
    np.testing.assert_array_equal(out, np.repeat(_as_unit(samples)[..., None], 3, axis=-1))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_every_layout_and_row_filter(tmp_path, channels):
    samples = _samples16(height=12, width=7, channels=channels)  # 12 rows: every one of the 5 filters twice
    samples[:, :3] = 40000 + np.arange(3, dtype=np.uint16)[None, :, None]  # runs where Sub/Paeth predict well
    out = load_image(write_png16(tmp_path / "x.png", samples))
    expected = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=-1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, _as_unit(expected))


@pytest.mark.parametrize(
    "options",
    [{}, {"byteorder": ">"}, {"compression": "zlib", "predictor": True}, {"rowsperstrip": 3}],
    ids=["little-endian", "big-endian", "deflate-predictor", "strips"],
)
def test_16bit_rgb_tiff_keeps_full_precision(tmp_path, options):
    tifffile = pytest.importorskip("tifffile")
    samples = _samples16(height=10, width=6)
    tifffile.imwrite(tmp_path / "x.tif", samples, photometric="rgb", **options)
    np.testing.assert_array_equal(load_image(tmp_path / "x.tif"), _as_unit(samples))


def test_16bit_planar_tiff_is_refused_not_misread(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(
        tmp_path / "p.tif", _samples16().transpose(2, 0, 1), photometric="rgb", planarconfig="separate"
    )
    with pytest.raises(ImageError, match=r"p\.tif.*planar.*re-save"):
        load_image(tmp_path / "p.tif")


def test_float_tiff(tmp_path):
    values = RNG.random((5, 4), dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif"), np.repeat(values[..., None], 3, axis=-1))
    Image.fromarray(values * 3, "F").save(tmp_path / "big.tif")
    with pytest.raises(ImageError, match=r"big\.tif.*outside \[0, 1\].*normalise"):
        load_image(tmp_path / "big.tif")


def test_load_tensor_layout(tmp_path):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    tensor = load_tensor(tmp_path / "a.png")
    assert tensor.shape == (3, 13, 17) and tensor.dtype == torch.uint8 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), pixels)
    wide = load_tensor(write_png16(tmp_path / "w.png", _samples16()))
    assert wide.dtype == torch.float32 and wide.shape == (3, 11, 9)


# ---- loading: orientation and colour management ------------------------------------------------------------

ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored sideways, shown turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2021:06:01 12:34:56"
    return exif


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    pixels = _rgb(4, 6)
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=_exif(orientation).tobytes())
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), ORIENTED[orientation](pixels))


def test_exif_rotated_jpeg(tmp_path):
    blocks = np.kron(RNG.integers(0, 256, (3, 5, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 48 x 80
    Image.fromarray(blocks).save(tmp_path / "r.jpg", quality=100, exif=_exif(6).tobytes())
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (80, 48, 3)
    with Image.open(tmp_path / "r.jpg") as stored:
        np.testing.assert_array_equal(out, np.rot90(np.asarray(stored), -1))
    assert np.abs(out.astype(int) - np.rot90(blocks, -1).astype(int)).mean() < 5.0  # JPEG loss only


def test_16bit_orientation_applies_to_both_bytes(tmp_path):
    samples = _samples16(height=5, width=8)
    path = save_image(tmp_path / "o16.png", _as_unit(samples), bit_depth=16)  # then add an eXIf chunk to it
    exif = _exif(8).tobytes().removeprefix(b"Exif\x00\x00")
    data = path.read_bytes()
    iend = data.rindex(b"IEND") - 4
    path.write_bytes(data[:iend] + sio._png_chunk(b"eXIf", exif) + data[iend:])
    np.testing.assert_array_equal(load_image(path), _as_unit(np.rot90(samples, 1)))


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_non_srgb_profile_is_converted(tmp_path, name):
    adobe = matrix_profile("Adobe RGB (1998) test")
    pixels = _rgb(16, 16)
    Image.fromarray(pixels).save(
        tmp_path / name, icc_profile=adobe, **({"quality": 100} if name.endswith("jpg") else {})
    )
    with Image.open(tmp_path / name) as stored:
        expected = _adobe_to_srgb(stored.convert("RGB"), adobe)
    out = load_image(tmp_path / name)
    np.testing.assert_array_equal(out, expected)
    assert np.abs(expected.astype(int) - pixels.astype(int)).mean() > 3  # the conversion did something


def test_srgb_profile_leaves_pixels_alone(tmp_path):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "s.png", icc_profile=srgb_icc_profile())
    np.testing.assert_array_equal(load_image(tmp_path / "s.png"), pixels)


def test_grayscale_with_rgb_profile_is_taken_as_is(tmp_path, caplog):
    gray = _rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png", icc_profile=matrix_profile("mismatched"))
    with caplog.at_level(logging.WARNING, logger="spc_fast.io"):
        out = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    assert "does not fit" in caplog.text


def test_corrupt_profile_is_ignored_with_a_warning(tmp_path, caplog):
    pixels = _rgb()
    Image.fromarray(pixels).save(tmp_path / "c.png", icc_profile=b"not an icc profile at all" * 8)
    with caplog.at_level(logging.WARNING, logger="spc_fast.io"):
        np.testing.assert_array_equal(load_image(tmp_path / "c.png"), pixels)
    assert "unreadable" in caplog.text


def test_16bit_with_non_srgb_profile_converts_at_8_bits(tmp_path, caplog):
    adobe = matrix_profile("Adobe RGB (1998) test")
    samples = _samples16()
    path = write_png16(tmp_path / "w.png", samples, icc_profile=adobe)
    with caplog.at_level(logging.WARNING, logger="spc_fast.io"):
        out = load_image(path)
    expected = _adobe_to_srgb(Image.fromarray((samples >> 8).astype(np.uint8)), adobe)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.astype(np.float32) / np.float32(255.0))
    assert "8-bit precision" in caplog.text


# ---- loading: errors ---------------------------------------------------------------------------------------


def _jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("half.jpg", lambda: _jpeg_bytes()[: len(_jpeg_bytes()) // 2], r"truncated or corrupt.*re-export"),
        ("half.png", lambda: _png_bytes()[: len(_png_bytes()) // 2], r"truncated or corrupt.*re-export"),
        ("head.png", lambda: _png_bytes()[:40], r"not an image Pillow can read.*convert it"),
        (
            "noise.jpg",
            lambda: RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            r"not an image.*convert it",
        ),
        ("empty.png", lambda: b"", r"file is empty \(0 bytes\).*re-export"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content())
    with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')}: {message}"):
        load_image(tmp_path / name)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such file; check the path"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory, not an image file"):
        load_image(tmp_path)
    assert issubclass(ImageError, ValueError)


def test_empty_image(tmp_path, monkeypatch):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")  # Pillow refuses to write or open 0 x 0 files itself
    monkeypatch.setattr(sio.Image, "open", lambda path: Image.new("RGB", (0, 0)))
    with pytest.raises(ImageError, match=r"a\.png: image is empty \(0x0 pixels\)"):
        load_image(tmp_path / "a.png")


def test_pixel_limit(tmp_path, monkeypatch):
    Image.fromarray(_rgb(10, 20)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(
        ImageError, match=r"a\.png: 20x10 = 200 pixels is above the limit of 199 pixels.*max_pixels"
    ):
        load_image(tmp_path / "a.png", max_pixels=199)
    monkeypatch.setenv("SPC_FAST_MAX_PIXELS", "150")
    with pytest.raises(ImageError, match="SPC_FAST_MAX_PIXELS=<count>"):
        load_image(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=500).shape == (10, 20, 3)  # the argument wins
    monkeypatch.setenv("SPC_FAST_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="not a positive integer"):
        load_image(tmp_path / "a.png")
    monkeypatch.delenv("SPC_FAST_MAX_PIXELS")
    assert max_pixels_limit() == DEFAULT_MAX_PIXELS
    with pytest.raises(ValueError, match="positive"):
        max_pixels_limit(0)


def test_pillows_own_bomb_limit_is_replaced_by_ours(tmp_path, monkeypatch):
    Image.fromarray(_rgb(10, 20)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow alone would raise DecompressionBombError
    assert load_image(tmp_path / "a.png", max_pixels=1000).shape == (10, 20, 3)
    assert Image.MAX_IMAGE_PIXELS == 50
    with pytest.raises(ImageError, match="above the limit of 120"):
        load_image(tmp_path / "a.png", max_pixels=120)
    with pytest.raises(ImageError, match=r"a\.png: its pixel count is above the limit of 90 pixels"):
        load_image(tmp_path / "a.png", max_pixels=90)  # refused by Pillow's own check, reworded


# ---- saving ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_save_every_format(tmp_path, suffix):
    pixels = np.kron(_rgb(4, 6), np.ones((8, 8, 1), np.uint8))
    path = save_image(tmp_path / f"out{suffix}", pixels)
    with Image.open(path) as image:
        assert image.format == FORMATS[suffix]
    error = np.abs(load_image(path).astype(int) - pixels.astype(int)).mean()
    assert error <= {"PNG": 0, "TIFF": 0, "JPEG": 3, "WEBP": 8}[FORMATS[suffix]]  # WebP is always 4:2:0


def test_save_tensors_and_float_arrays(tmp_path):
    pixels = _rgb()
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
    unit = _as_unit(_samples16())
    path = save_image(tmp_path / "w.png", unit, bit_depth=16)
    np.testing.assert_array_equal(load_image(path), unit)
    tensor_path = save_image(tmp_path / "t.png", torch.from_numpy(unit).permute(2, 0, 1), bit_depth=16)
    np.testing.assert_array_equal(load_image(tensor_path), unit)
    with pytest.raises(ImageError, match="PNG only"):
        save_image(tmp_path / "w.jpg", unit, bit_depth=16)
    with pytest.raises(ValueError, match="8 or 16"):
        save_image(tmp_path / "w.png", unit, bit_depth=12)


def test_unknown_extension_and_bad_folders(tmp_path):
    pixels = _rgb()
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
    with pytest.raises(ImageError, match=r"out\.png: already exists; pass overwrite=True"):
        save_image(target, _rgb())
    assert target.read_bytes() == b"keep me"
    save_image(target, _rgb(), overwrite=True)
    assert load_image(target).shape == (13, 17, 3)


def test_refuses_to_replace_its_source(tmp_path, monkeypatch):
    source = tmp_path / "in.png"
    Image.fromarray(_rgb()).save(source)
    before = source.read_bytes()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for spelling in [source, "in.png", "sub/../in.png"]:
        with pytest.raises(ImageError, match="is the input file"):
            save_image(spelling, _rgb(), source=source)
        with pytest.raises(ImageError, match="is the input file"):
            check_output_path(spelling, source=read_metadata(source))
    assert source.read_bytes() == before
    save_image("in.png", _rgb(), source=source, overwrite=True)
    assert source.read_bytes() != before


def test_failed_encode_leaves_nothing_behind(tmp_path, monkeypatch):
    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        raise RuntimeError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(RuntimeError, match="exploded"):
        save_image(tmp_path / "new.png", _rgb())
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "old.jpg"
    existing.write_bytes(b"original")
    with pytest.raises(RuntimeError, match="exploded"):
        save_image(existing, _rgb(), overwrite=True)
    assert existing.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["old.jpg"]


def test_unwritable_target_gives_a_clear_error(tmp_path, monkeypatch):
    existing = tmp_path / "old.png"
    existing.write_bytes(b"original")

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(sio.os, "replace", denied)
    with pytest.raises(
        ImageError, match=r"old\.png: cannot write the file \(Permission denied\).*writable folder"
    ):
        save_image(existing, _rgb(), overwrite=True)
    assert existing.read_bytes() == b"original" and _temporaries(tmp_path) == []


def test_folder_without_write_permission(tmp_path, monkeypatch):
    real_open = os.open

    def read_only_folder(path, flags, *args):
        if flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(sio.os, "open", read_only_folder)
    with pytest.raises(ImageError, match="Permission denied"):
        save_image(tmp_path / "new.png", _rgb())
    assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_file_permissions(tmp_path):
    target = save_image(tmp_path / "out.png", _rgb())
    target.chmod(0o640)
    save_image(target, _rgb(), overwrite=True)
    assert target.stat().st_mode & 0o777 == 0o640


# ---- metadata ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
def test_exif_carried_over_with_orientation_reset(tmp_path, suffix):
    source = tmp_path / "in.jpg"
    Image.fromarray(_rgb(16, 24)).save(source, exif=_exif(6).tobytes())
    upright = load_image(source)
    assert upright.shape == (24, 16, 3)
    out = save_image(tmp_path / f"out{suffix}", upright, source=source)
    with Image.open(out) as image:
        exif = image.getexif()
        assert exif[ExifTags.Base.Make] == "TestCam"
        assert exif.get(ExifTags.Base.Orientation, 1) == 1
        assert exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] == "2021:06:01 12:34:56"
        assert "icc_profile" not in image.info or not image.info["icc_profile"]
    assert load_image(out).shape == (24, 16, 3)  # not turned a second time


def test_16bit_png_carries_exif_and_profile(tmp_path):
    source = tmp_path / "in.jpg"
    Image.fromarray(_rgb(8, 8)).save(
        source, exif=_exif(3).tobytes(), icc_profile=matrix_profile("Adobe test")
    )
    out = save_image(tmp_path / "w.png", _as_unit(_samples16(8, 8)), source=source, bit_depth=16)
    with Image.open(out) as image:
        assert image.getexif()[ExifTags.Base.Make] == "TestCam"
        assert image.getexif()[ExifTags.Base.Orientation] == 1
        assert "sRGB" in _description(image.info["icc_profile"])


def test_srgb_profile_written_when_source_had_one(tmp_path):
    source = tmp_path / "in.png"
    blocks = np.kron(_rgb(4, 4), np.ones((8, 8, 1), np.uint8))
    Image.fromarray(blocks).save(source, icc_profile=matrix_profile("Adobe test"))
    metadata = read_metadata(source)
    assert isinstance(metadata, ImageMetadata) and metadata.path == source and metadata.exif is None
    assert _description(metadata.icc_profile) == "Adobe test"
    out = save_image(tmp_path / "out.jpg", load_image(source), source=metadata)
    with Image.open(out) as image:
        assert "sRGB" in _description(image.info["icc_profile"])
    assert (
        np.abs(load_image(out).astype(int) - load_image(source).astype(int)).mean() < 3
    )  # profile not applied twice


def test_tiff_source_layout_tags_are_not_copied(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, _samples16(), photometric="rgb", software="TestSoft")
    exif = Image.Exif()
    exif.load(read_metadata(source).exif)
    assert exif[ExifTags.Base.Software] == "TestSoft"
    assert not {256, 257, 258, 273, 279} & set(exif)
