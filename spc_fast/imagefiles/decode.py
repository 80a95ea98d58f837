"""Decoding image files to upright sRGB pixels (and their alpha), and reading the metadata an output carries over.

``read_photo`` returns the colour as (3, H, W) sRGB and the alpha channel beside it: EXIF orientation applied
to both, an embedded non-sRGB ICC profile converted to sRGB (colour only), every Pillow mode (grayscale,
palette, CMYK, 16-bit, float; with or without transparency) reduced to RGB + alpha. 8-bit files are decoded by
Pillow and give uint8; files of more than 8 bits per sample give float32 in [0, 1] at full precision (16-bit PNG
and TIFF samples come from the codecs in ``highdepth``, since Pillow's RGB modes hold 8 bits). Every failure
inside a decoder becomes an ``ImageError`` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, ImageOps

from spc_fast.imagefiles.highdepth import Samples, read_samples, read_tiff, tiff_icc_profile, tiff_size, upright
from spc_fast.imagefiles.opening import (
    ImageError,
    check_readable,
    decoding_failed,
    max_pixels_limit,
    open_image,
    out_of_memory,
)
from spc_fast.imagefiles.profiles import source_profile, to_srgb

logger = logging.getLogger(__name__)

# Pillow modes of more than 8 bits that Pillow decodes itself (16-bit gray of other formats, 32-bit int, float).
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_GRAY_WITH_ALPHA = ("LA", "La", "L", "1")
# EXIF tags that describe the source file's pixel layout, not the photo: never carried to an output file.
_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 34675)
_ORIENTATION = ExifTags.Base.Orientation


@dataclass(frozen=True)
class Photo:
    """A decoded image file. pixels: (3, H, W) sRGB, uint8 (8-bit sources) or float32 in [0, 1]. alpha:
    (1, H, W) of the same dtype and scale (opacity, not premultiplied), or None when the file has no
    transparency (no alpha channel, or one that is opaque everywhere). bit_depth: 8 or 16, the source's depth
    (16 for every source of more than 8 bits per sample, floating point included)."""

    pixels: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int


@dataclass(frozen=True)
class ImageMetadata:
    """What ``save_image`` carries from a source file to its output.

    exif: the source's EXIF block with the orientation reset to 1 (loaded pixels are already upright) and the
    source's own pixel-layout tags removed; None when it had none. icc_profile: the profile the source
    embedded (pixels are sRGB after loading, so an output gets an sRGB profile when this is set).
    """

    path: Path
    exif: bytes | None
    icc_profile: bytes | None


def _checked(samples: np.ndarray, path: Path) -> np.ndarray:
    """Samples of more than 8 bits as uint16, or as float32 checked to lie in [0, 1] (other integer types are
    clipped into 16 bits)."""
    if samples.dtype.kind != "f":
        return samples if samples.dtype == np.uint16 else np.clip(samples, 0, 65535).astype(np.uint16)
    samples = samples.astype(np.float32)
    if not np.isfinite(samples).all() or samples.min() < 0.0 or samples.max() > 1.0:
        finite = samples[np.isfinite(samples)]
        found = f"{finite.min():g} to {finite.max():g}" if finite.size else "no finite value"
        raise ImageError(
            f"{path}: floating-point image with values outside [0, 1] (found {found}, or NaN/inf); "
            "normalise it to [0, 1] or save it as 8/16-bit integers"
        )
    return samples


def _unit(samples: np.ndarray) -> np.ndarray:
    return samples if samples.dtype == np.float32 else samples.astype(np.float32) / np.float32(65535.0)


def _without_opaque(alpha: np.ndarray | None) -> np.ndarray | None:
    full = 255 if alpha is not None and alpha.dtype == np.uint8 else 1.0
    return None if alpha is None or alpha.min() >= full else alpha


def _eight_bit(samples: np.ndarray) -> Image.Image:
    """[H, W, 3] uint16 or float samples as the 8-bit RGB image that colour management can convert."""
    if samples.dtype == np.uint16:
        return Image.fromarray((samples >> 8).astype(np.uint8))
    return Image.fromarray(np.round(samples * 255.0).astype(np.uint8))


def _wide(samples: Samples, orientation: int, profile: ImageCms.ImageCmsProfile | None, path: Path):
    """Upright float32 [H, W, 3] sRGB and [H, W] alpha (or None) from samples of more than 8 bits."""
    colour = _checked(upright(samples.colour, orientation), path)
    alpha = None if samples.alpha is None else _unit(_checked(upright(samples.alpha, orientation), path))
    if colour.ndim == 2:  # a gray profile is not applied: LittleCMS has no 16-bit gray -> RGB path in Pillow
        return np.repeat(_unit(colour)[..., None], 3, axis=-1), alpha
    if profile is None:
        return _unit(colour), alpha
    logger.warning("%s: 16-bit image with a non-sRGB ICC profile, converted at 8-bit precision", path)
    return to_srgb(_eight_bit(colour), profile, path).astype(np.float32) / np.float32(255.0), alpha


def _eight(image: Image.Image, profile: ImageCms.ImageCmsProfile | None, path: Path):
    """Upright uint8 [H, W, 3] sRGB and [H, W] alpha (or None) from an 8-bit Pillow image."""
    image.load()  # the full decode: a truncated file fails here
    ImageOps.exif_transpose(image, in_place=True)
    alpha = None
    if image.has_transparency_data:
        with_alpha = image.convert("LA" if image.mode in _GRAY_WITH_ALPHA else "RGBA")
        alpha = np.array(with_alpha.getchannel("A"))
        image = with_alpha.convert(with_alpha.mode[:-1])
    elif image.mode in ("RGBX", "P"):
        image = image.convert("RGB")
    return to_srgb(image, profile, path), alpha


def _decode(path: Path, limit: int) -> tuple[np.ndarray, np.ndarray | None, int]:
    """[H, W, 3] sRGB, [H, W] alpha of the same dtype (or None) and the source's bit depth."""
    with contextlib.ExitStack() as stack:
        image = open_image(path, limit, stack)
        if image is None:
            tiff = read_tiff(path, limit)
            return *_wide(tiff.samples, tiff.orientation, source_profile(tiff.icc_profile, path), path), 16
        profile = source_profile(image.info.get("icc_profile"), path)
        samples = read_samples(image, path)
        if samples is None and image.mode in _WIDE_MODES:
            image.load()
            samples = Samples(np.asarray(image), None)
        if samples is None:
            return *_eight(image, profile, path), 8
        return *_wide(samples, image.getexif().get(_ORIENTATION, 1), profile, path), 16


def _header_size(path: Path) -> tuple[int, int, int] | None:
    """Width, height and channel count (at least 3) from the header alone, for the out-of-memory message."""
    with contextlib.suppress(Exception), Image.open(path) as image:
        return *image.size, max(len(image.getbands()), 3)
    with contextlib.suppress(Exception):
        return tiff_size(path)
    return None


def _read(
    path: str | os.PathLike, max_pixels: int | None, channels_first: bool
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Colour ([H, W, 3], or [3, H, W] when ``channels_first``), alpha ([H, W] or None) and bit depth, every
    failure (out of memory included, also while laying the samples out) an ``ImageError``."""
    path = check_readable(path)
    limit = max_pixels_limit(max_pixels)
    try:
        colour, alpha, bit_depth = _decode(path, limit)
        colour = np.ascontiguousarray(colour.transpose(2, 0, 1) if channels_first else colour)
        alpha = _without_opaque(alpha)
        alpha = None if alpha is None else np.ascontiguousarray(alpha)
    except ImageError:
        raise
    except MemoryError as error:
        raise out_of_memory(path, _header_size(path)) from error
    except Exception as error:  # any decoder failure is this file's failure, never the caller's crash
        raise decoding_failed(path, error) from error
    return colour, alpha, bit_depth


def read_photo(path: str | os.PathLike, *, max_pixels: int | None = None) -> Photo:
    """Read an image file as upright sRGB colour and its alpha channel (see ``Photo``).

    Images above ``max_pixels`` (default ``$SPC_FAST_MAX_PIXELS`` or DEFAULT_MAX_PIXELS) are refused before
    decoding, and so are files of several frames (animations, multi-page TIFFs). Every problem (missing file,
    not a regular file, unreadable, truncated or corrupt data, a decoder failure, not enough memory) raises
    ``ImageError`` (a ValueError) naming the file and the fix.
    """
    colour, alpha, bit_depth = _read(path, max_pixels, channels_first=True)
    return Photo(
        pixels=torch.from_numpy(colour),
        alpha=None if alpha is None else torch.from_numpy(alpha)[None],
        bit_depth=bit_depth,
    )


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H x W x 3 sRGB RGB (``read_photo``'s colour, as a numpy array).

    uint8 for 8-bit sources and float32 in [0, 1] for 16-bit (and floating-point) sources, at full precision.
    EXIF orientation is applied; an embedded ICC profile that is not sRGB (judged by content) is converted to
    sRGB with LittleCMS (perceptual intent). Grayscale is replicated to three channels; alpha is dropped, the
    colour kept as stored, not composited (``read_photo`` returns it); palettes are expanded. A 16-bit colour
    file with a non-sRGB profile is converted at 8-bit precision (Pillow's LittleCMS binding has no 16-bit RGB
    mode), with a warning; 16-bit grayscale keeps its full precision and its profile is not applied. Errors
    as ``read_photo``.
    """
    return _read(path, max_pixels, channels_first=False)[0]


def load_tensor(path: str | os.PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """``load_image`` as a contiguous (3, H, W) tensor: uint8 (8-bit sources) or float32 in [0, 1]."""
    return torch.from_numpy(_read(path, max_pixels, channels_first=True)[0])


def read_metadata(path: str | os.PathLike) -> ImageMetadata:
    """The EXIF and ICC data that ``save_image(..., source=...)`` carries over (pixels are not decoded)."""
    path = check_readable(path)
    with contextlib.ExitStack() as stack:
        image = open_image(path, sys.maxsize, stack)
        if image is None:  # a TIFF only tifffile reads: its profile is carried, its tags are not read as EXIF
            return ImageMetadata(path=path, exif=None, icc_profile=tiff_icc_profile(path))
        icc = image.info.get("icc_profile") or None
        try:
            exif = image.getexif()
            for tag in _LAYOUT_TAGS:
                exif.pop(tag, None)
            if _ORIENTATION in exif:
                exif[_ORIENTATION] = 1
            exif_bytes = exif.tobytes() if len(exif) else None
        except (OSError, SyntaxError, ValueError, struct.error, TypeError) as error:
            logger.warning("%s: EXIF data is unreadable (%s); it will not be carried over", path, error)
            exif_bytes = None
    return ImageMetadata(path=path, exif=exif_bytes, icc_profile=icc)
