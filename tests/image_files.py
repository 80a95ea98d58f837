"""Writers of test image files that Pillow cannot produce: 16-bit PNGs with every row filter, ICC profiles.

Both are written from the PNG and ICC specifications, independent of the code under test.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

# Adobe RGB (1998): colorants adapted to the D50 profile connection space, gamma 563/256.
ADOBE_RGB_COLORANTS = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))
ADOBE_RGB_GAMMA = 563 / 256
# sRGB (IEC 61966-2.1): colorants adapted to D50 as in the standard profile; the transfer curve as a table.
SRGB_COLORANTS = ((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141))
D50 = (0.9642, 1.0, 0.8249)


def srgb_curve(entries: int = 1024) -> np.ndarray:
    """The sRGB decoding function sampled at ``entries`` points, as ICC curve values (uint16)."""
    v = np.linspace(0.0, 1.0, entries)
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return np.round(linear * 65535).astype(np.uint16)

_PNG_COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray+alpha, RGB, RGBA


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _filter_rows(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Encode [H, N] bytes with filter type (row index mod 5): none, sub, up, average, paeth."""
    x = rows.astype(np.int32)
    left = np.zeros_like(x)
    left[:, bpp:] = x[:, :-bpp]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    up_left = np.zeros_like(x)
    up_left[1:, bpp:] = x[:-1, :-bpp]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    predictors = [np.zeros_like(x), left, up, (left + up) // 2, paeth]
    kinds = np.arange(len(rows)) % 5
    predicted = np.stack(predictors)[kinds, np.arange(len(rows))]
    return np.concatenate([kinds[:, None], (x - predicted) % 256], axis=1).astype(np.uint8)


def write_png16(
    path: Path, samples: np.ndarray, icc_profile: bytes | None = None, exif: bytes | None = None
) -> Path:
    """16-bit PNG of [H, W] or [H, W, C] uint16 samples (C = 1..4), cycling through all five row filters; an
    iCCP chunk holds ``icc_profile`` and an eXIf chunk, after the image data, holds ``exif`` when given."""
    samples = samples if samples.ndim == 3 else samples[..., None]
    height, width, channels = samples.shape
    rows = samples.astype(">u2").reshape(height, width * channels).view(np.uint8)
    data = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOUR_TYPE[channels], 0, 0, 0))]
    if icc_profile is not None:
        data.append(_chunk(b"iCCP", b"test\x00\x00" + zlib.compress(icc_profile)))
    data.append(_chunk(b"IDAT", zlib.compress(_filter_rows(rows, 2 * channels).tobytes())))
    if exif is not None:
        data.append(_chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")))
    data.append(_chunk(b"IEND", b""))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(data))
    return path


def _s15fixed16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def matrix_profile(
    description: str, colorants=ADOBE_RGB_COLORANTS, gamma: float = ADOBE_RGB_GAMMA, curve: np.ndarray | None = None
) -> bytes:
    """A version 2 RGB display ICC profile: three colorants (D50 XYZ) and one transfer curve for all channels,
    a gamma or, when given, a table of uint16 ``curve`` values."""
    text = description.encode("ascii") + b"\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(text)) + text + b"\x00" * (4 + 4 + 2 + 1 + 67)
    if curve is None:
        curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, round(gamma * 256))
    else:
        curve = b"curv\x00\x00\x00\x00" + struct.pack(">I", len(curve)) + curve.astype(">u2").tobytes()
    tags = [
        (b"desc", desc),
        (b"wtpt", b"XYZ \x00\x00\x00\x00" + _s15fixed16(*D50)),
        *(
            (sig, b"XYZ \x00\x00\x00\x00" + _s15fixed16(*xyz))
            for sig, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants, strict=True)
        ),
        *((sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")),
        (b"cprt", b"text\x00\x00\x00\x00no copyright, test data\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for sig, data in tags:
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += _padded(data)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\x00" * 4
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\x00" * 12
        + b"acsp"
        + b"\x00" * 24
        + struct.pack(">I", 0)
        + _s15fixed16(*D50)
        + b"\x00" * 48
    )
    assert len(header) == 128
    return header + table + body
