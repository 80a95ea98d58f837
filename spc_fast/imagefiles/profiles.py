"""ICC colour management on loading: which embedded profiles need converting, and the conversion to sRGB.

A profile is judged by what it does, not by its name: a test chart goes through it (relative colorimetric) and
when every colour comes out within ``_SRGB_TOLERANCE`` of the same colour in sRGB the pixels are left as they
are; any other profile (a wide-gamut one named "sRGB ..." included) is converted with LittleCMS, perceptual
intent. Only colour is converted: alpha never goes through a profile.
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from spc_fast.imagefiles.opening import ImageError

logger = logging.getLogger(__name__)

# Largest difference (in 8-bit levels) between a profile's rendering of the chart and sRGB for it to count as
# sRGB: the common sRGB profiles (IEC 61966-2.1, LittleCMS's, v4 matrix ones) agree to 1 level.
_SRGB_TOLERANCE = 2
_LEVELS = np.linspace(0, 255, 9).round().astype(np.uint8)  # 0, 32, 64, ... 255
_RGB_CHART = np.stack(np.meshgrid(_LEVELS, _LEVELS, _LEVELS, indexing="ij"), -1).reshape(1, -1, 3)  # [1, 729, 3]
_GRAY_CHART = np.arange(0, 256, 5, dtype=np.uint8)[None]  # [1, 52]


@functools.cache
def srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def srgb_icc_profile() -> bytes:
    """The sRGB ICC profile written into output files (LittleCMS's built-in sRGB)."""
    return srgb_profile().tobytes()


@functools.lru_cache(maxsize=32)
def _renders_as_srgb(icc: bytes) -> bool:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    space = profile.profile.xcolor_space.strip()
    if space == "RGB":
        chart, mode, expected = _RGB_CHART, "RGB", _RGB_CHART
    elif space == "GRAY":
        chart, mode, expected = _GRAY_CHART, "L", np.repeat(_GRAY_CHART[..., None], 3, axis=-1)
    else:
        return False  # CMYK, Lab...: never sRGB
    transform = ImageCms.buildTransform(
        profile, srgb_profile(), mode, "RGB", renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC
    )
    rendered = np.asarray(ImageCms.applyTransform(Image.fromarray(chart, mode), transform))
    return int(np.abs(rendered.astype(np.int16) - expected).max()) <= _SRGB_TOLERANCE


def source_profile(icc: bytes | None, path: Path) -> ImageCms.ImageCmsProfile | None:
    """The embedded profile ``icc`` when its pixels need converting to sRGB; None when there is none, when it
    renders as sRGB, or when it is unreadable (then the pixels are taken as sRGB, with a warning)."""
    if not icc:
        return None
    try:
        if _renders_as_srgb(icc):
            return None
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, TypeError, ValueError) as error:
        logger.warning("%s: embedded ICC profile is unreadable (%s); pixels taken as sRGB", path, error)
        return None


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ImageError(
            f"{path}: Pillow cannot convert mode {image.mode} to RGB; save the file as RGB"
        ) from error


def to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile | None, path: Path) -> np.ndarray:
    """8-bit colour (no alpha: L, RGB, CMYK, ...) -> [H, W, 3] uint8 sRGB, converted from ``profile`` if set."""
    if image.mode == "1":
        image = image.convert("L")
    if profile is not None and image.mode in ("L", "RGB", "CMYK"):
        try:
            transform = ImageCms.buildTransform(profile, srgb_profile(), image.mode, "RGB")
            image = ImageCms.applyTransform(image, transform)
        except ImageCms.PyCMSError as error:
            logger.warning(
                "%s: ICC profile does not fit its %s pixels (%s); taken as sRGB", path, image.mode, error
            )
    return np.array(_to_rgb(image, path))
