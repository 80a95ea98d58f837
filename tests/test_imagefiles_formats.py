"""spc_fast.imagefiles, what can be read: every format this install decodes (``READABLE``), one still image per
file (animations and pages refused by name, never cut to their first frame), every decoder failure an
``ImageError`` naming the file, and nothing that is not a regular file opened at all."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile
from imagefile_cases import RNG, random_rgb, random_samples16
from PIL import Image, features

import spc_fast.imagefiles.decode
from spc_fast.imagefiles import FORMATS, READABLE, ImageError, load_image, read_metadata, read_photo, save_image

FRAMES = r"has 3 frames \(an animation or several pages\); spc-fast edits still images: extract the frame you want"


def _frames() -> list[Image.Image]:
    return [Image.fromarray(random_rgb(8, 9) // (i + 1)) for i in range(3)]


# ---- READABLE ---------------------------------------------------------------------------------------------


def test_readable_lists_what_this_install_decodes():
    assert set(FORMATS) <= READABLE
    assert {".bmp", ".gif", ".qoi", ".dds", ".tga", ".ppm", ".psd", ".jp2"} <= READABLE
    assert (".avif" in READABLE) == bool(features.check("avif"))
    assert not {".pdf", ".mpg", ".bufr", ".h5", ".wmf", ".txt"} & READABLE  # write-only, no decoder, stubs
    assert all(extension == extension.lower() and extension.startswith(".") for extension in READABLE)


@pytest.mark.parametrize(
    ("name", "mode"), [("a.bmp", "RGB"), ("a.qoi", "RGBA"), ("a.dds", "RGBA"), ("a.tga", "RGB"), ("a.ppm", "RGB")]
)
def test_other_formats_load(tmp_path, name, mode):
    pixels = random_rgb()
    Image.fromarray(pixels).convert(mode).save(tmp_path / name)
    np.testing.assert_array_equal(load_image(tmp_path / name), pixels)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_loads(tmp_path):
    pixels = np.kron(random_rgb(4, 4), np.ones((8, 8, 1), np.uint8))
    Image.fromarray(pixels).save(tmp_path / "a.avif", quality=100)
    assert np.abs(load_image(tmp_path / "a.avif").astype(int) - pixels).mean() < 8


# ---- frames -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["anim.gif", "anim.webp", "anim.png", "pages.tif"])
def test_animations_and_pages_are_refused_by_name(tmp_path, name):
    first, *rest = _frames()
    first.save(tmp_path / name, save_all=True, append_images=rest)
    with pytest.raises(ImageError, match=rf"{name.replace('.', '[.]')}: {FRAMES}"):
        read_photo(tmp_path / name)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_multi_page_tiffs_of_more_than_8_bits_are_refused(tmp_path, dtype):
    pages = random_samples16(8, 9)[None].repeat(3, axis=0)
    pages = pages.astype(dtype) / 65535 if dtype == np.float32 else pages
    tifffile.imwrite(tmp_path / "p.tif", pages, photometric="rgb")
    with pytest.raises(ImageError, match=rf"p\.tif: {FRAMES}"):
        load_image(tmp_path / "p.tif")


def test_reduced_resolution_tiff_page_is_a_preview_not_a_frame(tmp_path):
    samples = random_samples16(8, 9)
    with tifffile.TiffWriter(tmp_path / "t.tif") as tiff:
        tiff.write(samples, photometric="rgb")
        tiff.write(samples[::2, ::2], photometric="rgb", subfiletype=1)  # a thumbnail
    assert load_image(tmp_path / "t.tif").shape == (8, 9, 3)


def test_one_frame_gif_is_a_still_image(tmp_path):
    indices = np.arange(8 * 9, dtype=np.uint8).reshape(8, 9) % 5
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "one.gif", transparency=4)
    photo = read_photo(tmp_path / "one.gif")
    np.testing.assert_array_equal(photo.pixels.permute(1, 2, 0).numpy()[indices != 4], palette[indices][indices != 4])
    np.testing.assert_array_equal(photo.alpha[0].numpy(), np.where(indices == 4, 0, 255))


def test_multi_picture_jpeg_edits_the_primary_image_with_a_warning(tmp_path, caplog):
    first, second, _ = _frames()
    first.save(tmp_path / "a.mpo", format="MPO", save_all=True, append_images=[second])
    assert load_image(tmp_path / "a.mpo").shape == (8, 9, 3)
    assert "holds 2 images" in caplog.text and "not carried over" in caplog.text


# ---- decoder failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error", [TypeError("'NoneType' object is not subscriptable"), KeyError("tile"), AttributeError("palette")]
)
def test_any_decoder_failure_is_an_image_error_naming_the_file(tmp_path, monkeypatch, error):
    Image.fromarray(random_rgb()).save(tmp_path / "odd.gif")

    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image.Image, "load", broken)
    failed = rf"odd\.gif: the decoder failed on this file \({type(error).__name__}: .*convert it"
    with pytest.raises(ImageError, match=failed):
        read_photo(tmp_path / "odd.gif")


def test_failure_while_opening_is_an_image_error(tmp_path, monkeypatch):
    Image.fromarray(random_rgb()).save(tmp_path / "odd.qoi")

    def broken(*args, **kwargs):
        raise TypeError("bad header field")

    monkeypatch.setattr(Image, "open", broken)
    with pytest.raises(ImageError, match=r"odd\.qoi: the decoder failed on this file \(TypeError: bad header field"):
        read_photo(tmp_path / "odd.qoi")
    with pytest.raises(ImageError, match=r"odd\.qoi: the decoder failed"):
        read_metadata(tmp_path / "odd.qoi")


def test_interrupts_are_not_swallowed_as_decoder_failures(tmp_path, monkeypatch):
    Image.fromarray(random_rgb()).save(tmp_path / "a.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read_photo(tmp_path / "a.png")


def test_out_of_memory_says_what_the_image_needs_and_how_to_lower_it(tmp_path, monkeypatch):
    Image.fromarray(random_rgb(30, 40)).save(tmp_path / "big.png")
    tifffile.imwrite(tmp_path / "big.tif", RNG.random((30, 40, 4), dtype=np.float32), photometric="rgb")

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(spc_fast.imagefiles.decode, "_eight", exhausted)
    monkeypatch.setattr(spc_fast.imagefiles.decode, "_wide", exhausted)
    for name, channels in [("big.png", 3), ("big.tif", 4)]:  # a TIFF only tifffile reads
        with pytest.raises(ImageError) as caught:
            read_photo(tmp_path / name)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path / name}: out of memory: the image needs about 0.0 GiB")
        assert f"(40 x 30 pixels x {channels} channels x 4 bytes)" in message
        assert "use a smaller image, or set SPC_FAST_MAX_PIXELS=<count> below 1200" in message


# ---- not regular files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_not_regular_files(device):
    if not os.path.exists(device) or not stat.S_ISCHR(os.stat(device).st_mode):
        pytest.skip(f"no {device} here")
    with pytest.raises(ImageError, match=rf"{device}: is not a regular file \(a device, named pipe or socket\)"):
        read_photo(device)


def test_named_pipe_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would block until a writer appears
    with pytest.raises(ImageError, match=r"pipe\.png: is not a regular file"):
        load_image(tmp_path / "pipe.png")
    with pytest.raises(ImageError, match=r"pipe\.png: is not a regular file"):
        read_metadata(tmp_path / "pipe.png")


def test_devices_and_pipes_are_never_written_to(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "null.png").symlink_to("/dev/null")
    for target in [tmp_path / "pipe.png", tmp_path / "null.png"]:
        with pytest.raises(ImageError, match="is not a regular file"):
            save_image(target, random_rgb(), overwrite=True)
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe.png").st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_path_under_a_file_is_no_such_file(tmp_path):
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(ImageError, match=r"file\.png/a\.png: no such file"):
        read_photo(tmp_path / "file.png" / "a.png")


def test_dangling_symlink_is_named_as_such(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"link\.png: is a symbolic link to a missing file \(.*gone\.png\)"):
        read_photo(tmp_path / "link.png")


# ---- messages for command-line users ----------------------------------------------------------------------


def test_messages_name_flags_and_variables_not_python_keywords(tmp_path):
    Image.fromarray(random_rgb(10, 20)).save(tmp_path / "a.png")
    messages = []
    for attempt in (
        lambda: load_image(tmp_path / "a.png", max_pixels=10),
        lambda: save_image(tmp_path / "a.png", random_rgb()),
        lambda: save_image(tmp_path / "a.png", random_rgb(), source=tmp_path / "a.png"),
    ):
        with pytest.raises(ImageError) as caught:
            attempt()
        messages.append(str(caught.value))
    assert "SPC_FAST_MAX_PIXELS" in messages[0]
    assert "--overwrite" in messages[1] and "--skip-existing" in messages[1] and "--overwrite" in messages[2]
    assert not any("=True" in m or "max_pixels" in m or "overwrite=" in m for m in messages), messages
