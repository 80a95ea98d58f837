"""Full-resolution output of a working-size edit: bilateral guided upsampling (Chen, Adams, Wadhwa, Hasinoff,
"Bilateral Guided Upsampling", SIGGRAPH Asia 2016).

The artist edits at about 1 MP; a tone/colour edit is (locally) a function of the pixel's colour, so instead of
resizing the edited pixels we learn that function at the working size and evaluate it on the full-size photo.

Fit (working size, source s, edit e, both [3, h, w] in [0, 1]). A bilateral grid has vertices at
(x_i, y_j, z_k) = (i / (G_x − 1), j / (G_y − 1), k / (G_z − 1)) over the normalised position u = (x + ½) / w,
v = (y + ½) / h and the luma z = 0.25 r + 0.5 g + 0.25 b. Every vertex holds an affine colour transform
T_ijk ∈ R^{3×4} acting on s̃ = [r, g, b, 1]. Each pixel p splats into the nearest vertex in (x, y) and the two
luma vertices around z with linear weights w_pv, giving per-vertex normal equations

    A_v = Σ_p w_pv s̃_p s̃_pᵀ   (4×4),      B_v = Σ_p w_pv s̃_p e_pᵀ   (4×3),

which are blurred over neighbouring vertices with a [1, 2, 1] / 4 kernel on each axis (the smoothness of the grid:
statistics are shared between neighbours, and vertices no pixel reaches borrow from those around them). Each
vertex then solves the regularised least squares

    T_v = argmin_T Σ_p w_pv ‖T s̃_p − e_p‖² + λ_v ‖T − G‖²_F   ⇒   T_vᵀ = (A_v + λ_v I)⁻¹ (B_v + λ_v Gᵀ),

where G is the affine transform fitted to the whole image (its own ridge pulls it towards the identity) and
λ_v = reg · (mean vertex mass): a vertex with few pixels falls back to the global transform, not to noise. Only the
22 distinct moments are splatted (A is symmetric), in chunks of pixels that stay in cache.

Slice (full size, source S [3, H, W]). The 12 coefficients are interpolated trilinearly at (u, v, z(S)) of every
full-size pixel and applied: E = T(u, v, z) [S; 1], clamped to [0, 1]. On CUDA one fused Triton kernel does it in a
single pass over the image (``spc_fast.kernels.bilateral_slice``, chosen by ``kernels.dispatch``); the torch path
(``slice_torch``) works through chunks of rows, so memory stays bounded for 24 MP photos. An edit that is one affine
colour transform everywhere is reproduced exactly (every vertex fits it); the identity edit gives the source back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spc_fast.images import check_batch, from_unit_float, to_unit_float
from spc_fast.kernels import dispatch

CELL = 16  # working-size pixels between grid vertices along x and y
BINS = 24  # luma vertices
REG = 1e-4  # ridge towards the global transform, in units of the mean vertex mass
GLOBAL_REG = 1e-6  # ridge of the global transform towards the identity, per pixel
FIT_PIXELS_PER_CHUNK = 1 << 16  # working-size pixels splatted at a time (their moments stay in L2)
PIXELS_PER_CHUNK = 1 << 18  # full-size pixels sliced at a time
_LUMA = (0.25, 0.5, 0.25)
# Moments splatted per pixel, as index pairs into [r, g, b, 1, e_r, e_g, e_b]: the 10 distinct entries of s~ s~^T,
# then the 12 of s~ e^T (row j, column c at 10 + 3 j + c); _A_ENTRIES rebuilds the symmetric 4 x 4 from the 10.
_A_PAIRS = [(j, m) for j in range(4) for m in range(j, 4)]
_MOMENT_PAIRS = _A_PAIRS + [(j, 4 + c) for j in range(4) for c in range(3)]
_A_ENTRIES = [_A_PAIRS.index((min(j, m), max(j, m))) for j in range(4) for m in range(4)]


def _luma(rgb: torch.Tensor) -> torch.Tensor:  # [3, ...] -> [...]
    return _LUMA[0] * rgb[0] + _LUMA[1] * rgb[1] + _LUMA[2] * rgb[2]


def _lower_corner(coord: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # continuous vertex coordinate in [0, size - 1] -> (lower vertex index, weight of the upper vertex)
    low = coord.floor().clamp(0, size - 2)
    return low.long(), coord - low


def _blur(stats: torch.Tensor) -> torch.Tensor:
    # [B, C, Z, Y, X] blurred with [1, 2, 1] / 4 along each grid axis, edge vertices replicated
    for dim in (2, 3, 4):
        n = stats.shape[dim]
        if n == 1:
            continue
        lower = torch.cat([stats.narrow(dim, 0, 1), stats.narrow(dim, 0, n - 1)], dim)
        upper = torch.cat([stats.narrow(dim, 1, n - 1), stats.narrow(dim, n - 1, 1)], dim)
        stats = 0.25 * lower + 0.5 * stats + 0.25 * upper
    return stats


def _normal_equations(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # [..., 22] splatted moments -> A [..., 4, 4], B [..., 4, 3]
    return moments[..., _A_ENTRIES].unflatten(-1, (4, 4)), moments[..., len(_A_PAIRS):].unflatten(-1, (4, 3))


def _grid_shape(h: int, w: int, cell: int, bins: int) -> tuple[int, int, int]:
    return bins, max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)


def _splat(source: torch.Tensor, edited: torch.Tensor, cell_index: torch.Tensor, gz: int, cells: int) -> torch.Tensor:
    """The moments of one image pair ([3, h, w] each) splatted onto the grid of ``gz`` luma vertices by ``cells``
    (y, x) vertices, given each pixel's nearest (y, x) vertex ``cell_index``: [Z · cells, 22]."""
    n = cell_index.numel()
    dev = source.device
    values = torch.cat([source.reshape(3, n), torch.ones(1, n, device=dev), edited.reshape(3, n)])  # [7, N]
    first, second = torch.tensor(_MOMENT_PAIRS, device=dev).unbind(1)
    stats = torch.zeros(gz * cells, len(_MOMENT_PAIRS), device=dev)
    for p0 in range(0, n, FIT_PIXELS_PER_CHUNK):
        chunk = values[:, p0:p0 + FIT_PIXELS_PER_CHUNK]
        z0, fz = _lower_corner(_luma(chunk).clamp(0, 1) * (gz - 1), gz)
        vertex = z0 * cells + cell_index[p0:p0 + FIT_PIXELS_PER_CHUNK]
        moments = (chunk.index_select(0, first) * chunk.index_select(0, second)).t().contiguous()  # [n, 22]
        upper = moments * fz[:, None]
        stats.index_add_(0, vertex, moments - upper)
        stats.index_add_(0, vertex + cells, upper)
    return stats


def fit_grid(source_small: torch.Tensor, edited_small: torch.Tensor, *, cell: int = CELL, bins: int = BINS,
             reg: float = REG) -> torch.Tensor:
    """The bilateral grid of affine colour transforms [B, 12, bins, G_y, G_x] (float32) that maps the working-size
    source onto its edit: entry 3·j + c is the weight of input channel j (j = 3: the offset) in output channel c."""
    s = to_unit_float(source_small)
    e = to_unit_float(edited_small)
    b, _, h, w = s.shape
    gz, gy, gx = _grid_shape(h, w, cell, bins)
    dev = s.device
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * (gx - 1)
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * (gy - 1)
    # nearest vertex in x and y (the blur below spreads each vertex's statistics to its neighbours), linear in luma
    cell_index = (v.round().long()[:, None] * gx + u.round().long()).reshape(-1)  # [N]
    splatted = torch.stack([_splat(s[i], e[i], cell_index, gz, gy * gx) for i in range(b)])  # [B, V, 22]
    stats = _blur(splatted.reshape(b, gz, gy, gx, -1).permute(0, 4, 1, 2, 3))  # [B, 22, Z, Y, X]
    a, rhs = _normal_equations(stats.permute(0, 2, 3, 4, 1).reshape(b, gz * gy * gx, -1))  # [B, V, 4, 4|3]

    eye = torch.eye(4, device=dev)
    total_a, total_rhs = _normal_equations(splatted.sum(1))  # [B, 4, 4|3] of the whole image: weights sum to 1
    identity = torch.cat([torch.eye(3, device=dev), torch.zeros(1, 3, device=dev)])  # [4, 3] = T^T of the identity
    n_pixels = h * w
    global_t = torch.linalg.solve(total_a + GLOBAL_REG * n_pixels * eye, total_rhs + GLOBAL_REG * n_pixels * identity)
    lam = reg * n_pixels / (gz * gy * gx)
    local_t = torch.linalg.solve(a + lam * eye, rhs + lam * global_t[:, None])  # [B, V, 4, 3]
    return local_t.reshape(b, gz, gy, gx, 12).permute(0, 4, 1, 2, 3).contiguous()


def slice_torch(grid: torch.Tensor, source_full: torch.Tensor) -> torch.Tensor:
    """Torch path of the slice: ``grid`` [B, 12, Z, Y, X] applied at every pixel of ``source_full`` [B, 3, H, W]
    (uint8 or float in [0, 1]) -> the edited images, clamped to [0, 1], in the source's dtype and layout.

    Per chunk of rows, the grid is first interpolated in y at each row's v into a 2-D table per row,
    [R, 12, Z, X]; one bilinear ``grid_sample`` of those tables at (u, z) of every pixel then completes the
    trilinear slice: one lookup of 12 channels per pixel (the whole grid as a 2-D atlas would take two and a lerp),
    and the rows are the batch, which is what ``grid_sample``'s CPU kernel spreads over threads.
    """
    b, _, h, w = source_full.shape
    _, _, gz, gy, gx = grid.shape
    dev = source_full.device
    rows_per_chunk = max(1, min(h, PIXELS_PER_CHUNK // w))
    by_row = grid.to(dev).permute(0, 3, 1, 2, 4).contiguous()  # [B, Y, 12, Z, X]
    y0, fy = _lower_corner((torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * (gy - 1), gy)
    fy = fy[:, None, None, None]
    # grid_sample's (x, y) in [-1, 1] (align_corners: -1 and 1 are the end vertices) = (u, luma); u is per column
    where = torch.empty(rows_per_chunk, 1, w, 2, device=dev)
    where[..., 0] = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * 2 - 1
    out = torch.empty_like(source_full)
    for i in range(b):
        for r0 in range(0, h, rows_per_chunk):
            rows = min(rows_per_chunk, h - r0)
            band = slice(r0, r0 + rows)
            table = torch.lerp(by_row[i].index_select(0, y0[band]), by_row[i].index_select(0, y0[band] + 1), fy[band])
            s = to_unit_float(source_full[i, :, band])  # [3, R, W]
            torch.mul(_luma(s).clamp_(0, 1), 2, out=where[:rows, 0, :, 1]).sub_(1)
            coef = F.grid_sample(table, where[:rows], mode="bilinear", padding_mode="border", align_corners=True)
            coef = coef[:, :, 0].transpose(0, 1)  # [12, R, W], entry 3 j + c
            edited = torch.addcmul(coef[9:12], coef[0:3], s[0])
            edited.addcmul_(coef[3:6], s[1]).addcmul_(coef[6:9], s[2])
            out[i, :, band] = from_unit_float(edited.clamp_(0, 1), out.dtype)
    return out


def apply_grid(grid: torch.Tensor, source_full: torch.Tensor) -> torch.Tensor:
    """Slice ``grid`` [B, 12, Z, Y, X] at every pixel of ``source_full`` [B, 3, H, W] and apply it: the edited
    images in the source's dtype. The fused Triton kernel where ``kernels.dispatch`` allows it, else ``slice_torch``."""
    if dispatch.use_triton(source_full, op="bilateral_slice"):
        from spc_fast.kernels.bilateral_slice import bilateral_slice

        return bilateral_slice(source_full, grid.to(source_full.device))
    return slice_torch(grid, source_full)


def upsample_edit(source_full: torch.Tensor, source_small: torch.Tensor, edited_small: torch.Tensor, *,
                  cell: int = CELL, bins: int = BINS, reg: float = REG) -> torch.Tensor:
    """Carry a working-size tone/colour edit (``source_small`` -> ``edited_small``) over to ``source_full``.

    Images are (B, 3, H, W) or (3, H, W), uint8 or float in [0, 1], on any one device; the two small ones share
    their shape, and all three their batch size. Returns the edited full-size images in ``source_full``'s dtype
    and shape. ``cell``: working-size pixels between grid vertices; ``bins``: luma vertices; ``reg``: pull of a
    vertex towards the image's global affine transform. The method is in this module's docstring.
    """
    full, unbatched = check_batch(source_full)
    small, _ = check_batch(source_small)
    edited, _ = check_batch(edited_small)
    if small.shape != edited.shape:
        raise ValueError(f"source_small {tuple(small.shape)} and edited_small {tuple(edited.shape)} must have the "
                         "same shape: pass the working-size source the edit was made from")
    if full.shape[0] != small.shape[0]:
        raise ValueError(f"source_full has {full.shape[0]} images but the working-size pair has {small.shape[0]}; "
                         "pass one full-size source per edit")
    if len({full.device, small.device, edited.device}) != 1:
        raise ValueError(f"the three image batches must be on one device, got {full.device}, {small.device} and "
                         f"{edited.device}")
    if cell < 1 or bins < 2 or reg <= 0:
        raise ValueError(f"need cell >= 1, bins >= 2 and reg > 0, got cell={cell}, bins={bins}, reg={reg}")
    out = apply_grid(fit_grid(small, edited, cell=cell, bins=bins, reg=reg), full)
    return out[0] if unbatched else out
