"""``@triton.jit`` colour helpers shared by the image kernels (the maths of ``spc_fast.colour``, in fp32).

Written once here and called from ``photometric_stats``, ``retouch_chain``, ``bilateral_slice`` (``store_rgb``: the
output epilogue of the image kernels; ``round_to_bfloat16`` also from the RL loss kernels). Constants are
``tl.constexpr`` objects built from ``spc_fast.colour`` so the kernels and the float64 reference can never drift
apart.
"""

import triton
import triton.language as tl

from spc_fast import colour

SRGB_BREAK = tl.constexpr(colour.SRGB_BREAK)
SRGB_LINEAR_BREAK = tl.constexpr(colour.SRGB_LINEAR_BREAK)
LAB_DELTA = tl.constexpr(colour.LAB_DELTA)
LAB_EPSILON = tl.constexpr(colour.LAB_EPSILON)
LAB_SLOPE = tl.constexpr(colour.LAB_SLOPE)
LAB_OFFSET = tl.constexpr(colour.LAB_OFFSET)


@triton.jit
def srgb_to_linear(c):
    # c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055)^2.4 = 2^(2.4 log2(...)), argument >= 0.052
    curve = tl.exp2(2.4 * tl.log2(c * (1.0 / 1.055) + 0.055 / 1.055))
    return tl.where(c <= SRGB_BREAK, c * (1.0 / 12.92), curve)


@triton.jit
def linear_to_srgb(c):
    # c <= 0.0031308 ? 12.92 c : 1.055 c^(1/2.4) - 0.055
    curve = 1.055 * tl.exp2(tl.log2(tl.maximum(c, SRGB_LINEAR_BREAK)) * (1.0 / 2.4)) - 0.055
    return tl.where(c <= SRGB_LINEAR_BREAK, 12.92 * c, curve)


@triton.jit
def cbrt_newton(t):
    # t >= LAB_EPSILON (normal, positive): FMA-pipe-only cube root, no special-function unit.
    bits = t.to(tl.uint32, bitcast=True)
    # The exponent field is a log2, so bits(t^(-1/3)) ~ K - bits(t) / 3; K = 0x54A232A3 minimises the worst
    # relative error of the guess over [LAB_EPSILON, 8] (3.4e-2).
    r = (0x54A232A3 - bits // 3).to(tl.float32, bitcast=True)
    minus_t_third = t * (-1.0 / 3.0)
    # Newton on r^-3 = t: r <- r (4 - t r^3) / 3; relative error 3.4e-2 -> 2e-3 -> 1e-5
    r = r * tl.fma(minus_t_third, r * r * r, 4.0 / 3.0)
    r = r * tl.fma(minus_t_third, r * r * r, 4.0 / 3.0)
    r2 = r * r  # ~ t^(-2/3) = 1 / cbrt(t)^2
    y = t * r2  # cbrt(t) = t * t^(-2/3)
    # Newton on y^3 = t with 1 / (3 y^2) ~ r^2 / 3: y <- y - (y^3 - t) r^2 / 3, to float32 rounding
    return tl.fma(tl.fma(y * y, y, -t), r2 * (-1.0 / 3.0), y)


@triton.jit
def lab_f(t, CBRT_NEWTON: tl.constexpr):
    # CIE f(t) = t^(1/3) above (6/29)^3, t / (3 (6/29)^2) + 4/29 below; the root sees the clamped argument.
    # exp2 variant: t^(1/3) = 2^(log2(t) / 3) (on NVIDIA tl.log2 is libdevice's software log2f).
    safe = tl.maximum(t, LAB_EPSILON)
    cube_root = cbrt_newton(safe) if CBRT_NEWTON else tl.exp2(tl.log2(safe) * (1.0 / 3.0))
    return tl.where(t > LAB_EPSILON, cube_root, t * LAB_SLOPE + LAB_OFFSET)


@triton.jit
def lab_f_inverse(f):
    # f > 6/29 ? f^3 : (f - 4/29) * 3 (6/29)^2
    return tl.where(f > LAB_DELTA, f * f * f, (f - LAB_OFFSET) / LAB_SLOPE)


@triton.jit
def round_to_bfloat16(x):
    # nearest-even bf16 value of fp32 x, kept in fp32: add half an ulp (+1 on odd ties), drop the low 16 bits
    # Compiled, this equals the plain cast; Triton's interpreter truncates in the cast, so round explicitly.
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def store_rgb(y_pix, syc, r, g, b, mask, IS_UINT8: tl.constexpr, IS_BFLOAT16: tl.constexpr):
    """Store fp32 r, g, b in [0, 1] at ``y_pix`` (channel stride ``syc``) in the output's dtype: uint8 rounded half
    up from [0, 255], bfloat16 rounded to nearest even, anything else cast."""
    if IS_UINT8:
        r = tl.floor(r * 255.0 + 0.5)
        g = tl.floor(g * 255.0 + 0.5)
        b = tl.floor(b * 255.0 + 0.5)
    if IS_BFLOAT16:
        r = round_to_bfloat16(r)
        g = round_to_bfloat16(g)
        b = round_to_bfloat16(b)
    tl.store(y_pix, r.to(y_pix.dtype.element_ty), mask=mask)
    tl.store(y_pix + syc, g.to(y_pix.dtype.element_ty), mask=mask)
    tl.store(y_pix + 2 * syc, b.to(y_pix.dtype.element_ty), mask=mask)
