"""Opening image files safely: the formats, the pixel-count limit, and the error every reader and writer raises.

``open_image`` reads only the header (through Pillow) and refuses empty or oversized images before any pixel
is decoded; the decoders in ``decode`` and ``highdepth`` take it from there.
"""

from __future__ import annotations

import contextlib
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

# 250 megapixels: above the largest camera sensors, about 3 GB once loaded as float32.
DEFAULT_MAX_PIXELS = 250_000_000
MAX_PIXELS_ENV = "SPC_FAST_MAX_PIXELS"

# The file format written for each extension (and the extensions a folder of inputs is searched for).
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}

# What Pillow and the standard library raise on truncated or corrupt data.
CORRUPT_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class ImageError(ValueError):
    """A file could not be read or written; the message names the file, the problem and the fix."""


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel-count limit in force: the argument, else ``$SPC_FAST_MAX_PIXELS``, else the default."""
    if max_pixels is not None:
        if max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive pixel count, got {max_pixels}")
        return int(max_pixels)
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a positive integer; set a pixel count"
        )
    return int(raw)


def check_readable(path: str | os.PathLike) -> Path:
    """``path`` as a Path once it names a non-empty file; else an ``ImageError`` saying what is wrong."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file; pass the image files inside it")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); it was not written completely, re-export it")
    return path


def corrupt_data(path: Path, error: Exception) -> ImageError:
    """The error for a file whose header was read but whose data could not be decoded."""
    return ImageError(f"{path}: truncated or corrupt image data ({error}); re-export or re-download the file")


def _too_large(path: Path, size: str, limit: int) -> ImageError:
    return ImageError(
        f"{path}: {size} is above the limit of {limit} pixels (a guard against decompression bombs); "
        f"if the file is trusted, pass max_pixels=<count> or set {MAX_PIXELS_ENV}=<count>"
    )


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int) -> Iterator[None]:
    """Let Pillow open anything up to ``limit`` pixels; our own check (clearer message) does the rest."""
    saved = Image.MAX_IMAGE_PIXELS
    if saved is not None and 2 * saved < limit:
        Image.MAX_IMAGE_PIXELS = limit
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_image(path: Path, limit: int, stack: contextlib.ExitStack) -> Image.Image:
    """Open ``path`` with Pillow, header only (closed by ``stack``), refusing empty images and images above
    ``limit`` pixels; its size, format, EXIF and ICC profile are then known, its pixels not yet decoded."""
    try:
        with _pillow_pixel_limit(limit):
            image = stack.enter_context(Image.open(path))
    except Image.DecompressionBombError as error:
        raise _too_large(path, "its pixel count", limit) from error
    except UnidentifiedImageError as error:
        raise ImageError(
            f"{path}: not an image Pillow can read (unknown format or corrupt header); "
            "convert it to PNG, JPEG, TIFF or WebP"
        ) from error
    except OSError as error:
        raise ImageError(
            f"{path}: cannot read the file ({error.strerror or error}); check its permissions"
        ) from error
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(
            f"{path}: image is empty ({width}x{height} pixels); pass an image with at least one pixel"
        )
    if width * height > limit:
        raise _too_large(path, f"{width}x{height} = {width * height} pixels", limit)
    return image
