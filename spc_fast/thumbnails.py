"""Small previews of image files for reports: upright, sRGB, 8-bit JPEG, decoded at a reduced scale where the format
allows it, so that a page over hundreds of large photos is quick to make and quick to open."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import torch
from PIL import Image, ImageOps

from spc_fast import imagefiles
from spc_fast.imagefiles.opening import CORRUPT_DATA_ERRORS
from spc_fast.imagefiles.profiles import source_profile
from spc_fast.images import from_unit_float, to_unit_float

THUMBNAIL_SIDE = 480
JPEG_QUALITY = 82
_PLAIN_MODES = ("RGB", "RGBA", "L", "LA", "P")  # 8-bit modes Pillow turns into RGB itself


def thumbnail_jpeg(path: str | os.PathLike, side: int = THUMBNAIL_SIDE) -> bytes:
    """The image at ``path`` as a JPEG of at most ``side`` px on its long side, upright, transparency laid on white.

    A plain 8-bit file without a colour profile that needs converting is decoded by Pillow, a JPEG at a reduced
    scale (``draft``: 1/2 to 1/8 of the pixels, no full-size decode); anything else (16-bit, float, a non-sRGB
    profile, a format Pillow cannot read alone) goes through ``imagefiles.read_photo``, as the pipeline read it.
    Raises what ``read_photo`` raises for a file that cannot be read."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            plain = image.mode in _PLAIN_MODES and getattr(image, "n_frames", 1) == 1
            if plain and source_profile(image.info.get("icc_profile"), path) is None:
                image.draft("RGB", (side, side))
                return _encode(ImageOps.exif_transpose(image), side)
    except (*CORRUPT_DATA_ERRORS, Image.DecompressionBombError):
        pass  # read_photo names the problem, or reads what Pillow alone refuses
    photo = imagefiles.read_photo(path)
    image = Image.fromarray(from_unit_float(to_unit_float(photo.pixels), torch.uint8).permute(1, 2, 0).numpy())
    if photo.alpha is not None:
        image.putalpha(Image.fromarray(from_unit_float(to_unit_float(photo.alpha[0]), torch.uint8).numpy()))
    return _encode(image, side)


def _encode(image: Image.Image, side: int) -> bytes:
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def data_uri(path: str | os.PathLike, side: int = THUMBNAIL_SIDE) -> tuple[str, tuple[int, int]] | None:
    """The thumbnail of ``path`` as a ``data:`` URI and its width and height, or None when the file cannot be read
    (it may have been removed or replaced since the run wrote it)."""
    try:
        data = thumbnail_jpeg(path, side)
    except (OSError, ValueError, MemoryError):
        return None
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
    return f"data:image/jpeg;base64,{base64.b64encode(data).decode('ascii')}", size
