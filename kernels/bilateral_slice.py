"""Fused Triton kernel of the bilateral-grid slice (``spc_fast.artist.upsample``): one read and one write per pixel.

Per pixel: load r, g, b (uint8 / 255, floats upcast) -> luma z = 0.25 r + 0.5 g + 0.25 b -> the trilinear weights
of the eight grid vertices around (u, v, z) -> per output channel c, the weighted sum of the vertices' rows
[T_c0, T_c1, T_c2, T_c3] (four contiguous floats: one vector load per vertex and channel) -> dot product with
[r, g, b, 1] -> clamp to [0, 1] -> store in the input dtype. Summing the weighted rows and then applying them equals
slicing then applying (the map is linear in the rows), which is what the torch path
(``spc_fast.artist.upsample.slice_torch``) computes.

Grid: (pixel block, image); the vertex rows of a block's pixels are a few KiB that stay in L1/L2, so the kernel
moves the image's bytes once in and once out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spc_fast.kernels.dispatch import interpreting, record_launch
from spc_fast.kernels.tl_colour import store_rgb

# One pixel per thread (256 over 8 warps): the unrolled 8-corner gather keeps its 96 loads in flight, and with two
# pixels per thread sm_90 spills at 255 registers (tests/test_kernels_sm90.py). A 24 MP photo is ~94k programs,
# hundreds per SM on any GPU, so the grid needs no sizing from the SM count.
BLOCK_PIXELS = 256
NUM_WARPS = 8
# The interpreter runs programs one after another with numpy per op: wide blocks, few programs.
INTERPRET_BLOCK_PIXELS = 1 << 14


@triton.jit
def _lerp_weight(fraction, UPPER: tl.constexpr):
    # weight of the lower (UPPER = 0) or upper (UPPER = 1) vertex along one axis
    if UPPER:
        return fraction
    return 1.0 - fraction


@triton.jit
def _lower_corner(coord, size):
    # continuous vertex coordinate in [0, size - 1] -> (lower vertex index, weight of the upper vertex)
    low = tl.minimum(tl.floor(coord), size - 2.0)
    return low.to(tl.int32), coord - low


@triton.jit
def _bilateral_slice_kernel(
    x_ptr,  # input [B, 3, H, W], any strides, uint8 or float
    y_ptr,  # output [B, 3, H, W], same dtype, any strides
    grid_ptr,  # [B, Z, Y, X, 3, 4] fp32 contiguous: row c holds the weights of r, g, b and the offset in channel c
    height,
    width,
    num_pixels,  # H * W
    gz,  # grid vertices along luma, y, x
    gy,
    gx,
    sxb,  # input strides in elements: image, channel, row, column
    sxc,
    sxh,
    sxw,
    syb,  # output strides in elements
    syc,
    syh,
    syw,
    IS_UINT8: tl.constexpr,
    IS_BFLOAT16: tl.constexpr,  # output dtype bf16
    BLOCK: tl.constexpr,
):
    pid_p = tl.program_id(0)
    img = tl.program_id(1)
    p = pid_p * BLOCK + tl.arange(0, BLOCK)
    mask = p < num_pixels
    h = p // width
    w = p - h * width
    x_pix = x_ptr + img.to(tl.int64) * sxb + h * sxh + w * sxw
    y_pix = y_ptr + img.to(tl.int64) * syb + h * syh + w * syw

    r = tl.load(x_pix, mask=mask, other=0).to(tl.float32)
    g = tl.load(x_pix + sxc, mask=mask, other=0).to(tl.float32)
    b = tl.load(x_pix + 2 * sxc, mask=mask, other=0).to(tl.float32)
    if IS_UINT8:
        r = r / 255.0
        g = g / 255.0
        b = b / 255.0

    # vertex coordinates: u = (x + 1/2) / W and v = (y + 1/2) / H over the grid, z = luma over the luma bins
    z0, fz = _lower_corner(tl.clamp(0.25 * r + 0.5 * g + 0.25 * b, 0.0, 1.0) * (gz - 1), gz)
    y0, fy = _lower_corner((h.to(tl.float32) + 0.5) / height * (gy - 1), gy)
    x0, fx = _lower_corner((w.to(tl.float32) + 0.5) / width * (gx - 1), gx)

    j = tl.arange(0, 4)[None, :]  # input channel r, g, b, offset
    source = tl.where(j == 0, r[:, None], tl.where(j == 1, g[:, None], tl.where(j == 2, b[:, None], 1.0)))
    stride_x = 12
    stride_y = gx * stride_x
    stride_z = gy * stride_y
    lowest = grid_ptr + img.to(tl.int64) * gz * stride_z + z0 * stride_z + y0 * stride_y + x0 * stride_x
    acc_r = tl.zeros([BLOCK, 4], tl.float32)
    acc_g = tl.zeros([BLOCK, 4], tl.float32)
    acc_b = tl.zeros([BLOCK, 4], tl.float32)
    for corner in tl.static_range(8):
        dz = corner // 4
        dy = corner // 2 % 2
        dx = corner % 2
        weight = (_lerp_weight(fz, dz) * _lerp_weight(fy, dy) * _lerp_weight(fx, dx))[:, None]
        row = (lowest + dz * stride_z + dy * stride_y + dx * stride_x)[:, None] + j
        acc_r += weight * tl.load(row, mask=mask[:, None], other=0.0)
        acc_g += weight * tl.load(row + 4, mask=mask[:, None], other=0.0)
        acc_b += weight * tl.load(row + 8, mask=mask[:, None], other=0.0)

    out_r = tl.clamp(tl.sum(acc_r * source, axis=1), 0.0, 1.0)
    out_g = tl.clamp(tl.sum(acc_g * source, axis=1), 0.0, 1.0)
    out_b = tl.clamp(tl.sum(acc_b * source, axis=1), 0.0, 1.0)
    store_rgb(y_pix, syc, out_r, out_g, out_b, mask, IS_UINT8, IS_BFLOAT16)


def vertex_rows(grid: torch.Tensor) -> torch.Tensor:
    """The fitted grid [B, 12, Z, Y, X] (entry 3 j + c: weight of input j in output c) as the kernel's
    [B, Z, Y, X, 3, 4] fp32 rows: per vertex and output channel, the weights of r, g, b and the offset."""
    b, _, gz, gy, gx = grid.shape
    return grid.float().reshape(b, 4, 3, gz, gy, gx).permute(0, 3, 4, 5, 2, 1).contiguous()


def _check_offsets(images: torch.Tensor) -> None:
    # offsets inside one image are int32 in the kernel (the image offset is int64)
    span = sum((size - 1) * stride for size, stride in zip(images.shape[1:], images.stride()[1:], strict=True))
    if span >= 2**31:
        raise ValueError(f"image of shape {tuple(images.shape[1:])} spans {span} elements, too many for 32-bit "
                         "offsets; upsample it in tiles of rows")


@torch.library.custom_op("spc_fast::bilateral_slice", mutates_args=())
def bilateral_slice(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Slice the fitted bilateral grid ``grid`` [B, 12, Z, Y, X] at every pixel of the validated ``images``
    [B, 3, H, W] (uint8 or float in [0, 1]) and apply it: the edited images, clamped to [0, 1], in the input's
    dtype, shape and strides (``spc_fast.artist.upsample`` describes the grid)."""
    batch, _, height, width = images.shape
    _, _, gz, gy, gx = grid.shape
    if grid.shape[0] != batch or grid.shape[1] != 12 or min(gz, gy, gx) < 2:
        raise ValueError(f"grid {tuple(grid.shape)} does not fit images {tuple(images.shape)}: need [B, 12, Z, Y, X] "
                         "with the images' batch size and at least 2 vertices per axis (fit it with fit_grid)")
    out = torch.empty_like(images)  # keeps the input's memory format
    _check_offsets(images)
    _check_offsets(out)
    rows = vertex_rows(grid.to(images.device))
    block = INTERPRET_BLOCK_PIXELS if interpreting() else BLOCK_PIXELS
    record_launch(_bilateral_slice_kernel)
    _bilateral_slice_kernel[(triton.cdiv(height * width, block), batch)](
        images,
        out,
        rows,
        height,
        width,
        height * width,
        gz,
        gy,
        gx,
        *images.stride(),
        *out.stride(),
        IS_UINT8=images.dtype == torch.uint8,
        IS_BFLOAT16=images.dtype == torch.bfloat16,
        BLOCK=block,
        num_warps=NUM_WARPS,
    )
    return out


@bilateral_slice.register_fake
def _(images, grid):
    return torch.empty_like(images)
