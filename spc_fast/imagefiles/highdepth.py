"""Samples of more than 8 bits per channel, decoded and encoded by maintained codecs rather than by Pillow.

Pillow's RGB modes hold 8 bits per sample. A 16-bit PNG or a TIFF of more than 8 bits per sample is still
opened by Pillow (for its size, EXIF and ICC profile), but its samples are decoded here: PNG by libpng through
imagecodecs, TIFF by tifffile, which also reads the TIFFs Pillow cannot open at all (floating-point RGB, ...).
16-bit PNG output is encoded by libpng too, and pypng's chunk API places the EXIF and ICC chunks in front of
the image data.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import imagecodecs
import numpy as np
import png
import tifffile
from PIL import Image

from spc_fast.imagefiles.opening import ImageError, check_frames, check_size, corrupt_data

logger = logging.getLogger(__name__)

# What the codecs raise on truncated or corrupt data; imagecodecs has one RuntimeError subclass per codec.
_CODEC_ERRORS = (RuntimeError, png.Error, tifffile.TiffFileError)

# OpenCV's settings for 16-bit PNG: on noisy photos about 4x faster than zlib level 6, at the same file size.
_PNG_OPTIONS = {"level": 1, "strategy": imagecodecs.PNG.STRATEGY.RLE, "filter": imagecodecs.PNG.FILTER.SUB}
_TIFF_COLOURS = (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB)
_TIFF_ALPHAS = (tifffile.EXTRASAMPLE.ASSOCALPHA, tifffile.EXTRASAMPLE.UNASSALPHA)
_BITS_PER_SAMPLE, _ORIENTATION, _ICC_PROFILE = 258, 274, 34675

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


@dataclass(frozen=True)
class Samples:
    """Samples as stored (not yet upright), in the file's dtype: colour [H, W] (gray) or [H, W, 3], alpha
    [H, W] or None (unassociated: colour is never premultiplied here)."""

    colour: np.ndarray
    alpha: np.ndarray | None


@dataclass(frozen=True)
class TiffImage:
    """A TIFF read by tifffile alone: its samples and what Pillow would otherwise have told."""

    samples: Samples
    orientation: int
    icc_profile: bytes | None


def read_samples(image: Image.Image, path: Path) -> Samples | None:
    """The samples of a 16-bit PNG or of a TIFF with more than 8 bits per sample.

    None for every other file (Pillow decodes those), and for TIFFs in a colour space other than gray or RGB
    (CMYK, Lab, YCbCr, palette), which Pillow then reads at 8-bit precision, with a warning.
    """
    try:
        if image.format == "PNG" and _png_bit_depth(path) == 16:
            return _split(imagecodecs.png_decode(path.read_bytes()), path, premultiplied=False)
        if image.format == "TIFF" and max(image.tag_v2.get(_BITS_PER_SAMPLE, (8,))) > 8:
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
                return _tiff_samples(page, path)
    except _CODEC_ERRORS as error:
        raise corrupt_data(path, error) from error
    return None


def read_tiff(path: Path, limit: int) -> TiffImage:
    """A TIFF that Pillow cannot open (floating-point RGB, for one), read by tifffile: size and frames are
    checked against ``limit`` before any sample is decoded."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            check_size(path, page.imagewidth, page.imagelength, limit)
            check_frames(path, sum(not p.is_reduced for p in tiff.pages))
            if page.photometric not in _TIFF_COLOURS:
                raise ImageError(
                    f"{path}: {page.dtype} {page.photometric.name} TIFF cannot be read; "
                    "save it as RGB or grayscale"
                )
            orientation, icc = page.tags.get(_ORIENTATION), page.tags.get(_ICC_PROFILE)
            return TiffImage(
                _tiff_samples(page, path),
                int(orientation.value) if orientation is not None else 1,
                bytes(icc.value) if icc is not None else None,
            )
    except _CODEC_ERRORS as error:
        raise corrupt_data(path, error) from error


def tiff_icc_profile(path: Path) -> bytes | None:
    """The ICC profile of a TIFF's first page (from its tags, no samples decoded)."""
    try:
        with tifffile.TiffFile(path) as tiff:
            icc = tiff.pages[0].tags.get(_ICC_PROFILE)
            return bytes(icc.value) if icc is not None else None
    except _CODEC_ERRORS as error:
        raise corrupt_data(path, error) from error


def tiff_size(path: Path) -> tuple[int, int, int]:
    """Width, height and channel count (at least 3) of a TIFF's first page, from its tags."""
    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages[0]
        return page.imagewidth, page.imagelength, max(page.samplesperpixel, 3)


def _png_bit_depth(path: Path) -> int:
    with path.open("rb") as file:
        _, header = png.Reader(file=file).chunk()  # IHDR, the first chunk of every PNG
    return header[8]  # IHDR: width (4 bytes), height (4), bit depth (1), colour type (1), ...


def _tiff_samples(page: tifffile.TiffPage, path: Path) -> Samples:
    samples, axes = page.asarray(), page.axes  # axes e.g. "YX", "YXS" (interleaved), "SYX" (planar)
    samples = np.moveaxis(samples, axes.index("S"), -1) if "S" in axes else samples
    extras = tuple(page.extrasamples or ())
    has_alpha = bool(extras) and extras[0] in _TIFF_ALPHAS  # other extra samples are not transparency
    channels = (3 if page.photometric == tifffile.PHOTOMETRIC.RGB else 1) + has_alpha
    samples = samples if samples.ndim == 2 else samples[..., :channels]
    return _split(samples, path, premultiplied=has_alpha and extras[0] == tifffile.EXTRASAMPLE.ASSOCALPHA)


def _split(samples: np.ndarray, path: Path, premultiplied: bool) -> Samples:
    """[H, W] gray, [H, W, 2] gray + alpha, [H, W, 3] RGB or [H, W, 4] RGB + alpha, as colour and alpha."""
    if samples.ndim == 2:
        return Samples(samples, None)
    if samples.ndim != 3 or samples.shape[-1] > 4:
        raise ImageError(
            f"{path}: samples of shape {samples.shape} are not one image (gray or RGB, with or without alpha); "
            "save the first image of the stack as its own file"
        )
    channels = samples.shape[-1]
    colour = samples[..., 0] if channels <= 2 else samples[..., :3]
    if channels in (1, 3):
        return Samples(colour, None)
    alpha = samples[..., -1]
    return Samples(_unpremultiply(colour, alpha) if premultiplied else colour, alpha)


def _unpremultiply(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour stored multiplied by alpha (TIFF associated alpha) divided back; fully transparent stays 0."""
    weight = alpha.astype(np.float64)[..., None] if colour.ndim == 3 else alpha.astype(np.float64)
    unit = np.divide(colour.astype(np.float64), weight, out=np.zeros(colour.shape), where=weight > 0)
    unit = np.clip(unit, 0.0, 1.0)
    if colour.dtype.kind == "f":
        return unit.astype(colour.dtype)
    return (unit * np.iinfo(colour.dtype).max).round().astype(colour.dtype)


def upright(samples: np.ndarray, orientation: int) -> np.ndarray:
    """[H, W] or [H, W, C] samples turned as EXIF ``orientation`` says (1 or an unknown value: unchanged)."""
    turn = _UPRIGHT.get(orientation)
    return samples if turn is None else turn(samples)


def write_png16(file: BinaryIO, pixels: np.ndarray, exif: bytes | None, icc_profile: bytes | None) -> None:
    """Encode [H, W, 3] (RGB) or [H, W, 4] (RGBA) uint16 pixels as a 16-bit PNG into ``file``, with an eXIf
    chunk holding ``exif`` and an iCCP chunk holding ``icc_profile`` (named "sRGB") when they are given."""
    encoded = imagecodecs.png_encode(np.ascontiguousarray(pixels), **_PNG_OPTIONS)  # libpng takes C order
    chunks = list(png.Reader(bytes=encoded).chunks())
    metadata = []
    if icc_profile:
        # profile name, NUL separator, compression method 0 (deflate), compressed profile
        metadata.append((b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        metadata.append((b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    png.write_chunks(file, [chunks[0], *metadata, *chunks[1:]])  # after IHDR, before the image data
