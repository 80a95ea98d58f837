"""Samples of more than 8 bits per channel, decoded and encoded by maintained codecs rather than by Pillow.

Pillow's RGB modes hold 8 bits per sample. A 16-bit PNG or a TIFF of more than 8 bits per sample is still
opened by Pillow (for its size, EXIF and ICC profile), but its samples are decoded here: PNG by libpng through
imagecodecs, TIFF by tifffile. 16-bit PNG output is encoded by libpng too, and pypng's chunk API places the EXIF
and ICC chunks in front of the image data.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import png
import tifffile
from PIL import Image

from spc_fast.imagefiles.opening import ImageError, corrupt_data

logger = logging.getLogger(__name__)

# What the codecs raise on truncated or corrupt data; imagecodecs has one RuntimeError subclass per codec.
_CODEC_ERRORS = (RuntimeError, png.Error, tifffile.TiffFileError)

# OpenCV's settings for 16-bit PNG: on noisy photos about 4x faster than zlib level 6, at the same file size.
_PNG_OPTIONS = {"level": 1, "strategy": imagecodecs.PNG.STRATEGY.RLE, "filter": imagecodecs.PNG.FILTER.SUB}
_TIFF_COLOURS = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
_BITS_PER_SAMPLE = 258

# EXIF orientation -> the array operation that turns the stored [H, W, ...] samples upright.
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),  # stored sideways, shown turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def read_samples(image: Image.Image, path: Path) -> np.ndarray | None:
    """The samples of a 16-bit PNG or of a TIFF with more than 8 bits per sample, as stored (not yet turned
    upright): [H, W] gray or [H, W, 3] colour, alpha and other extra channels dropped, in the file's dtype.

    None for every other file (Pillow decodes those), and for TIFFs in a colour space other than gray or RGB
    (CMYK, Lab, YCbCr, palette), which Pillow then reads at 8-bit precision, with a warning.
    """
    try:
        if image.format == "PNG" and _png_bit_depth(path) == 16:
            samples = imagecodecs.png_decode(path.read_bytes())  # [H, W] or [H, W, channels]
        elif image.format == "TIFF" and max(image.tag_v2.get(_BITS_PER_SAMPLE, (8,))) > 8:
            samples = _read_tiff(path)
        else:
            samples = None
    except _CODEC_ERRORS as error:
        raise corrupt_data(path, error) from error
    return None if samples is None else _colour_channels(samples, path)


def _png_bit_depth(path: Path) -> int:
    with path.open("rb") as file:
        _, header = png.Reader(file=file).chunk()  # IHDR, the first chunk of every PNG
    return header[8]  # IHDR: width (4 bytes), height (4), bit depth (1), colour type (1), ...


def _read_tiff(path: Path) -> np.ndarray | None:
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        if page.photometric not in _TIFF_COLOURS:
            logger.warning(
                "%s: %d-bit %s TIFF is read by Pillow at 8-bit precision only",
                path,
                page.bitspersample,
                page.photometric.name,
            )
            return None
        samples, axes = page.asarray(), page.axes  # axes e.g. "YX", "YXS" (interleaved), "SYX" (planar)
    return np.moveaxis(samples, axes.index("S"), -1) if "S" in axes else samples


def _colour_channels(samples: np.ndarray, path: Path) -> np.ndarray:
    if samples.ndim == 2:
        return samples
    if samples.ndim == 3 and samples.shape[-1] <= 2:  # gray, gray + alpha
        return samples[..., 0]
    if samples.ndim == 3:  # RGB, RGB + alpha or extra samples
        return samples[..., :3]
    raise ImageError(
        f"{path}: samples of shape {samples.shape} are not one image (gray or RGB); "
        "save the first image of the stack as its own file"
    )


def upright(samples: np.ndarray, orientation: int) -> np.ndarray:
    """[H, W] or [H, W, C] samples turned as EXIF ``orientation`` says (1 or an unknown value: unchanged)."""
    turn = _UPRIGHT.get(orientation)
    return samples if turn is None else turn(samples)


def write_png16(file: BinaryIO, pixels: np.ndarray, exif: bytes | None, icc_profile: bytes | None) -> None:
    """Encode [H, W, 3] uint16 pixels as a 16-bit RGB PNG into ``file``, with an eXIf chunk holding ``exif``
    and an iCCP chunk holding ``icc_profile`` (under the name "sRGB") when they are given."""
    encoded = imagecodecs.png_encode(np.ascontiguousarray(pixels), **_PNG_OPTIONS)  # libpng takes C order
    chunks = list(png.Reader(bytes=encoded).chunks())
    metadata = []
    if icc_profile:
        # profile name, NUL separator, compression method 0 (deflate), compressed profile
        metadata.append((b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        metadata.append((b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    png.write_chunks(file, [chunks[0], *metadata, *chunks[1:]])  # after IHDR, before the image data
