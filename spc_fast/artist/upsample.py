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
λ_v = reg · (mean vertex mass): a vertex with few pixels falls back to the global transform, not to noise.

Slice (full size, source S [3, H, W]). The 12 coefficients are interpolated trilinearly at (u, v, z(S)) of every
full-size pixel (two bilinear ``grid_sample`` lookups and a lerp, see ``apply_grid``) and applied:
E = T(u, v, z) [S; 1], clamped to [0, 1]. Full-size rows are sliced in chunks so memory stays bounded for 24 MP
photos. An edit that is one affine colour transform everywhere is reproduced exactly (every vertex fits it); the
identity edit gives the source back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spc_fast.images import check_batch, from_unit_float, to_unit_float

CELL = 16  # working-size pixels between grid vertices along x and y
BINS = 24  # luma vertices
REG = 1e-4  # ridge towards the global transform, in units of the mean vertex mass
GLOBAL_REG = 1e-6  # ridge of the global transform towards the identity, per pixel
PIXELS_PER_CHUNK = 1 << 17  # full-size pixels sliced at a time (small chunks stay in cache: measured faster)
_LUMA = (0.25, 0.5, 0.25)


def _luma(x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, H, W]
    return _LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2]


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


def _homogeneous(x: torch.Tensor) -> torch.Tensor:  # [B, 3, ...] -> [B, 4, ...] with a row of ones
    return torch.cat([x, torch.ones_like(x[:, :1])], 1)


def _grid_shape(h: int, w: int, cell: int, bins: int) -> tuple[int, int, int]:
    return bins, max(2, round(h / cell) + 1), max(2, round(w / cell) + 1)


def fit_grid(source_small: torch.Tensor, edited_small: torch.Tensor, *, cell: int = CELL, bins: int = BINS,
             reg: float = REG) -> torch.Tensor:
    """The bilateral grid of affine colour transforms [B, 12, bins, G_y, G_x] (float32) that maps the working-size
    source onto its edit: entry 3·j + c is the weight of input channel j (j = 3: the offset) in output channel c."""
    s = to_unit_float(source_small)
    e = to_unit_float(edited_small)
    b, _, h, w = s.shape
    gz, gy, gx = _grid_shape(h, w, cell, bins)
    st = _homogeneous(s).flatten(2)  # [B, 4, N]
    et = e.flatten(2)  # [B, 3, N]
    # per pixel: s~ s~^T (16) and s~ e^T (12)
    moments = torch.cat([(st[:, :, None] * st[:, None]).flatten(1, 2), (st[:, :, None] * et[:, None]).flatten(1, 2)], 1)
    moments = moments.transpose(1, 2)  # [B, N, 28]

    dev = s.device
    u = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * (gx - 1)
    v = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) / h * (gy - 1)
    # nearest vertex in x and y (the blur below spreads each vertex's statistics to its neighbours), linear in luma
    x = u.round().long().expand(h, w).reshape(-1)  # [N]
    y = v.round().long()[:, None].expand(h, w).reshape(-1)
    z0, fz = _lower_corner(_luma(s).flatten(1).clamp(0, 1) * (gz - 1), gz)  # [B, N]
    index = torch.arange(b, device=dev)[:, None] * (gz * gy * gx) + (z0 * gy + y) * gx + x  # [B, N]
    stats = torch.zeros(b * gz * gy * gx, moments.shape[-1], device=dev)
    stats.index_add_(0, index.reshape(-1), (moments * (1 - fz).unsqueeze(-1)).reshape(-1, moments.shape[-1]))
    stats.index_add_(0, (index + gy * gx).reshape(-1), (moments * fz.unsqueeze(-1)).reshape(-1, moments.shape[-1]))
    stats = _blur(stats.reshape(b, gz, gy, gx, -1).permute(0, 4, 1, 2, 3))  # [B, 28, Z, Y, X]
    stats = stats.permute(0, 2, 3, 4, 1).reshape(b, -1, 28)  # [B, V, 28]

    eye = torch.eye(4, device=dev)
    total = moments.sum(1)  # [B, 28]
    identity = torch.cat([torch.eye(3, device=dev), torch.zeros(1, 3, device=dev)])  # [4, 3] = T^T of the identity
    n_pixels = h * w
    global_t = torch.linalg.solve(
        total[:, :16].reshape(b, 4, 4) + GLOBAL_REG * n_pixels * eye,
        total[:, 16:].reshape(b, 4, 3) + GLOBAL_REG * n_pixels * identity,
    )  # [B, 4, 3]
    lam = reg * n_pixels / (gz * gy * gx)
    local_t = torch.linalg.solve(
        stats[..., :16].reshape(b, -1, 4, 4) + lam * eye,
        stats[..., 16:].reshape(b, -1, 4, 3) + lam * global_t[:, None],
    )  # [B, V, 4, 3]
    return local_t.reshape(b, gz, gy, gx, 12).permute(0, 4, 1, 2, 3).contiguous()


def apply_grid(grid: torch.Tensor, source_full: torch.Tensor) -> torch.Tensor:
    """Slice ``grid`` [B, 12, Z, Y, X] at every pixel of ``source_full`` [B, 3, H, W] and apply it: float32 in [0, 1].

    The luma bins are laid side by side into a 2-D atlas [B, 12, Y, Z·X] so that the trilinear slice is two
    bilinear ``grid_sample`` lookups (bins z0 and z0 + 1, whose x ranges never mix) and a lerp: 2-D sampling has
    a vectorised CPU kernel that 3-D sampling lacks.
    """
    b, _, h, w = source_full.shape
    _, _, gz, gy, gx = grid.shape
    atlas = grid.to(source_full.device).permute(0, 1, 3, 2, 4).reshape(b, 12, gy, gz * gx)
    dev = atlas.device
    x_in_bin = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) / w * (gx - 1)  # [W]
    out = torch.empty(b, 3, h, w, device=dev)
    rows_per_chunk = max(1, PIXELS_PER_CHUNK // (b * w))
    for r0 in range(0, h, rows_per_chunk):
        rows = min(rows_per_chunk, h - r0)
        s = to_unit_float(source_full[:, :, r0:r0 + rows])  # [B, 3, R, W]
        v = (torch.arange(r0, r0 + rows, device=dev, dtype=torch.float32) + 0.5) / h * 2 - 1
        z0, fz = _lower_corner(_luma(s).clamp(0, 1) * (gz - 1), gz)  # [B, R, W]
        ax = z0 * gx + x_in_bin  # atlas x of bin z0; bin z0 + 1 is gx further
        ax = torch.cat([ax, ax + gx], 1) * (2 / (gz * gx - 1)) - 1  # [B, 2R, W]
        where = torch.stack([ax, v.repeat(2)[:, None].expand(b, 2 * rows, w)], -1)  # [B, 2R, W, 2]
        coef = F.grid_sample(atlas, where, mode="bilinear", padding_mode="border", align_corners=True)
        fz = fz.unsqueeze(1)
        coef = torch.lerp(coef[:, :, :rows], coef[:, :, rows:], fz)  # [B, 12, R, W]
        edited = coef[:, 9:12] + coef[:, 0:3] * s[:, :1] + coef[:, 3:6] * s[:, 1:2] + coef[:, 6:9] * s[:, 2:3]
        out[:, :, r0:r0 + rows] = edited.clamp_(0, 1)
    return out


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
    grid = fit_grid(small, edited, cell=cell, bins=bins, reg=reg)
    out = from_unit_float(apply_grid(grid, full), full.dtype)
    return out[0] if unbatched else out
