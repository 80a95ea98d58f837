"""Decoding image files to upright sRGB pixels, and reading the metadata an output carries over.

``load_image`` returns H x W x 3 sRGB: EXIF orientation applied, an embedded non-sRGB ICC profile converted
to sRGB, every Pillow mode (grayscale, alpha, palette, CMYK, 16-bit, float) reduced to RGB. 8-bit files are
decoded by Pillow and give uint8; files of more than 8 bits per sample give float32 in [0, 1] at full precision
(16-bit PNG and TIFF samples come from the codecs in ``highdepth``, since Pillow's RGB modes hold 8 bits).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import ExifTags, Image, ImageCms, ImageOps

from spc_fast.imagefiles.highdepth import read_samples, upright
from spc_fast.imagefiles.opening import (
    CORRUPT_DATA_ERRORS,
    ImageError,
    check_readable,
    corrupt_data,
    max_pixels_limit,
    open_image,
)

logger = logging.getLogger(__name__)

# Pillow modes of more than 8 bits that Pillow decodes itself (16-bit gray of other formats, 32-bit int, float).
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# EXIF tags that describe the source file's pixel layout, not the photo: never carried to an output file.
_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 34675)
_ORIENTATION = ExifTags.Base.Orientation


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


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def srgb_icc_profile() -> bytes:
    """The sRGB ICC profile written into output files (LittleCMS's built-in sRGB)."""
    return _srgb_profile().tobytes()


def _source_profile(image: Image.Image, path: Path) -> ImageCms.ImageCmsProfile | None:
    """The embedded ICC profile when it is not sRGB (so pixels need converting), else None."""
    icc = image.info.get("icc_profile")
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile)
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError) as error:
        logger.warning("%s: embedded ICC profile is unreadable (%s); pixels taken as sRGB", path, error)
        return None
    return None if "srgb" in description.lower() else profile


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(
            f"{path}: Pillow cannot convert mode {image.mode} to RGB; save the file as RGB"
        ) from error


def _to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile | None, path: Path) -> np.ndarray:
    """8-bit Pillow image of any mode -> [H, W, 3] uint8 sRGB. Alpha is dropped, not composited."""
    if image.mode in ("LA", "La", "1"):
        image = image.convert("L")
    elif image.mode in ("RGBA", "RGBa", "RGBX", "P", "PA"):
        image = image.convert("RGB")
    if profile is not None and image.mode in ("L", "RGB", "CMYK"):
        try:
            transform = ImageCms.buildTransform(profile, _srgb_profile(), image.mode, "RGB")
            image = ImageCms.applyTransform(image, transform)
        except ImageCms.PyCMSError as error:
            logger.warning(
                "%s: ICC profile does not fit its %s pixels (%s); taken as sRGB", path, image.mode, error
            )
    return np.array(_to_rgb(image, path))


def _wide_samples(image: Image.Image, path: Path) -> np.ndarray | None:
    """Upright samples of a file with more than 8 bits per sample: [H, W] or [H, W, 3], uint16 or float32 in
    [0, 1] (other integer types clipped into 16 bits); None for an 8-bit file."""
    samples = read_samples(image, path)
    if samples is None and image.mode in _WIDE_MODES:
        image.load()
        samples = np.asarray(image)
    if samples is None:
        return None
    if samples.dtype.kind == "f":
        samples = samples.astype(np.float32)
        if not np.isfinite(samples).all() or samples.min() < 0.0 or samples.max() > 1.0:
            raise ImageError(
                f"{path}: floating-point image with values outside [0, 1] (or NaN/inf); "
                "normalise it to [0, 1] or save it as 8/16-bit integers"
            )
    elif samples.dtype != np.uint16:
        samples = np.clip(samples, 0, 65535).astype(np.uint16)
    return np.ascontiguousarray(upright(samples, image.getexif().get(_ORIENTATION, 1)))


def _eight_bit(samples: np.ndarray) -> Image.Image:
    """[H, W, 3] uint16 or float samples as the 8-bit RGB image that colour management can convert."""
    if samples.dtype == np.uint16:
        return Image.fromarray((samples >> 8).astype(np.uint8))
    return Image.fromarray(np.round(samples * 255.0).astype(np.uint8))


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H x W x 3 sRGB RGB.

    Returns uint8 for 8-bit sources and float32 in [0, 1] for 16-bit (and floating-point) sources, at full
    precision. EXIF orientation is applied; an embedded non-sRGB ICC profile (Adobe RGB, Display P3, CMYK...)
    is converted to sRGB with LittleCMS (perceptual intent). Grayscale is replicated to three channels; alpha
    channels are dropped (colour kept as stored, not composited onto a background); palettes are expanded.
    Multi-frame files give their first frame. A 16-bit colour file with a non-sRGB profile is converted at
    8-bit precision (Pillow's LittleCMS binding has no 16-bit RGB mode) and returned as float32, with a
    warning; 16-bit grayscale keeps its full precision and its profile is not applied.

    Images above ``max_pixels`` (default ``$SPC_FAST_MAX_PIXELS`` or DEFAULT_MAX_PIXELS) are refused before
    decoding. Every problem (missing file, directory, unreadable, truncated or corrupt data, empty or
    oversized image) raises ``ImageError`` (a ValueError) naming the file and the fix.
    """
    path = check_readable(path)
    limit = max_pixels_limit(max_pixels)
    with contextlib.ExitStack() as stack:
        try:
            image = open_image(path, limit, stack)
            profile = _source_profile(image, path)
            samples = _wide_samples(image, path)
            if samples is None:
                image.load()  # the full decode: a truncated file fails here
                ImageOps.exif_transpose(image, in_place=True)
                return _to_srgb(image, profile, path)
            if profile is not None and samples.ndim == 3:
                logger.warning(
                    "%s: 16-bit image with a non-sRGB ICC profile, converted at 8-bit precision", path
                )
                return _to_srgb(_eight_bit(samples), profile, path).astype(np.float32) / np.float32(255.0)
        except ImageError:
            raise
        except CORRUPT_DATA_ERRORS as error:
            raise corrupt_data(path, error) from error
    if samples.ndim == 2:
        samples = np.repeat(samples[..., None], 3, axis=-1)
    if samples.dtype == np.uint16:
        return samples.astype(np.float32) / np.float32(65535.0)
    return samples


def load_tensor(path: str | os.PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """``load_image`` as a contiguous (3, H, W) tensor: uint8 (8-bit sources) or float32 in [0, 1]."""
    return torch.from_numpy(load_image(path, max_pixels=max_pixels)).permute(2, 0, 1).contiguous()


def read_metadata(path: str | os.PathLike) -> ImageMetadata:
    """The EXIF and ICC data that ``save_image(..., source=...)`` carries over (pixels are not decoded)."""
    path = check_readable(path)
    with contextlib.ExitStack() as stack:
        image = open_image(path, sys.maxsize, stack)
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
