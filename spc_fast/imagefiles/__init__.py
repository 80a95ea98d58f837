"""Image files in and out: one loader, one (atomic, never clobbering) writer, and the metadata they carry.

Read top to bottom: ``opening`` (formats, pixel limit, ``ImageError``) → ``highdepth`` (16-bit PNG through
imagecodecs and pypng, TIFF through tifffile) → ``profiles`` (ICC: sRGB judged by content, conversion) →
``decode`` (``read_photo``, ``load_image``, ``load_tensor``, ``read_metadata``) → ``atomic`` (``atomic_write``,
``remove_stale_temporaries``) → ``tiffwriter`` (16-bit TIFF) → ``encode`` (``save_image``,
``check_output_path``). Callers use this package: ``from spc_fast import imagefiles; imagefiles.read_photo(path)``.
"""

from spc_fast.imagefiles.atomic import atomic_write, remove_stale_temporaries
from spc_fast.imagefiles.decode import ImageMetadata, Photo, load_image, load_tensor, read_metadata, read_photo
from spc_fast.imagefiles.encode import check_output_path, save_image
from spc_fast.imagefiles.opening import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    MAX_PIXELS_ENV,
    READABLE,
    ImageError,
    max_pixels_limit,
)
from spc_fast.imagefiles.profiles import srgb_icc_profile

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "MAX_PIXELS_ENV",
    "READABLE",
    "ImageError",
    "ImageMetadata",
    "Photo",
    "atomic_write",
    "check_output_path",
    "load_image",
    "load_tensor",
    "max_pixels_limit",
    "read_metadata",
    "read_photo",
    "remove_stale_temporaries",
    "save_image",
    "srgb_icc_profile",
]
