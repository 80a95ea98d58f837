"""Opening image files safely: the formats, the pixel-count limit, and the error every reader and writer raises.

``open_image`` reads only the header (through Pillow) and refuses what is not one still image of a sane size
(not a regular file, empty, oversized, several frames) before any pixel is decoded; the decoders in ``decode``
and ``highdepth`` take it from there. ``decoding_failed`` and ``out_of_memory`` turn whatever a decoder raises
into an ``ImageError`` naming the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import tifffile
from PIL import EpsImagePlugin, Image, ImageFile, UnidentifiedImageError

logger = logging.getLogger(__name__)

# 250 megapixels: above the largest camera sensors, about 3 GB once loaded as float32.
DEFAULT_MAX_PIXELS = 250_000_000
MAX_PIXELS_ENV = "SPC_FAST_MAX_PIXELS"

# The file format written for each extension.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}

# What Pillow and the standard library raise on truncated or corrupt data.
CORRUPT_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

# Formats whose extra images belong to the one that is read: what they are, and what is edited.
_AUXILIARY_FRAMES = {
    "MPO": "previews, depth maps or a stereo pair; the primary image is edited",
    "PSD": "layers; the flattened image stored with them is edited",
}
# Formats Pillow identifies but cannot decode: no decoder (MPEG), or only a raw metadata block (IPTC).
_IDENTIFY_ONLY = ("MPEG", "IPTC")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageError(ValueError):
    """A file could not be read or written; the message names the file, the problem and the fix."""


def _readable_extensions() -> frozenset[str]:
    readable = set(FORMATS)
    for extension, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get(fmt, (None,))[0]
        stub = isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
        if factory is None or stub or fmt in _IDENTIFY_ONLY:
            continue  # write-only formats, and stubs that need a handler this install lacks
        if fmt == "EPS" and not EpsImagePlugin.has_ghostscript():
            continue
        readable.add(extension.lower())
    return frozenset(readable)


# The extensions this install can read (Pillow's decoders plus the 16-bit/float codecs): what a folder is
# searched for. FORMATS, a subset, is what can be written.
READABLE = _readable_extensions()


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
    """``path`` as a Path once it names a non-empty regular file; else an ``ImageError`` saying what is wrong.
    Devices, named pipes and sockets are refused from their metadata alone: they are never opened."""
    path = Path(path)
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise ImageError(
                f"{path}: is a symbolic link to a missing file ({os.readlink(path)}); fix or remove the link"
            ) from None
        raise ImageError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})") from None
    except OSError as error:
        raise ImageError(f"{path}: cannot read the file ({error.strerror or error}); check its permissions") from error
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path}: is a directory, not an image file; pass the image files inside it")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(
            f"{path}: is not a regular file (a device, named pipe or socket); pass an image file saved on disk"
        )
    if info.st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); it was not written completely, re-export it")
    return path


def corrupt_data(path: Path, error: Exception) -> ImageError:
    """The error for a file whose header was read but whose data could not be decoded."""
    return ImageError(f"{path}: truncated or corrupt image data ({error}); re-export or re-download the file")


def decoding_failed(path: Path, error: Exception) -> ImageError:
    """The error for any other failure inside a decoder (a format or variant the decoder mishandles)."""
    if isinstance(error, CORRUPT_DATA_ERRORS):
        return corrupt_data(path, error)
    return ImageError(
        f"{path}: the decoder failed on this file ({type(error).__name__}: {error}); "
        "convert it to PNG, JPEG or TIFF with another program"
    )


def out_of_memory(path: Path, size: tuple[int, int, int] | None, bytes_per_sample: int = 4) -> ImageError:
    """The error for an image that does not fit in the memory left: what it needs (from ``size``: width,
    height, channels, when the header could be read) and how to lower it."""
    if size is None:
        return ImageError(
            f"{path}: out of memory while decoding it; use a smaller image, or set {MAX_PIXELS_ENV}=<count> "
            "to skip images above that many pixels"
        )
    width, height, channels = size
    needed = width * height * channels * bytes_per_sample
    return ImageError(
        f"{path}: out of memory: the image needs about {needed / 2**30:.1f} GiB "
        f"({width} x {height} pixels x {channels} channels x {bytes_per_sample} bytes); "
        f"use a smaller image, or set {MAX_PIXELS_ENV}=<count> below {width * height} to skip such images"
    )


def _too_large(path: Path, size: str, limit: int) -> ImageError:
    return ImageError(
        f"{path}: {size} is above the limit of {limit} pixels (a guard against decompression bombs); "
        f"if the file is trusted, set {MAX_PIXELS_ENV}=<count> to raise the limit"
    )


def check_size(path: Path, width: int, height: int, limit: int) -> None:
    """Refuse an empty image or one above ``limit`` pixels (from its header, before decoding)."""
    if width == 0 or height == 0:
        raise ImageError(
            f"{path}: image is empty ({width}x{height} pixels); pass an image with at least one pixel"
        )
    if width * height > limit:
        raise _too_large(path, f"{width}x{height} = {width * height} pixels", limit)


def check_frames(path: Path, count: int) -> None:
    """Refuse a file holding several images: an edit of the first alone would drop the others silently."""
    if count > 1:
        raise ImageError(
            f"{path}: has {count} frames (an animation or several pages); spc-fast edits still images: "
            "extract the frame you want into its own file and pass that"
        )


def is_tiff(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(4) in _TIFF_MAGIC


def _frame_count(image: Image.Image, path: Path) -> int:
    if image.format == "TIFF":  # reduced-resolution pages (previews, pyramid levels) are not frames
        with tifffile.TiffFile(path) as tiff:
            return sum(not page.is_reduced for page in tiff.pages)
    return getattr(image, "n_frames", 1)


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


def open_image(path: Path, limit: int, stack: contextlib.ExitStack) -> Image.Image | None:
    """Open ``path`` with Pillow, header only (closed by ``stack``), refusing empty images, images above
    ``limit`` pixels and files of several frames; its size, format, EXIF and ICC profile are then known, its
    pixels not yet decoded. None for a TIFF that Pillow cannot open (tifffile reads those: float RGB...)."""
    try:
        with _pillow_pixel_limit(limit):
            image = stack.enter_context(Image.open(path))
    except Image.DecompressionBombError as error:
        raise _too_large(path, "its pixel count", limit) from error
    except UnidentifiedImageError as error:
        if is_tiff(path):
            return None
        raise ImageError(
            f"{path}: not an image Pillow can read (unknown format or corrupt header); "
            "convert it to PNG, JPEG, TIFF or WebP"
        ) from error
    except OSError as error:
        raise ImageError(
            f"{path}: cannot read the file ({error.strerror or error}); check its permissions"
        ) from error
    except Exception as error:  # a plugin's own failure on an odd header
        raise decoding_failed(path, error) from error
    check_size(path, *image.size, limit)
    try:
        frames = _frame_count(image, path)
    except Exception as error:  # a corrupt TIFF directory chain, a plugin's failure to count frames
        raise decoding_failed(path, error) from error
    if image.format in _AUXILIARY_FRAMES and frames > 1:
        logger.warning(
            "%s: holds %d images (%s); the others are not carried over",
            path, frames, _AUXILIARY_FRAMES[image.format],
        )
    else:
        check_frames(path, frames)
    return image
