"""Fused per-block photometric statistics: one read of an sRGB image -> Lab -> mean/M2 of L*, sums of C*, XYZ.

Kernel -> launcher -> ``torch.library`` op ``spc_fast::photometric_stats`` (with a fake) -> torch reference
(``spc_fast.photometric.block_stats_torch``). The output rows follow the contract of ``photometric_partials``
(``STAT_NAMES``) and are combined into attributes by ``spc_fast.photometric.finalize``.

Grid: (pixel block, image). Each program owns ``chunks`` consecutive BLOCK-wide chunks of one image's pixels
and keeps one running (count, mean, M2) of L* per lane (Welford), merged across lanes at the end with Chan's
formula, so the variance never goes through the cancelling sum-of-squares form.

Cube root: two variants behind the ``CBRT_NEWTON`` flag, both within 4 ulp of the float32 cube root.
- Newton (default): a bit-level guess of t^(-1/3), two Newton steps, one polishing step on y^3 = t;
  ~18 FMA-pipe instructions per channel and no special-function (MUFU) op.
- exp2(log2(t) / 3): on NVIDIA ``tl.log2`` compiles to libdevice's software log2f (no MUFU.LG2), so this
  variant costs more instructions as well as three MUFU.EX2 per pixel.
SASS for sm_90 (BLOCK 1024, 8 warps, ptxas of the Triton wheel), loop body per pixel: Newton 136 instructions
and 1 MUFU op (uint8), 225 and 4 (float32, bfloat16); exp2/log2 160 and 4, 245 and 7; the pre-transform adds
~20 instructions. At 128 issued instructions per clock per SM the kernel is issue-bound, not memory-bound, on
an H100. ``launch(..., cbrt_newton=False)`` selects the other variant for benchmarking.
"""

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from spc_fast import colour
from spc_fast.colour_torch import uint8_linear_table
from spc_fast.kernels.dispatch import interpreting, record_launch, use_triton
from spc_fast.kernels.grid import min_programs
from spc_fast.kernels.photometric_partials import NUM_STATS
from spc_fast.kernels.tl_colour import lab_f, srgb_to_linear

# Linear RGB -> (X/Xn, Y/Yn, Z/Zn): the D65 white division is folded into the rows of the matrix.
_XYZ_SCALED = colour.RGB_TO_XYZ / colour.WHITE_D65[:, None]
XR = tl.constexpr(float(_XYZ_SCALED[0, 0]))
XG = tl.constexpr(float(_XYZ_SCALED[0, 1]))
XB = tl.constexpr(float(_XYZ_SCALED[0, 2]))
YR = tl.constexpr(float(_XYZ_SCALED[1, 0]))
YG = tl.constexpr(float(_XYZ_SCALED[1, 1]))
YB = tl.constexpr(float(_XYZ_SCALED[1, 2]))
ZR = tl.constexpr(float(_XYZ_SCALED[2, 0]))
ZG = tl.constexpr(float(_XYZ_SCALED[2, 1]))
ZB = tl.constexpr(float(_XYZ_SCALED[2, 2]))
WHITE_X = tl.constexpr(float(colour.WHITE_D65[0]))
WHITE_Z = tl.constexpr(float(colour.WHITE_D65[2]))
STATS = tl.constexpr(NUM_STATS)


CBRT_NEWTON = True

# BLOCK 1024 over 8 warps is 4 pixels per thread at 64 registers (80 with the pre-transform) on sm_90: 3-4
# programs resident per SM. At least 16 programs per SM (>= 4 waves) keeps the last partial wave cheap, and
# large images still give each program several chunks, which amortises its final reduction.
GPU_BLOCK = 1024
GPU_NUM_WARPS = 8
PROGRAMS_PER_SM = 16
MAX_CHUNKS = 32
# The interpreter runs programs one after another with numpy per op: wide blocks, few programs.
INTERPRET_BLOCK = 1 << 16
INTERPRET_MIN_PROGRAMS = 8


@triton.jit
def _decode(ptr, mask, table_ptr, IS_UINT8: tl.constexpr):
    # sRGB code value -> linear RGB (float32). Masked lanes load 0, which decodes to exactly 0.
    if IS_UINT8:
        code = tl.load(ptr, mask=mask, other=0).to(tl.int32)
        linear = tl.load(table_ptr + code)  # table[q] = linearise(q / 255), 256 float32 in L1
    else:
        c = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)  # upcast before any arithmetic (bf16, fp16)
        linear = srgb_to_linear(c)
    return linear


@triton.jit
def _photometric_stats_kernel(
    image_ptr,  # [B, 3, H, W] any strides for which the H*W pixels sit at a constant pixel stride
    table_ptr,  # [256] float32 linearised uint8 codes
    matrix_ptr,  # [B, 3, 3] float32 pre-transform of linear RGB (read only when HAS_TRANSFORM)
    upper_ptr,  # [B] float32 upper clamp of the pre-transform (read only when HAS_TRANSFORM)
    out_ptr,  # [B, NB, NUM_STATS] float32 per-block statistics, photometric_partials.STAT_NAMES order
    num_pixels,  # H * W
    pixels_per_program,  # chunks * BLOCK
    num_chunks,
    stride_b,
    stride_c,
    stride_p,
    IS_UINT8: tl.constexpr,
    HAS_TRANSFORM: tl.constexpr,
    CBRT_NEWTON: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    img = tl.program_id(1)
    base = image_ptr + img.to(tl.int64) * stride_b
    start = pid * pixels_per_program
    lanes = tl.arange(0, BLOCK)
    if HAS_TRANSFORM:
        mat = matrix_ptr + img * 9
        m00, m01, m02 = tl.load(mat + 0), tl.load(mat + 1), tl.load(mat + 2)
        m10, m11, m12 = tl.load(mat + 3), tl.load(mat + 4), tl.load(mat + 5)
        m20, m21, m22 = tl.load(mat + 6), tl.load(mat + 7), tl.load(mat + 8)
        upper = tl.load(upper_ptr + img)

    count = tl.zeros([BLOCK], tl.float32)  # per lane: pixels seen, running mean and M2 of L*
    mean = tl.zeros([BLOCK], tl.float32)
    m2 = tl.zeros([BLOCK], tl.float32)
    sum_chroma = tl.zeros([BLOCK], tl.float32)
    sum_x = tl.zeros([BLOCK], tl.float32)  # sums of X/Xn, Y/Yn, Z/Zn
    sum_y = tl.zeros([BLOCK], tl.float32)
    sum_z = tl.zeros([BLOCK], tl.float32)
    n = 0.0
    for k in range(0, num_chunks):
        pixel = start + k * BLOCK + lanes
        mask = pixel < num_pixels
        offset = pixel * stride_p
        r = _decode(base + offset, mask, table_ptr, IS_UINT8)
        g = _decode(base + stride_c + offset, mask, table_ptr, IS_UINT8)
        b = _decode(base + 2 * stride_c + offset, mask, table_ptr, IS_UINT8)
        if HAS_TRANSFORM:
            # lin <- clamp(M lin, 0, upper); masked lanes forced back to 0 whatever M and upper are
            r1 = tl.minimum(tl.maximum(m00 * r + m01 * g + m02 * b, 0.0), upper)
            g1 = tl.minimum(tl.maximum(m10 * r + m11 * g + m12 * b, 0.0), upper)
            b1 = tl.minimum(tl.maximum(m20 * r + m21 * g + m22 * b, 0.0), upper)
            r = tl.where(mask, r1, 0.0)
            g = tl.where(mask, g1, 0.0)
            b = tl.where(mask, b1, 0.0)
        x = r * XR + g * XG + b * XB  # X / Xn
        y = r * YR + g * YG + b * YB  # Y / Yn (Yn = 1)
        z = r * ZR + g * ZG + b * ZB  # Z / Zn
        fx = lab_f(x, CBRT_NEWTON)
        fy = lab_f(y, CBRT_NEWTON)
        fz = lab_f(z, CBRT_NEWTON)
        lightness = 116.0 * fy - 16.0  # L*
        a = 500.0 * (fx - fy)  # a*
        bb = 200.0 * (fy - fz)  # b*
        # Masked lanes have r = g = b = 0, so x = y = z = 0, fx = fy = fz and C* = 0: sums need no mask.
        sum_chroma += tl.sqrt(a * a + bb * bb)  # C* = sqrt(a*^2 + b*^2)
        sum_x += x
        sum_y += y
        sum_z += z
        # Welford per lane. Lane validity only ends (pixels grow with k), so every valid lane has seen exactly
        # k + 1 pixels: the 1 / count of the update is one scalar per chunk.
        n += 1.0
        delta = lightness - mean
        new_mean = mean + delta * (1.0 / n)  # mean_k = mean_{k-1} + (L - mean_{k-1}) / k
        new_m2 = m2 + delta * (lightness - new_mean)  # M2_k = M2_{k-1} + (L - mean_{k-1}) (L - mean_k)
        mean = tl.where(mask, new_mean, mean)
        m2 = tl.where(mask, new_m2, m2)
        count += mask.to(tl.float32)

    # Chan et al. across lanes: N = sum n_i, mean = sum n_i mean_i / N,
    # M2 = sum M2_i + sum n_i (mean_i - mean)^2; lanes that saw nothing have n_i = mean_i = 0 and drop out.
    total = tl.sum(count, axis=0)
    block_mean = tl.sum(count * mean, axis=0) / total
    spread = mean - block_mean
    block_m2 = tl.sum(m2, axis=0) + tl.sum(count * spread * spread, axis=0)

    out = out_ptr + (img * tl.num_programs(0) + pid) * STATS
    tl.store(out + 0, total)
    tl.store(out + 1, block_mean)
    tl.store(out + 2, block_m2)
    tl.store(out + 3, tl.sum(sum_chroma, axis=0))
    tl.store(out + 4, tl.sum(sum_x, axis=0) * WHITE_X)  # X = (X/Xn) Xn
    tl.store(out + 5, tl.sum(sum_y, axis=0))
    tl.store(out + 6, tl.sum(sum_z, axis=0) * WHITE_Z)


class LaunchConfig(NamedTuple):
    block: int  # pixels per chunk (lanes of a program)
    chunks: int  # chunks per program
    num_warps: int


def _block_and_min_programs(device: torch.device) -> tuple[int, int]:
    if interpreting():
        return INTERPRET_BLOCK, INTERPRET_MIN_PROGRAMS
    return GPU_BLOCK, min_programs(device, PROGRAMS_PER_SM)


def _chunks(num_pixels: int, device: torch.device) -> int:
    block, min_programs = _block_and_min_programs(device)
    return max(1, min(MAX_CHUNKS, num_pixels // (block * min_programs)))


def num_blocks(height: int, width: int, device: torch.device) -> int:
    """Rows of the output per image: a function of the image size and the device (the fake uses it)."""
    num_pixels = height * width
    block, _ = _block_and_min_programs(device)
    per_program = block * _chunks(num_pixels, device)
    return (num_pixels + per_program - 1) // per_program


def launch_config(num_pixels: int, device: torch.device) -> LaunchConfig:
    """Block size, chunks per program and warps for images of ``num_pixels`` pixels on ``device``."""
    block, _ = _block_and_min_programs(device)
    if interpreting():
        # Same number of programs as with the full block (one, for images up to INTERPRET_BLOCK pixels).
        return LaunchConfig(min(block, triton.next_power_of_2(num_pixels)), _chunks(num_pixels, device), 1)
    return LaunchConfig(block, _chunks(num_pixels, device), GPU_NUM_WARPS)


def _pixel_view(images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The images and the stride between consecutive pixels of the flattened H*W plane."""
    _, _, height, width = images.shape
    stride_h, stride_w = images.stride(2), images.stride(3)
    if width == 1:
        return images, stride_h
    if height == 1 or stride_h == width * stride_w:
        return images, stride_w  # NCHW-contiguous (stride 1) and channels_last (stride 3) both land here
    images = images.contiguous()
    return images, 1


def launch(
    images: torch.Tensor,
    linear_matrix: torch.Tensor | None = None,
    upper: torch.Tensor | None = None,
    *,
    config: LaunchConfig | None = None,
    cbrt_newton: bool = CBRT_NEWTON,
) -> torch.Tensor:
    """Run the kernel on validated images [B, 3, H, W]; ``config`` and ``cbrt_newton`` override defaults."""
    batch, _, height, width = images.shape
    num_pixels = height * width
    config = config or launch_config(num_pixels, images.device)
    images, stride_p = _pixel_view(images)
    if max(abs(stride_p) * num_pixels, 3 * abs(images.stride(1))) >= 2**31:
        raise ValueError(
            f"image of {height} x {width} pixels is too large for 32-bit offsets; measure it in tiles and "
            "combine the partial statistics with photometric.finalize"
        )
    pixels_per_program = config.block * config.chunks
    blocks = triton.cdiv(num_pixels, pixels_per_program)
    out = torch.empty((batch, blocks, NUM_STATS), dtype=torch.float32, device=images.device)
    table = uint8_linear_table(torch.float32, images.device)
    has_transform = linear_matrix is not None
    matrix = linear_matrix.contiguous() if has_transform else table
    upper = upper.contiguous() if has_transform else table
    record_launch(_photometric_stats_kernel)
    _photometric_stats_kernel[(blocks, batch)](
        images,
        table,
        matrix,
        upper,
        out,
        num_pixels,
        pixels_per_program,
        config.chunks,
        images.stride(0),
        images.stride(1),
        stride_p,
        IS_UINT8=images.dtype == torch.uint8,
        HAS_TRANSFORM=has_transform,
        CBRT_NEWTON=cbrt_newton,
        BLOCK=config.block,
        num_warps=config.num_warps,
    )
    return out


@torch.library.custom_op("spc_fast::photometric_stats", mutates_args=())
def _photometric_stats_op(
    images: torch.Tensor, linear_matrix: torch.Tensor | None, upper: torch.Tensor | None
) -> torch.Tensor:
    return launch(images, linear_matrix, upper)


@_photometric_stats_op.register_fake
def _(images: torch.Tensor, linear_matrix: torch.Tensor | None, upper: torch.Tensor | None) -> torch.Tensor:
    batch, _, height, width = images.shape
    return images.new_empty((batch, num_blocks(height, width, images.device), NUM_STATS), dtype=torch.float32)


def eligible(images: torch.Tensor) -> bool:
    """Whether the Triton kernel handles these images under the kernel setting (``dispatch.use_triton``)."""
    return use_triton(images, op="photometric_stats")


def _check_transform(images: torch.Tensor, linear_matrix: torch.Tensor | None, upper: torch.Tensor | None):
    if (linear_matrix is None) != (upper is None):
        raise ValueError(
            "linear_matrix and upper go together: pass both (a [B, 3, 3] matrix and [B] clamps) or neither"
        )
    if linear_matrix is None:
        return
    batch = images.shape[0]
    for name, tensor, shape in (("linear_matrix", linear_matrix, (batch, 3, 3)), ("upper", upper, (batch,))):
        if tuple(tensor.shape) != shape or tensor.dtype != torch.float32 or tensor.device != images.device:
            raise ValueError(
                f"{name} must be float32 of shape {shape} on {images.device}, got {tensor.dtype} "
                f"{tuple(tensor.shape)} on {tensor.device}; use torch.as_tensor(..., dtype=torch.float32)"
            )


def photometric_stats(
    images: torch.Tensor, linear_matrix: torch.Tensor | None = None, upper: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-block statistics [B, NB, NUM_STATS] (``photometric_partials``) of validated sRGB images [B, 3, H, W].

    images: uint8 or float16/bfloat16/float32/float64 in [0, 1] (``images.check_batch``), any memory format.
    With ``linear_matrix`` [B, 3, 3] and ``upper`` [B] (float32, upper >= 0) every pixel's linear RGB becomes
    ``clamp(linear_matrix[b] @ rgb, 0, upper[b])`` before anything is measured. NB = ``num_blocks(H, W, device)``.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}; validate with images.check_batch"
        )
    _check_transform(images, linear_matrix, upper)
    return _photometric_stats_op(images, linear_matrix, upper)
