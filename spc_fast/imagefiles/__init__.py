"""Image files in and out: one loader, one (atomic) writer, and the metadata they carry.

Read top to bottom: ``opening`` (formats, pixel limit, ``ImageError``) → ``highdepth`` (16-bit PNG through
imagecodecs and pypng, TIFF through tifffile) → ``decode`` (``load_image``, ``load_tensor``, ``read_metadata``)
→ ``atomic`` (``atomic_write``) → ``encode`` (``save_image``, ``check_output_path``). Callers use this package:
``from spc_fast import imagefiles; imagefiles.load_tensor(path)``.
"""

from spc_fast.imagefiles.atomic import atomic_write
from spc_fast.imagefiles.decode import ImageMetadata, load_image, load_tensor, read_metadata, srgb_icc_profile
from spc_fast.imagefiles.encode import check_output_path, save_image
from spc_fast.imagefiles.opening import DEFAULT_MAX_PIXELS, FORMATS, MAX_PIXELS_ENV, ImageError, max_pixels_limit

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "MAX_PIXELS_ENV",
    "ImageError",
    "ImageMetadata",
    "atomic_write",
    "check_output_path",
    "load_image",
    "load_tensor",
    "max_pixels_limit",
    "read_metadata",
    "save_image",
    "srgb_icc_profile",
]
