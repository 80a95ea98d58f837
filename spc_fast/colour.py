"""Colour science constants and the float64 numpy reference conversions (SPEC.md §1).

Everything here is the truth every fast path is tested against: plain numpy, float64, written to be read.
Arrays carry colour on the last axis (``[..., 3]``).
"""

from __future__ import annotations

import numpy as np

# sRGB transfer function.
SRGB_BREAK = 0.04045
SRGB_LINEAR_BREAK = SRGB_BREAK / 12.92  # where the linear segment ends on the linear side

# Linear sRGB -> CIE XYZ under D65.
RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
XYZ_TO_RGB = np.linalg.inv(RGB_TO_XYZ)

# Reference white of the Lab conversion.
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])

# Exact CIE Lab constants.
LAB_DELTA = 6.0 / 29.0
LAB_EPSILON = LAB_DELTA**3  # below this, f(t) is linear
LAB_SLOPE = 1.0 / (3.0 * LAB_DELTA**2)
LAB_OFFSET = 4.0 / 29.0

# McCamy's CCT approximation.
MCCAMY_XE, MCCAMY_YE = 0.3320, 0.1858
MCCAMY_COEFFS = (-449.0, 3525.0, -6823.3, 5520.33)  # n^3, n^2, n, 1
CCT_MIN, CCT_MAX = 1000.0, 40000.0
NEUTRAL_CCT = 6504.0  # the CCT the temperature operator treats as "no change"

# White points the temperature operator may target; outside them the daylight-locus fit is meaningless.
TEMPERATURE_CCT_MIN, TEMPERATURE_CCT_MAX = 2000.0, 25000.0
TEMPERATURE_DELTA_MIN = 1e6 / TEMPERATURE_CCT_MAX - 1e6 / NEUTRAL_CCT  # about -113.75 mired (cooler)
TEMPERATURE_DELTA_MAX = 1e6 / TEMPERATURE_CCT_MIN - 1e6 / NEUTRAL_CCT  # about +346.25 mired (warmer)

# Bradford cone response matrix (chromatic adaptation).
BRADFORD = np.array(
    [
        [0.8951, 0.2664, -0.1614],
        [-0.7502, 1.7135, 0.0367],
        [0.0389, -0.0685, 1.0296],
    ]
)


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    return np.where(c <= SRGB_BREAK, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    safe = np.maximum(c, SRGB_LINEAR_BREAK)  # keeps the power away from negative values
    return np.where(c <= SRGB_LINEAR_BREAK, c * 12.92, 1.055 * safe ** (1.0 / 2.4) - 0.055)


def linear_to_xyz(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(rgb, dtype=np.float64) @ RGB_TO_XYZ.T


def xyz_to_linear(xyz: np.ndarray) -> np.ndarray:
    return np.asarray(xyz, dtype=np.float64) @ XYZ_TO_RGB.T


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > LAB_EPSILON, np.cbrt(t), t * LAB_SLOPE + LAB_OFFSET)


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    return np.where(f > LAB_DELTA, f**3, (f - LAB_OFFSET) / LAB_SLOPE)


def xyz_to_lab(xyz: np.ndarray) -> np.ndarray:
    fx, fy, fz = np.moveaxis(_lab_f(np.asarray(xyz, dtype=np.float64) / WHITE_D65), -1, 0)
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_xyz(lab: np.ndarray) -> np.ndarray:
    L, a, b = np.moveaxis(np.asarray(lab, dtype=np.float64), -1, 0)
    fy = (L + 16.0) / 116.0
    f = np.stack([fy + a / 500.0, fy, fy - b / 200.0], axis=-1)
    return _lab_f_inverse(f) * WHITE_D65


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    return xyz_to_lab(linear_to_xyz(srgb_to_linear(rgb)))


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Lab -> sRGB, *not* clipped: out-of-gamut colours come back outside [0, 1]."""
    return linear_to_srgb(xyz_to_linear(lab_to_xyz(lab)))


def mccamy_cct(x: float, y: float) -> float:
    """McCamy's approximation of the correlated colour temperature (kelvin) of chromaticity (x, y)."""
    n = (x - MCCAMY_XE) / (y - MCCAMY_YE)
    c3, c2, c1, c0 = MCCAMY_COEFFS
    return float(((c3 * n + c2) * n + c1) * n + c0)


# x of the CIE daylight locus as a cubic in s = 1000 / cct: coefficients of 1, s, s^2, s^3 (CIE 15:2004, eq. 3.3).
DAYLIGHT_X_LOW = (0.244063, 0.09911, 2.9678, -4.6070)  # cct <= 7000 K (extended below 4000 K)
DAYLIGHT_X_HIGH = (0.237040, 0.24748, 1.9018, -2.0064)  # cct > 7000 K
DAYLIGHT_Y = (-0.275, 2.870, -3.0)  # y = c0 + c1 x + c2 x^2 (eq. 3.4)


def daylight_xy(cct: float) -> tuple[float, float]:
    """Chromaticity of the CIE daylight locus at ``cct`` kelvin (CIE 15:2004, eq. 3.3-3.4).

    The locus is defined for 4000-25000 K; below 4000 K the 4000-7000 K branch is extended, which stays
    smooth and monotone down to the 2000 K this project's operators can reach (2 x "significantly warmer").
    """
    s = 1e3 / cct
    c0, c1, c2, c3 = DAYLIGHT_X_LOW if cct <= 7000.0 else DAYLIGHT_X_HIGH
    x = c0 + c1 * s + c2 * s**2 + c3 * s**3
    y = DAYLIGHT_Y[0] + DAYLIGHT_Y[1] * x + DAYLIGHT_Y[2] * x * x
    return x, y


def xy_to_white(x: float, y: float) -> np.ndarray:
    """XYZ of the white with chromaticity (x, y) and luminance Y = 1."""
    return np.array([x / y, 1.0, (1.0 - x - y) / y])


def temperature_matrix(delta_mired: float) -> np.ndarray:
    """3x3 linear-RGB matrix of the von Kries (Bradford) adaptation for a shift of ``delta_mired``.

    It adapts the daylight white at NEUTRAL_CCT to the daylight white at ``1e6 / (1e6/6504 + delta_mired)``
    kelvin, so delta 0 is exactly the identity (bit for bit) and positive deltas warm the image (lower measured
    CCT).
    Raises ValueError unless TEMPERATURE_DELTA_MIN <= delta_mired <= TEMPERATURE_DELTA_MAX.
    """
    if not TEMPERATURE_DELTA_MIN <= delta_mired <= TEMPERATURE_DELTA_MAX:
        raise ValueError(
            f"temperature delta_mired={delta_mired!r} is out of range; use a value in "
            f"[{TEMPERATURE_DELTA_MIN:.2f}, {TEMPERATURE_DELTA_MAX:.2f}] mired (target white "
            f"{TEMPERATURE_CCT_MAX:.0f} K to {TEMPERATURE_CCT_MIN:.0f} K on the daylight locus)"
        )
    target_cct = NEUTRAL_CCT / (1.0 + delta_mired * (NEUTRAL_CCT / 1e6))  # exactly NEUTRAL_CCT for no shift
    source = BRADFORD @ xy_to_white(*daylight_xy(NEUTRAL_CCT))
    target = BRADFORD @ xy_to_white(*daylight_xy(target_cct))
    # RGB_TO_XYZ^-1 B^-1 diag(target / source) B RGB_TO_XYZ, written as I + (the change) so that no shift gives
    # exactly the identity (the product of the matrices and their inverses leaves 1e-16 off the diagonal)
    change = XYZ_TO_RGB @ np.linalg.inv(BRADFORD) @ np.diag(target / source - 1.0) @ BRADFORD @ RGB_TO_XYZ
    return np.eye(3) + change
