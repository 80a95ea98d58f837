"""16-bit TIFF output with the source's ICC profile and whole EXIF block (capture settings and GPS included).

Pillow's TIFF writer holds 8 bits per RGB sample, and tifffile cannot write the EXIF sub-directories, so the
file is laid out here in the simplest baseline form: the 8-byte header, one image directory serialized by
Pillow's ``ImageFileDirectory_v2`` (the same serializer Pillow's own EXIF and TIFF writers use: every tag is
typed from its table, the EXIF and GPS directories nested), then the samples as one uncompressed strip.
tifffile, Pillow and libtiff read it back (tested).
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, TiffImagePlugin

_SUB_DIRECTORIES = (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo)
# Baseline TIFF tags: ImageWidth, ImageLength, BitsPerSample, Compression, PhotometricInterpretation,
# StripOffsets, SamplesPerPixel, RowsPerStrip, StripByteCounts, PlanarConfiguration, ExtraSamples, SampleFormat,
# InterColorProfile.
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _PHOTOMETRIC, _STRIP_OFFSETS = 256, 257, 258, 259, 262, 273
_SAMPLES, _ROWS_PER_STRIP, _STRIP_BYTES, _PLANAR, _EXTRA_SAMPLES, _SAMPLE_FORMAT, _ICC = (
    277, 278, 279, 284, 338, 339, 34675
)
_UNCOMPRESSED, _RGB, _CONTIGUOUS, _UNASSOCIATED_ALPHA, _UNSIGNED = 1, 2, 1, 2, 1
_HEADER = b"II" + (42).to_bytes(2, "little") + (8).to_bytes(4, "little")  # little-endian, directory at byte 8


def write_tiff16(file: BinaryIO, pixels: np.ndarray, exif: bytes | None, icc_profile: bytes | None) -> None:
    """Encode [H, W, 3] (RGB) or [H, W, 4] (RGB + unassociated alpha) uint16 pixels as an uncompressed
    little-endian TIFF into ``file``, with ``icc_profile`` and the EXIF block ``exif`` when given."""
    height, width, channels = pixels.shape
    directory = TiffImagePlugin.ImageFileDirectory_v2(prefix=b"II")
    if exif:
        parsed = Image.Exif()
        parsed.load(exif)
        for tag, value in parsed.items():
            if tag in _SUB_DIRECTORIES:
                value = dict(parsed.get_ifd(tag))  # a dict is written as a nested directory
            if tag != ExifTags.IFD.Interop and value != {}:
                directory[tag] = value
    directory[_WIDTH], directory[_LENGTH] = width, height
    directory[_BITS] = (16,) * channels
    directory[_COMPRESSION], directory[_PHOTOMETRIC], directory[_PLANAR] = _UNCOMPRESSED, _RGB, _CONTIGUOUS
    directory[_SAMPLES], directory[_ROWS_PER_STRIP] = channels, height
    directory[_STRIP_OFFSETS] = 0  # relative: the serializer points it past the directory's own data
    directory[_STRIP_BYTES] = pixels.size * 2
    directory[_SAMPLE_FORMAT] = (_UNSIGNED,) * channels
    if channels == 4:
        directory[_EXTRA_SAMPLES] = _UNASSOCIATED_ALPHA
    if icc_profile:
        directory[_ICC] = icc_profile
    file.write(_HEADER + directory.tobytes(len(_HEADER)))
    file.write(np.ascontiguousarray(pixels, dtype="<u2").tobytes())
