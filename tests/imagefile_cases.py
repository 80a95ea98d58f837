"""Shared cases of the image-file tests: random pixels, EXIF blocks, the upright view per orientation, ICC helpers."""

from __future__ import annotations

import io

import numpy as np
from PIL import ExifTags, Image, ImageCms

RNG = np.random.default_rng(20240601)

# EXIF orientation -> how the stored pixels look once shown upright (written from the EXIF specification).
ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),  # stored sideways, shown turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def random_rgb(height: int = 13, width: int = 17) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def random_samples16(height: int = 11, width: int = 9, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 65536, (height, width, channels)).astype(np.uint16)


def as_unit(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / np.float32(65535.0)


def exif_block(orientation: int | None = None) -> Image.Exif:
    """EXIF with a camera make, a capture date in the Exif sub-IFD and, when given, an orientation."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2021:06:01 12:34:56"
    return exif


def icc_description(icc: bytes) -> str:
    return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()


def to_srgb_with(image: Image.Image, icc: bytes) -> np.ndarray:
    """Pillow's own conversion of ``image`` from the profile ``icc`` to sRGB: the expected loader output."""
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    return np.asarray(
        ImageCms.profileToProfile(image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB")
    )


def temporaries(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
