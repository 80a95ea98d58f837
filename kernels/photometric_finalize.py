"""The merge of ``photometric_stats``'s per-block partials into attributes [B, 4] as one Triton program per image.

``spc_fast.photometric.finalize`` does the same in torch: 52 aten ops, about 30 kernel launches, which on an H200
cost ~0.4 ms a call against ~0.05 ms for the pass over a 12 MP image (bench/RESULTS.md, "GPU"). Here the merge is
one launch: float64 sums over the blocks, Chan's parallel formula for the variance of L* (a second pass over the
block rows, which are a few kilobytes), then the McCamy CCT of the mean XYZ; the same numbers as ``finalize``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spc_fast import colour
from spc_fast.kernels.dispatch import interpreting, record_launch
from spc_fast.kernels.photometric_partials import NUM_STATS

BLOCK_ROWS = 128  # block rows read per iteration; a 12 MP image has a few hundred
NUM_WARPS = 4


@triton.jit
def _row_sums(base, num_rows, STATS: tl.constexpr, BLOCK: tl.constexpr):
    """(n, Σ count·mean_l, Σ m2_l, Σ chroma, Σ X, Σ Y, Σ Z) over an image's rows, float64."""
    n = tl.zeros([BLOCK], tl.float64)
    weighted_l = tl.zeros([BLOCK], tl.float64)
    m2 = tl.zeros([BLOCK], tl.float64)
    chroma = tl.zeros([BLOCK], tl.float64)
    sx = tl.zeros([BLOCK], tl.float64)
    sy = tl.zeros([BLOCK], tl.float64)
    sz = tl.zeros([BLOCK], tl.float64)
    for start in range(0, num_rows, BLOCK):
        rows = start + tl.arange(0, BLOCK)
        mask = rows < num_rows
        row = base + rows * STATS
        count = tl.load(row, mask=mask, other=0.0).to(tl.float64)
        n += count
        weighted_l += count * tl.load(row + 1, mask=mask, other=0.0).to(tl.float64)
        m2 += tl.load(row + 2, mask=mask, other=0.0).to(tl.float64)
        chroma += tl.load(row + 3, mask=mask, other=0.0).to(tl.float64)
        sx += tl.load(row + 4, mask=mask, other=0.0).to(tl.float64)
        sy += tl.load(row + 5, mask=mask, other=0.0).to(tl.float64)
        sz += tl.load(row + 6, mask=mask, other=0.0).to(tl.float64)
    return tl.sum(n), tl.sum(weighted_l), tl.sum(m2), tl.sum(chroma), tl.sum(sx), tl.sum(sy), tl.sum(sz)


@triton.jit
def _finalize_kernel(
    partials_ptr,  # [B, NB, STATS] float32, contiguous
    out_ptr,  # [B, 4] float32: mean L*, std L*, mean chroma, CCT
    num_rows,
    STATS: tl.constexpr,
    BLOCK: tl.constexpr,
    XE: tl.constexpr,  # McCamy's epicentre and cubic (colour.py)
    YE: tl.constexpr,
    C3: tl.constexpr,
    C2: tl.constexpr,
    C1: tl.constexpr,
    C0: tl.constexpr,
    CCT_MIN: tl.constexpr,
    CCT_MAX: tl.constexpr,
    NEUTRAL_CCT: tl.constexpr,
):
    img = tl.program_id(0)
    base = partials_ptr + img.to(tl.int64) * num_rows * STATS
    n, weighted_l, m2, chroma, sx, sy, sz = _row_sums(base, num_rows, STATS, BLOCK)
    mean = weighted_l / n
    spread = tl.zeros([BLOCK], tl.float64)  # Σ count (mean_l - mean)²: the blocks' means about the image's
    for start in range(0, num_rows, BLOCK):
        rows = start + tl.arange(0, BLOCK)
        mask = rows < num_rows
        row = base + rows * STATS
        count = tl.load(row, mask=mask, other=0.0).to(tl.float64)
        offset = tl.load(row + 1, mask=mask, other=0.0).to(tl.float64) - mean
        spread += count * offset * offset
    variance = tl.maximum((m2 + tl.sum(spread)) / n, 0.0)

    x_mean, y_mean, z_mean = sx / n, sy / n, sz / n
    total = x_mean + y_mean + z_mean
    black = total < 1e-8
    safe = tl.where(black, 1.0, total)
    k = (x_mean / safe - XE) / (y_mean / safe - YE)
    cct = tl.minimum(tl.maximum(((C3 * k + C2) * k + C1) * k + C0, CCT_MIN), CCT_MAX)
    cct = tl.where(black, NEUTRAL_CCT, cct)

    out = out_ptr + img * 4
    tl.store(out, mean.to(tl.float32))
    tl.store(out + 1, tl.sqrt(variance).to(tl.float32))
    tl.store(out + 2, (chroma / n).to(tl.float32))
    tl.store(out + 3, cct.to(tl.float32))


def launch(partials: torch.Tensor, neutral_cct: float) -> torch.Tensor:
    """Attributes [B, 4] float32 of partials [B, NB, NUM_STATS] float32 (one program per image)."""
    partials = partials.contiguous()
    batch, num_rows, _ = partials.shape
    out = torch.empty((batch, 4), dtype=torch.float32, device=partials.device)
    c3, c2, c1, c0 = colour.MCCAMY_COEFFS
    record_launch(_finalize_kernel)
    _finalize_kernel[(batch,)](
        partials,
        out,
        num_rows,
        STATS=NUM_STATS,
        BLOCK=BLOCK_ROWS,
        XE=colour.MCCAMY_XE,
        YE=colour.MCCAMY_YE,
        C3=c3,
        C2=c2,
        C1=c1,
        C0=c0,
        CCT_MIN=colour.CCT_MIN,
        CCT_MAX=colour.CCT_MAX,
        NEUTRAL_CCT=neutral_cct,
        num_warps=1 if interpreting() else NUM_WARPS,
    )
    return out


@torch.library.custom_op("spc_fast::photometric_finalize", mutates_args=())
def photometric_finalize(partials: torch.Tensor, neutral_cct: float) -> torch.Tensor:
    """``spc_fast.photometric.finalize`` of float32 partials [B, NB, NUM_STATS] in one launch; ``neutral_cct``: the
    CCT a black image gets."""
    return launch(partials, neutral_cct)


@photometric_finalize.register_fake
def _(partials: torch.Tensor, neutral_cct: float) -> torch.Tensor:
    return partials.new_empty((partials.shape[0], 4), dtype=torch.float32)
