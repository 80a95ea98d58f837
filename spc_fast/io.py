"""Reading and writing image files: the one loader, the one (atomic) writer, and the metadata they carry.

``load_image`` returns H x W x 3 sRGB: EXIF orientation applied, an embedded non-sRGB ICC profile converted
to sRGB, every Pillow mode (grayscale, alpha, palette, CMYK, 16-bit) reduced to RGB. 8-bit sources give uint8,
16-bit sources float32 in [0, 1] with their full precision. Pillow's own RGB conversion cuts 16-bit RGB files
to 8 bits, so those are decoded twice, once for the high and once for the low byte of every sample (both
decodes run Pillow's PNG/TIFF unfiltering with the true 6- or 8-byte pixel stride; only unpacking differs).

``save_image`` writes through a temporary file in the target folder and ``os.replace``: a failed write never
leaves a partial file behind, and an existing file is only replaced when asked to.
"""

from __future__ import annotations

import contextlib
import functools
import io as _io
import logging
import os
import secrets
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageOps, UnidentifiedImageError

from spc_fast.images import check_batch, numpy_to_unit

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# 250 megapixels: above the largest camera sensors, about 3 GB once loaded as float32.
DEFAULT_MAX_PIXELS = 250_000_000
MAX_PIXELS_ENV = "SPC_FAST_MAX_PIXELS"

# Output format per file extension.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
# TIFF is written uncompressed: Pillow's libtiff compressors fail on EXIF data that has sub-IFDs.
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}, "PNG": {}, "TIFF": {}}

_NATIVE = "L" if sys.byteorder == "little" else "B"
_SWAPPED = "B" if _NATIVE == "L" else "L"
# Raw mode of 16-bit RGB(A) tiles -> the raw mode of equal pixel size unpacking the other byte of each sample.
_OTHER_BYTE_RAWMODE = {
    "RGB;16B": "RGB;16L",
    "RGB;16L": "RGB;16B",
    "RGB;16N": f"RGB;16{_SWAPPED}",
    "RGBA;16B": "RGBA;16L",
    "RGBA;16L": "RGBA;16B",
    "RGBA;16N": f"RGBA;16{_SWAPPED}",
}
# 16-bit gray + alpha PNG: decoded as 8-bit RGBA, each pixel's four bytes are (L high, L low, A high, A low).
_GRAY_ALPHA_16 = "LA;16B"
_GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")

# EXIF tags that describe the source file's pixel layout, not the photo: never carried to an output file.
_LAYOUT_TAGS = (256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 324, 325, 338, 339, 34675)
_ORIENTATION = ExifTags.Base.Orientation


class ImageError(ValueError):
    """A file could not be read or written; the message names the file, the problem and the fix."""


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


def _check_readable(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file; pass the image files inside it")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); it was not written completely, re-export it")
    return path


@contextlib.contextmanager
def _pillow_pixel_limit(limit: int):
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


def _too_large(path: Path, size: str, limit: int) -> ImageError:
    return ImageError(
        f"{path}: {size} is above the limit of {limit} pixels (a guard against decompression bombs); "
        f"if the file is trusted, pass max_pixels=<count> or set {MAX_PIXELS_ENV}=<count>"
    )


def _open(
    path: Path, limit: int, stack: contextlib.ExitStack, tile_rawmodes: dict[str, str] | None = None
) -> Image.Image:
    """Open ``path`` (header only, closed by ``stack``); ``tile_rawmodes`` unpacks its tiles differently."""
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
    if tile_rawmodes is not None:
        image.tile = [_with_rawmode(tile, tile_rawmodes[_rawmode(tile)]) for tile in image.tile]
    return image


def _rawmode(tile) -> str:
    return tile.args if isinstance(tile.args, str) else tile.args[0]


def _with_rawmode(tile, rawmode: str):
    args = rawmode if isinstance(tile.args, str) else (rawmode, *tile.args[1:])
    return tile._replace(args=args)


def _decoded(image: Image.Image) -> Image.Image:
    """Force the full decode (so a truncated file fails here, not later) and apply the EXIF orientation."""
    image.load()
    ImageOps.exif_transpose(image, in_place=True)
    return image


@dataclass
class _Pixels:
    """Decoded pixels before colour management."""

    image: Image.Image  # 8-bit rendering (for 16-bit sources: the high bytes), what ICC conversion works on
    samples: np.ndarray | None = None  # 16-bit or float sources: [H, W, 3] or [H, W], uint16 or float32


def _read_pixels(path: Path, limit: int, stack: contextlib.ExitStack) -> _Pixels:
    image = _open(path, limit, stack)
    rawmodes = {_rawmode(tile) for tile in image.tile}
    if image.mode in _GRAY16_MODES:
        samples = np.asarray(_decoded(image))
        samples = np.clip(samples, 0, 65535).astype(np.uint16)
        return _Pixels(Image.fromarray((samples >> 8).astype(np.uint8)), samples)
    if image.mode == "F":
        samples = np.asarray(_decoded(image), dtype=np.float32)
        if not np.isfinite(samples).all() or samples.min() < 0.0 or samples.max() > 1.0:
            raise ImageError(
                f"{path}: floating-point image with values outside [0, 1] (or NaN/inf); "
                "normalise it to [0, 1] or save it as 8/16-bit integers"
            )
        return _Pixels(Image.fromarray(np.round(samples * 255.0).astype(np.uint8)), samples)
    if rawmodes == {_GRAY_ALPHA_16}:
        raw = np.asarray(_decoded(_open(path, limit, stack, {_GRAY_ALPHA_16: "RGBA"})))
        samples = (raw[..., 0].astype(np.uint16) << 8) | raw[..., 1]
        return _Pixels(Image.fromarray(raw[..., 0]), samples)
    if rawmodes and rawmodes <= _OTHER_BYTE_RAWMODE.keys():
        high = _decoded(image)
        low = np.asarray(_decoded(_open(path, limit, stack, _OTHER_BYTE_RAWMODE)))
        samples = (np.asarray(high)[..., :3].astype(np.uint16) << 8) | low[..., :3]
        return _Pixels(high, samples)
    if (
        image.format == "TIFF"
        and max(image.tag_v2.get(258, (8,))) > 8
        and not any(";16" in r for r in rawmodes)
    ):
        raise ImageError(
            f"{path}: Pillow cannot decode this TIFF's 16-bit sample layout (e.g. planar configuration); "
            "re-save it as an interleaved (contiguous) TIFF or as a 16-bit PNG"
        )
    if any(";16" in r for r in rawmodes):
        logger.warning("%s: Pillow reads this %s 16-bit file at 8-bit precision only", path, image.mode)
    return _Pixels(_decoded(image))


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
        profile = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
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


def load_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as H x W x 3 sRGB RGB.

    Returns uint8 for 8-bit sources and float32 in [0, 1] for 16-bit (and floating-point) sources, at full
    precision. EXIF orientation is applied; an embedded non-sRGB ICC profile (Adobe RGB, Display P3, CMYK...)
    is converted to sRGB with LittleCMS (perceptual intent). Grayscale is replicated to three channels; alpha
    channels are dropped (colour kept as stored, not composited onto a background); palettes are expanded.
    Multi-frame files give their first frame. A 16-bit file with a non-sRGB profile is converted at 8-bit
    precision (Pillow's LittleCMS binding has no 16-bit RGB mode) and returned as float32, with a warning.

    Images above ``max_pixels`` (default ``$SPC_FAST_MAX_PIXELS`` or DEFAULT_MAX_PIXELS) are refused before
    decoding. Every problem (missing file, directory, unreadable, truncated or corrupt data, empty or
    oversized image) raises ``ImageError`` (a ValueError) naming the file and the fix.
    """
    path = _check_readable(path)
    limit = max_pixels_limit(max_pixels)
    with contextlib.ExitStack() as stack:
        try:
            pixels = _read_pixels(path, limit, stack)
            profile = _source_profile(pixels.image, path)
            if pixels.samples is None:
                return _to_srgb(pixels.image, profile, path)
            if profile is not None:
                logger.warning(
                    "%s: 16-bit image with a non-sRGB ICC profile, converted at 8-bit precision", path
                )
                return _to_srgb(pixels.image, profile, path).astype(np.float32) / np.float32(255.0)
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as error:
            raise ImageError(
                f"{path}: truncated or corrupt image data ({error}); re-export or re-download the file"
            ) from error
    samples = pixels.samples
    if samples.ndim == 2:
        samples = np.repeat(samples[..., None], 3, axis=-1)
    if samples.dtype == np.uint16:
        return samples.astype(np.float32) / np.float32(65535.0)
    return np.ascontiguousarray(samples, dtype=np.float32)


def load_tensor(path: str | os.PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """``load_image`` as a contiguous (3, H, W) tensor: uint8 (8-bit sources) or float32 in [0, 1]."""
    import torch

    return torch.from_numpy(load_image(path, max_pixels=max_pixels)).permute(2, 0, 1).contiguous()


def read_metadata(path: str | os.PathLike) -> ImageMetadata:
    """The EXIF and ICC data that ``save_image(..., source=...)`` carries over (pixels are not decoded)."""
    path = _check_readable(path)
    with contextlib.ExitStack() as stack:
        image = _open(path, sys.maxsize, stack)
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


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(
    path: str | os.PathLike,
    *,
    source: str | os.PathLike | ImageMetadata | None = None,
    overwrite: bool = False,
) -> Path:
    """Everything ``save_image`` checks before writing; call it early to fail before expensive work."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ImageError(
            f"{path}: cannot tell the output format from the extension {path.suffix!r}; "
            f"use one of {', '.join(sorted(FORMATS))}"
        )
    source_path = source.path if isinstance(source, ImageMetadata) else source
    if not overwrite and source_path is not None and _same_file(path, Path(source_path)):
        raise ImageError(
            f"{path}: is the input file; choose another output path, or pass overwrite=True (--overwrite) "
            "to replace the original"
        )
    if path.is_dir():
        raise ImageError(f"{path}: is a directory; give a file name with an image extension")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise ImageError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ImageError(f"{path}: the folder {folder} does not exist (or is not a folder); create it first")
    return path


def _to_pixels(image: np.ndarray | torch.Tensor, bit_depth: int) -> np.ndarray:
    """[H, W, 3] numpy array or (3, H, W) tensor -> [H, W, 3] uint8 or uint16 numpy array."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ImageError(f"save_image expects an H x W x 3 array, got shape {image.shape}")
        if image.dtype == np.uint8 and bit_depth == 8:
            return np.ascontiguousarray(image)
        unit = numpy_to_unit(image)
    else:
        import torch

        if not isinstance(image, torch.Tensor):
            raise TypeError(f"save_image expects a numpy array or a torch tensor, got {type(image).__name__}")
        batch, _ = check_batch(image)
        if batch.shape[0] != 1:
            raise ImageError(
                f"save_image writes one image, got a batch of {batch.shape[0]}; save images[i] one by one"
            )
        hwc = batch[0].detach().cpu().permute(1, 2, 0)  # [H, W, 3]
        if hwc.dtype == torch.uint8 and bit_depth == 8:
            return np.ascontiguousarray(hwc.numpy())
        unit = hwc.double().numpy() / (255.0 if hwc.dtype == torch.uint8 else 1.0)
    scale, dtype = (255.0, np.uint8) if bit_depth == 8 else (65535.0, np.uint16)
    return np.round(unit * scale).astype(dtype)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _write_png16(file, pixels: np.ndarray, exif: bytes | None, icc: bytes | None) -> None:
    """16-bit RGB PNG (Pillow cannot write one), every row with the "Up" filter."""
    height, width, _ = pixels.shape
    rows = pixels.astype(">u2").reshape(height, 3 * width).view(np.uint8)  # [H, 6W] big-endian sample bytes
    filtered = np.empty((height, 1 + rows.shape[1]), np.uint8)
    filtered[:, 0] = 2  # filter type "Up": each byte minus the byte above it, modulo 256
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    file.write(b"\x89PNG\r\n\x1a\n")
    file.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)))
    if icc:
        file.write(_png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(icc)))
    if exif:
        file.write(_png_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    file.write(_png_chunk(b"IDAT", zlib.compress(filtered.tobytes(), 6)))
    file.write(_png_chunk(b"IEND", b""))


def _encode(file, pixels: np.ndarray, fmt: str, exif: bytes | None, icc: bytes | None) -> None:
    if pixels.dtype == np.uint16:
        _write_png16(file, pixels, exif, icc)
        return
    options = dict(_SAVE_OPTIONS[fmt])
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    Image.fromarray(pixels).save(file, format=fmt, **options)


def _write_error(path: Path, error: OSError) -> ImageError:
    return ImageError(
        f"{path}: cannot write the file ({error.strerror or error}); choose a writable folder with free space"
    )


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Run ``write(file)`` on a temporary binary file beside ``path``, then rename it over ``path`` in one
    step; on any failure the temporary file is removed and an OSError becomes an ``ImageError``."""
    folder = path.absolute().parent
    for _ in range(100):
        temporary = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:
            continue
        except OSError as error:
            raise _write_error(path, error) from error
    else:
        raise ImageError(
            f"{path}: could not create a temporary file in {folder}; remove stale .tmp files there"
        )
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, os.stat(path).st_mode & 0o7777)  # keep the permissions of a replaced file
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise _write_error(path, error) from error
        raise


def save_image(
    path: str | os.PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    source: str | os.PathLike | ImageMetadata | None = None,
    overwrite: bool = False,
    bit_depth: int = 8,
) -> Path:
    """Write an sRGB image to PNG, JPEG (quality 95, 4:4:4), TIFF (uncompressed) or WebP, chosen by extension.

    image: H x W x 3 numpy array (uint8, uint16 or float in [0, 1]) or (3, H, W) / (1, 3, H, W) tensor (uint8
    or float in [0, 1]). bit_depth=16 writes a 16-bit PNG (PNG only). ``source`` (a path, or ``read_metadata``
    of one) carries its EXIF over, orientation reset to 1, and an sRGB ICC profile is embedded when the source
    had a profile. The write is atomic: a temporary file in the same folder renamed over the target, removed
    again on any failure. Refuses to replace an existing file, or the source itself, unless ``overwrite``.
    Returns the path written.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    path = check_output_path(path, source=source, overwrite=overwrite)
    fmt = FORMATS[path.suffix.lower()]
    if bit_depth == 16 and fmt != "PNG":
        raise ImageError(f"{path}: 16-bit output is written as PNG only; use a .png name or bit_depth=8")
    pixels = _to_pixels(image, bit_depth)
    metadata = source if source is None or isinstance(source, ImageMetadata) else read_metadata(source)
    exif = metadata.exif if metadata is not None else None
    icc = srgb_icc_profile() if metadata is not None and metadata.icc_profile else None
    atomic_write(path, lambda file: _encode(file, pixels, fmt, exif, icc))
    return path
