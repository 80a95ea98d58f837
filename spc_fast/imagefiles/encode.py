"""Encoding sRGB pixels (and an alpha channel) into PNG, JPEG, TIFF or WebP files, keeping the source's metadata.

``save_image`` checks the target first (``check_output_path``), converts the pixels, and writes them through
``atomic_write``: a failed write never leaves a partial file behind, and an existing file is only replaced
when asked to (also when another run creates it meanwhile). 16-bit output goes through the codecs: PNG
through libpng (``highdepth``), TIFF through tifffile (``tiffwriter``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from spc_fast.imagefiles.atomic import already_exists, atomic_write
from spc_fast.imagefiles.decode import ImageMetadata, read_metadata
from spc_fast.imagefiles.highdepth import write_png16
from spc_fast.imagefiles.opening import FORMATS, ImageError
from spc_fast.imagefiles.profiles import srgb_icc_profile
from spc_fast.imagefiles.tiffwriter import write_tiff16
from spc_fast.images import check_batch, numpy_to_unit

# TIFF is written uncompressed: Pillow's libtiff compressors fail on EXIF data that has sub-IFDs.
# WebP "exact" keeps the colour of fully transparent pixels (alpha is passed through, never baked in).
_SAVE_OPTIONS = {
    "JPEG": {"quality": 95, "subsampling": 0},
    "WEBP": {"quality": 95, "exact": True},
    "PNG": {},
    "TIFF": {},
}
_WITH_ALPHA = ("PNG", "TIFF", "WEBP")
_SIXTEEN_BITS = ("PNG", "TIFF")


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
            f"{path}: is the input file; choose another output path, or pass --overwrite to replace the original"
        )
    if path.is_dir():
        raise ImageError(f"{path}: is a directory; give a file name with an image extension")
    if path.exists() and not path.is_file():
        raise ImageError(f"{path}: is not a regular file (a device, named pipe or socket); give a file name")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise already_exists(path)
    folder = path.absolute().parent
    if not folder.is_dir():
        raise ImageError(f"{path}: the folder {folder} does not exist (or is not a folder); create it first")
    return path


def _as_hwc(image: np.ndarray | torch.Tensor, channels: int, what: str) -> np.ndarray:
    """A numpy [H, W, channels] array or a (channels, H, W) / (1, channels, H, W) tensor -> numpy [H, W, channels]."""
    if isinstance(image, np.ndarray):
        if channels == 1 and image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != channels:
            raise ImageError(f"save_image expects the {what} as an H x W x {channels} array, got shape {image.shape}")
        return image
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"save_image expects a numpy array or a torch tensor, got {type(image).__name__}")
    if channels == 1:
        if image.ndim == 4:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 1:
            raise ImageError(f"save_image expects the {what} as a (1, H, W) tensor, got shape {tuple(image.shape)}")
        batch = image[None]
    else:
        batch, _ = check_batch(image)
    if batch.shape[0] != 1:
        raise ImageError(f"save_image writes one image, got a batch of {batch.shape[0]}; save images[i] one by one")
    chw = batch[0].detach().cpu()
    if chw.dtype in (torch.float16, torch.bfloat16):
        chw = chw.float()  # numpy has no bfloat16
    return chw.permute(1, 2, 0).numpy()  # [H, W, C]


def _unit(hwc: np.ndarray) -> np.ndarray:
    """[H, W, C] uint8, uint16 or float in [0, 1] -> float64 in [0, 1] (colour checked as SPEC.md says)."""
    if hwc.shape[-1] == 3:
        return numpy_to_unit(hwc)
    if hwc.dtype in (np.uint8, np.uint16):
        return hwc / float(np.iinfo(hwc.dtype).max)
    if not np.issubdtype(hwc.dtype, np.floating):
        raise ValueError(f"alpha of dtype {hwc.dtype}: use uint8, uint16 or float in [0, 1]")
    unit = hwc.astype(np.float64)
    if not np.isfinite(unit).all() or unit.min() < 0.0 or unit.max() > 1.0:
        raise ValueError("alpha values must be finite and lie in [0, 1]; clamp the alpha channel first")
    return unit


def _quantise(hwc: np.ndarray, bit_depth: int) -> np.ndarray:
    """[H, W, C] uint8, uint16 or float in [0, 1] -> uint8 or uint16 at ``bit_depth``."""
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    if hwc.dtype == dtype:
        return np.ascontiguousarray(hwc)
    return np.round(_unit(hwc) * float(np.iinfo(dtype).max)).astype(dtype)


def _encode(file: BinaryIO, pixels: np.ndarray, fmt: str, exif: bytes | None, icc: bytes | None) -> None:
    if pixels.dtype == np.uint16:
        (write_png16 if fmt == "PNG" else write_tiff16)(file, pixels, exif, icc)
        return
    options = dict(_SAVE_OPTIONS[fmt])
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    Image.fromarray(pixels, "RGBA" if pixels.shape[-1] == 4 else "RGB").save(file, format=fmt, **options)


def save_image(
    path: str | os.PathLike,
    image: np.ndarray | torch.Tensor,
    *,
    source: str | os.PathLike | ImageMetadata | None = None,
    overwrite: bool = False,
    bit_depth: int = 8,
    alpha: np.ndarray | torch.Tensor | None = None,
) -> Path:
    """Write an sRGB image to PNG, JPEG (quality 95, 4:4:4), TIFF (uncompressed) or WebP, chosen by extension.

    image: H x W x 3 numpy array (uint8, uint16 or float in [0, 1]) or (3, H, W) / (1, 3, H, W) tensor (uint8
    or float in [0, 1]). alpha: opacity of the same size, H x W (x 1) array or (1, H, W) tensor, any of those
    dtypes; written where the format holds it (PNG, TIFF, WebP), an ``ImageError`` for JPEG (never dropped).
    bit_depth=16 writes a 16-bit PNG or TIFF. ``source`` (a path, or ``read_metadata`` of one) carries its
    EXIF over, orientation reset to 1, and an sRGB ICC profile is embedded when the source had a profile. The
    write is atomic: a temporary file in the same folder, published in one step, removed again on any failure.
    Refuses to replace an existing file (also one created by another process while this one encoded), or the
    source itself, unless ``overwrite``. Returns the path written.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    path = check_output_path(path, source=source, overwrite=overwrite)
    fmt = FORMATS[path.suffix.lower()]
    if bit_depth == 16 and fmt not in _SIXTEEN_BITS:
        raise ImageError(f"{path}: 16-bit output is written as PNG or TIFF only; use a .png or .tif name")
    if alpha is not None and fmt not in _WITH_ALPHA:
        raise ImageError(
            f"{path}: the image has transparency and {fmt} cannot hold it; write .png, .tif or .webp to keep "
            "transparency"
        )
    pixels = _quantise(_as_hwc(image, 3, "image"), bit_depth)
    if alpha is not None:
        opacity = _quantise(_as_hwc(alpha, 1, "alpha"), bit_depth)
        if opacity.shape[:2] != pixels.shape[:2]:
            raise ImageError(f"save_image: alpha of size {opacity.shape[:2]} for an image of {pixels.shape[:2]}")
        pixels = np.concatenate([pixels, opacity], axis=-1)
    metadata = source if source is None or isinstance(source, ImageMetadata) else read_metadata(source)
    exif = metadata.exif if metadata is not None else None
    icc = srgb_icc_profile() if metadata is not None and metadata.icc_profile else None
    atomic_write(path, lambda file: _encode(file, pixels, fmt, exif, icc), overwrite=overwrite)
    return path
