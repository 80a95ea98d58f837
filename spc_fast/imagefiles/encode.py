"""Encoding sRGB pixels into PNG, JPEG, TIFF or WebP files (16-bit PNG included), keeping the source's metadata.

``save_image`` checks the target first (``check_output_path``), converts the pixels, and writes them through
``atomic_write``: a failed write never leaves a partial file behind, and an existing file is only replaced
when asked to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from spc_fast.imagefiles.atomic import atomic_write
from spc_fast.imagefiles.decode import ImageMetadata, read_metadata, srgb_icc_profile
from spc_fast.imagefiles.highdepth import write_png16
from spc_fast.imagefiles.opening import FORMATS, ImageError
from spc_fast.images import check_batch, numpy_to_unit

# TIFF is written uncompressed: Pillow's libtiff compressors fail on EXIF data that has sub-IFDs.
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}, "PNG": {}, "TIFF": {}}


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


def _encode(file: BinaryIO, pixels: np.ndarray, fmt: str, exif: bytes | None, icc: bytes | None) -> None:
    if pixels.dtype == np.uint16:
        write_png16(file, pixels, exif, icc)
        return
    options = dict(_SAVE_OPTIONS[fmt])
    if exif:
        options["exif"] = exif
    if icc:
        options["icc_profile"] = icc
    Image.fromarray(pixels).save(file, format=fmt, **options)


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
