"""spc_fast.imagefiles, reading: every Pillow mode to sRGB, 16-bit precision through the codecs, EXIF orientation,
ICC conversion, clear errors and pixel limits, and no reliance on Pillow's private attributes."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from image_files import matrix_profile, write_png16
from imagefile_cases import (
    ORIENTED,
    RNG,
    as_unit,
    exif_block,
    random_rgb,
    random_samples16,
    to_srgb_with,
)
from PIL import Image

import spc_fast.imagefiles
from spc_fast.imagefiles import (
    DEFAULT_MAX_PIXELS,
    ImageError,
    load_image,
    load_tensor,
    max_pixels_limit,
    save_image,
    srgb_icc_profile,
)

LOGGER = "spc_fast.imagefiles"

# ---- loading: modes ----------------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path):
    pixels = random_rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == pixels.shape and out.flags.writeable
    np.testing.assert_array_equal(out, pixels)


def test_size_one_image(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    np.testing.assert_array_equal(load_image(tmp_path / "dot.png"), [[[10, 20, 30]]])


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_grayscale_modes_replicate_to_rgb(tmp_path, mode):
    gray = random_rgb()[..., 0]
    if mode == "1":
        gray = np.where(gray > 127, 255, 0).astype(np.uint8)
    image = Image.fromarray(gray).convert(mode)
    if mode == "LA":
        image.putalpha(Image.fromarray(random_rgb()[..., 1]))
    image.save(tmp_path / "g.png")
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.repeat(gray[..., None], 3, axis=-1))


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.concatenate([random_rgb(), np.zeros((13, 17, 1), np.uint8)], axis=-1)  # fully transparent
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
    samples = random_samples16(channels=1)[..., 0]
    Image.fromarray(samples).save(tmp_path / name)
    out = load_image(tmp_path / name)
    assert out.dtype == np.float32 and out.shape == (*samples.shape, 3)
    np.testing.assert_array_equal(out, np.repeat(as_unit(samples)[..., None], 3, axis=-1))


def test_16bit_pgm_is_read_by_pillow_at_full_precision(tmp_path):
    samples = random_samples16(channels=1)[..., 0]
    height, width = samples.shape
    (tmp_path / "g.pgm").write_bytes(f"P5\n{width} {height}\n65535\n".encode() + samples.astype(">u2").tobytes())
    np.testing.assert_array_equal(
        load_image(tmp_path / "g.pgm"), np.repeat(as_unit(samples)[..., None], 3, axis=-1)
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_every_layout_and_row_filter(tmp_path, channels):
    samples = random_samples16(height=12, width=7, channels=channels)  # 12 rows: each of the 5 filters twice
    samples[:, :3] = 40000 + np.arange(3, dtype=np.uint16)[None, :, None]  # runs where Sub/Paeth predict well
    out = load_image(write_png16(tmp_path / "x.png", samples))
    expected = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=-1)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, as_unit(expected))


@pytest.mark.parametrize(
    "options",
    [{}, {"byteorder": ">"}, {"compression": "zlib", "predictor": True}, {"rowsperstrip": 3}, {"tile": (16, 16)}],
    ids=["little-endian", "big-endian", "deflate-predictor", "strips", "tiles"],
)
def test_16bit_rgb_tiff_keeps_full_precision(tmp_path, options):
    samples = random_samples16(height=10, width=6)
    tifffile.imwrite(tmp_path / "x.tif", samples, photometric="rgb", **options)
    np.testing.assert_array_equal(load_image(tmp_path / "x.tif"), as_unit(samples))


def test_16bit_planar_tiff_is_read_at_full_precision(tmp_path):
    samples = random_samples16()
    tifffile.imwrite(tmp_path / "p.tif", samples.transpose(2, 0, 1), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(load_image(tmp_path / "p.tif"), as_unit(samples))


def test_16bit_rgba_tiff_drops_alpha(tmp_path):
    samples = random_samples16(channels=4)
    tifffile.imwrite(tmp_path / "a.tif", samples, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(load_image(tmp_path / "a.tif"), as_unit(samples[..., :3]))


def test_16bit_cmyk_tiff_is_read_by_pillow_at_8_bits_with_a_warning(tmp_path, caplog):
    tifffile.imwrite(tmp_path / "c.tif", random_samples16(channels=4), photometric="separated")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = load_image(tmp_path / "c.tif")
    assert out.dtype == np.uint8 and out.shape == (11, 9, 3)
    assert "8-bit precision" in caplog.text


def test_float_tiff(tmp_path):
    values = RNG.random((5, 4), dtype=np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(load_image(tmp_path / "f.tif"), np.repeat(values[..., None], 3, axis=-1))
    Image.fromarray(values * 3, "F").save(tmp_path / "big.tif")
    with pytest.raises(ImageError, match=r"big\.tif.*outside \[0, 1\].*normalise"):
        load_image(tmp_path / "big.tif")


def test_load_tensor_layout(tmp_path):
    pixels = random_rgb()
    Image.fromarray(pixels).save(tmp_path / "a.png")
    tensor = load_tensor(tmp_path / "a.png")
    assert tensor.shape == (3, 13, 17) and tensor.dtype == torch.uint8 and tensor.is_contiguous()
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), pixels)
    wide = load_tensor(write_png16(tmp_path / "w.png", random_samples16()))
    assert wide.dtype == torch.float32 and wide.shape == (3, 11, 9) and wide.is_contiguous()


# ---- loading: orientation and colour management ------------------------------------------------------------


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_exif_orientation_is_applied(tmp_path, orientation):
    pixels = random_rgb(4, 6)
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif_block(orientation).tobytes())
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), ORIENTED[orientation](pixels))


def test_exif_rotated_jpeg(tmp_path):
    blocks = np.kron(RNG.integers(0, 256, (3, 5, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 48 x 80
    Image.fromarray(blocks).save(tmp_path / "r.jpg", quality=100, exif=exif_block(6).tobytes())
    out = load_image(tmp_path / "r.jpg")
    assert out.shape == (80, 48, 3)
    with Image.open(tmp_path / "r.jpg") as stored:
        np.testing.assert_array_equal(out, np.rot90(np.asarray(stored), -1))
    assert np.abs(out.astype(int) - np.rot90(blocks, -1).astype(int)).mean() < 5.0  # JPEG loss only


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
def test_16bit_png_orientation_is_applied(tmp_path, orientation):
    samples = random_samples16(height=5, width=8)
    path = write_png16(tmp_path / "o16.png", samples, exif=exif_block(orientation).tobytes())  # eXIf after IDAT
    out = load_image(path)
    assert out.flags.c_contiguous and out.flags.writeable
    np.testing.assert_array_equal(out, as_unit(ORIENTED[orientation](samples)))


@pytest.mark.parametrize("orientation", [3, 6])
def test_16bit_tiff_orientation_is_applied(tmp_path, orientation):
    samples = random_samples16(height=5, width=8)
    tifffile.imwrite(tmp_path / "o.tif", samples, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(load_image(tmp_path / "o.tif"), as_unit(ORIENTED[orientation](samples)))


@pytest.mark.parametrize("name", ["a.png", "a.jpg", "a.tif"])
def test_non_srgb_profile_is_converted(tmp_path, name):
    adobe = matrix_profile("Adobe RGB (1998) test")
    pixels = random_rgb(16, 16)
    Image.fromarray(pixels).save(
        tmp_path / name, icc_profile=adobe, **({"quality": 100} if name.endswith("jpg") else {})
    )
    with Image.open(tmp_path / name) as stored:
        expected = to_srgb_with(stored.convert("RGB"), adobe)
    out = load_image(tmp_path / name)
    np.testing.assert_array_equal(out, expected)
    assert np.abs(expected.astype(int) - pixels.astype(int)).mean() > 3  # the conversion did something


def test_srgb_profile_leaves_pixels_alone(tmp_path):
    pixels = random_rgb()
    Image.fromarray(pixels).save(tmp_path / "s.png", icc_profile=srgb_icc_profile())
    np.testing.assert_array_equal(load_image(tmp_path / "s.png"), pixels)


def test_grayscale_with_rgb_profile_is_taken_as_is(tmp_path, caplog):
    gray = random_rgb()[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png", icc_profile=matrix_profile("mismatched"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = load_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=-1))
    assert "does not fit" in caplog.text


def test_corrupt_profile_is_ignored_with_a_warning(tmp_path, caplog):
    pixels = random_rgb()
    Image.fromarray(pixels).save(tmp_path / "c.png", icc_profile=b"not an icc profile at all" * 8)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        np.testing.assert_array_equal(load_image(tmp_path / "c.png"), pixels)
    assert "unreadable" in caplog.text


@pytest.mark.parametrize("name", ["w.png", "w.tif"])
def test_16bit_with_non_srgb_profile_converts_at_8_bits(tmp_path, caplog, name):
    adobe = matrix_profile("Adobe RGB (1998) test")
    samples = random_samples16()
    if name.endswith(".png"):
        path = write_png16(tmp_path / name, samples, icc_profile=adobe)
    else:
        path = tmp_path / name
        tifffile.imwrite(path, samples, photometric="rgb", iccprofile=adobe)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = load_image(path)
    expected = to_srgb_with(Image.fromarray((samples >> 8).astype(np.uint8)), adobe)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.astype(np.float32) / np.float32(255.0))
    assert "8-bit precision" in caplog.text


def test_16bit_grayscale_keeps_full_precision_under_a_profile(tmp_path, caplog):
    samples = random_samples16(channels=1)
    path = write_png16(tmp_path / "g.png", samples, icc_profile=matrix_profile("Adobe RGB (1998) test"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = load_image(path)
    np.testing.assert_array_equal(out, np.repeat(as_unit(samples), 3, axis=-1))
    assert "8-bit precision" not in caplog.text


# ---- loading: errors ---------------------------------------------------------------------------------------


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(64, 64)).save(buffer, format=fmt)
    return buffer.getvalue()


def _tiff16(**options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, random_samples16(40, 30), photometric="rgb", **options)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("half.jpg", lambda: _half(_encoded("JPEG")), r"truncated or corrupt.*re-export"),
        ("half.png", lambda: _half(_encoded("PNG")), r"truncated or corrupt.*re-export"),
        ("head.png", lambda: _encoded("PNG")[:40], r"not an image Pillow can read.*convert it"),
        ("noise.jpg", lambda: RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes(), r"not an image.*convert it"),
        ("empty.png", lambda: b"", r"file is empty \(0 bytes\).*re-export"),
        ("half16.tif", lambda: _half(_tiff16()), r"truncated or corrupt.*re-export"),
        ("half16z.tif", lambda: _half(_tiff16(compression="zlib")), r"truncated or corrupt.*re-export"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content())
    with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')}: {message}"):
        load_image(tmp_path / name)


def test_truncated_16bit_png(tmp_path):
    data = save_image(tmp_path / "w.png", as_unit(random_samples16(40, 30)), bit_depth=16).read_bytes()
    (tmp_path / "half.png").write_bytes(_half(data))
    with pytest.raises(ImageError, match=r"half\.png: truncated or corrupt image data.*re-export"):
        load_image(tmp_path / "half.png")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such file; check the path"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="is a directory, not an image file"):
        load_image(tmp_path)
    assert issubclass(ImageError, ValueError)


def test_empty_image(tmp_path, monkeypatch):
    Image.fromarray(random_rgb()).save(tmp_path / "a.png")  # Pillow refuses to write or open 0 x 0 files itself
    monkeypatch.setattr(Image, "open", lambda path: Image.new("RGB", (0, 0)))
    with pytest.raises(ImageError, match=r"a\.png: image is empty \(0x0 pixels\)"):
        load_image(tmp_path / "a.png")


def test_pixel_limit(tmp_path, monkeypatch):
    Image.fromarray(random_rgb(10, 20)).save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png", max_pixels=200).shape == (10, 20, 3)
    with pytest.raises(
        ImageError, match=r"a\.png: 20x10 = 200 pixels is above the limit of 199 pixels.*set SPC_FAST_MAX_PIXELS"
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


@pytest.mark.parametrize("name", ["w.png", "w.tif"])
def test_pixel_limit_holds_for_16bit_files_before_the_codecs(tmp_path, monkeypatch, name):
    samples = random_samples16(10, 20)
    if name.endswith(".png"):
        write_png16(tmp_path / name, samples)
    else:
        tifffile.imwrite(tmp_path / name, samples, photometric="rgb")

    def no_decoding(*args, **kwargs):
        raise AssertionError("a codec decoded an image above the pixel limit")

    monkeypatch.setattr(spc_fast.imagefiles.highdepth.imagecodecs, "png_decode", no_decoding)
    monkeypatch.setattr(spc_fast.imagefiles.highdepth.tifffile.TiffPage, "asarray", no_decoding)
    with pytest.raises(ImageError, match=r"20x10 = 200 pixels is above the limit of 199 pixels"):
        load_image(tmp_path / name, max_pixels=199)


def test_pillows_own_bomb_limit_is_replaced_by_ours(tmp_path, monkeypatch):
    Image.fromarray(random_rgb(10, 20)).save(tmp_path / "a.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow alone would raise DecompressionBombError
    assert load_image(tmp_path / "a.png", max_pixels=1000).shape == (10, 20, 3)
    assert Image.MAX_IMAGE_PIXELS == 50
    with pytest.raises(ImageError, match="above the limit of 120"):
        load_image(tmp_path / "a.png", max_pixels=120)
    with pytest.raises(ImageError, match=r"a\.png: its pixel count is above the limit of 90 pixels"):
        load_image(tmp_path / "a.png", max_pixels=90)  # refused by Pillow's own check, reworded


# ---- no reliance on Pillow internals -----------------------------------------------------------------------


def _attribute_names(module: Path) -> set[str]:
    return {node.attr for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.Attribute)}


def test_no_pillow_private_attributes_or_hand_framed_chunks():
    """Pillow's tile descriptors and private names are internals a release may change; PNG chunks are framed by
    pypng, not by hand (no struct-packed lengths or CRCs)."""
    modules = sorted(Path(spc_fast.imagefiles.__file__).parent.glob("*.py"))
    assert {m.name for m in modules} >= {"decode.py", "encode.py", "highdepth.py", "opening.py", "atomic.py"}
    for module in modules:
        names = _attribute_names(module)
        private = {n for n in names if n.startswith("_") and not n.endswith("__")}
        assert not private, f"{module.name} reaches into private attributes {sorted(private)}"
        assert not names & {"tile", "tile_rawmodes", "rawmode", "crc32", "pack"}, f"{module.name}: {names}"
