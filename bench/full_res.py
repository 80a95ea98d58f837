"""Full-resolution output of a working-size edit: bilateral guided upsampling (``spc_fast.artist.upsample_edit``,
provider "transfer") against the bicubic resize of the edit (provider "resize", what the release does).

A known retouch (``spc_fast.retouch.apply``) is applied at full size (the truth) and at the working size (a perfect
artist); each method brings the working-size edit to full size, and is scored against the truth by PSNR and
CIEDE2000 ΔE (``skimage.color.deltaE_ciede2000``). Photos: scikit-image's bundled colour photos (working size a
quarter of their pixels), and a 12 MP photo tiled from flipped copies of one of them and upsampled (working size the
release's 1 MP). A 24 MP timing case measures the cost at phone-photo size, float32 and uint8 (what the command line
passes): the whole transfer, its fit (at the working size) and its slice (at full size) apart, the slice with the bytes
it has to move (the image read once and written once) as GB/s and, on CUDA, as a fraction of the measured copy
bandwidth. Goal: transfer ≥ 40 dB median PSNR and ≥ 8 dB above resize; 24 MP in ≤ 2 s on the CPU.

``python -m spc_fast.bench.full_res [--quick]`` prints the table and the median PSNR of each method.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import numpy as np
import torch
import torch.nn.functional as F

from spc_fast import retouch
from spc_fast.artist import output_size, upsample_edit
from spc_fast.artist.upsample import apply_grid, fit_grid
from spc_fast.bench import harness
from spc_fast.bench.harness import Row, measure
from spc_fast.bench.photos import PHOTO_NAMES
from spc_fast.config import RELEASE_PIXELS
from spc_fast.kernels import dispatch

BASELINES = ("resize",)
ERROR_KIND = "mean CIEDE2000 ΔE against the retouch applied at full size (PSNR in the notes)"
RETOUCHES = {
    "warm+bright": {"exposure": 0.5, "contrast": 1.2, "saturation": 1.3, "temperature": 20.0},
    "cool+flat": {"exposure": -0.4, "contrast": 0.85, "saturation": 0.8, "temperature": -25.0},
    "punchy": {"exposure": 0.3, "contrast": 1.4, "saturation": 1.5, "temperature": 10.0},
}
DELTA_E_PIXELS = 2_000_000  # larger images are scored on a regular subsample of about this many pixels


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The baseline: bicubic (antialiased) resize, clamped to [0, 1]."""
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def _photo(name: str) -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(getattr(skimage.data, name)()).permute(2, 0, 1)[None].float() / 255  # [1, 3, H, W]


def large_photo(height: int, width: int) -> torch.Tensor:
    """[1, 3, height, width]: coffee tiled 2 x 2 with mirrored copies (no seams), resized up."""
    coffee = _photo("coffee")
    tiled = torch.cat([torch.cat([coffee, coffee.flip(-1)], -1), torch.cat([coffee.flip(-2), coffee.flip(-1, -2)], -1)],
                      -2)
    return resize(tiled, (height, width))


def _retouch(images: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    with dispatch.torch_fallback():  # the same maths on every device; the retouch is not what is measured here
        return retouch.apply(images, **params)


def psnr(got: torch.Tensor, truth: torch.Tensor) -> float:
    return float(-10 * torch.log10(((got.double() - truth.double()) ** 2).mean()))


def delta_e(got: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Mean and 95th percentile of CIEDE2000 ΔE over the pixels (a regular subsample of large images)."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    step = max(1, round((got[0, 0].numel() / DELTA_E_PIXELS) ** 0.5))
    a, b = (x[0, :, ::step, ::step].permute(1, 2, 0).double().cpu().numpy() for x in (got, truth))
    d = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    return float(d.mean()), float(np.percentile(d, 95))


def cases(quick: bool) -> list[tuple[str, torch.Tensor, tuple[int, int], list[str]]]:
    """(name, full-size photo, working size, retouch names)."""
    out = []
    for name in PHOTO_NAMES[:2] if quick else PHOTO_NAMES:
        photo = _photo(name)
        h, w = photo.shape[-2:]
        out.append((name, photo, output_size(h, w, h * w // 4), list(RETOUCHES)[:1] if quick else list(RETOUCHES)))
    if not quick:
        photo = large_photo(3000, 4000)
        out.append(("coffee-12MP", photo, output_size(3000, 4000, RELEASE_PIXELS), list(RETOUCHES)[:1]))
    return out


def _methods(full: torch.Tensor, small: torch.Tensor) -> dict[str, functools.partial]:
    return {"transfer": functools.partial(upsample_edit, full, small), "resize": lambda e: resize(e, full.shape[-2:])}


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    for name, photo, size, retouches in cases(quick):
        full = photo.to(device)
        small = resize(full, size)
        for retouch_name in retouches:
            params = RETOUCHES[retouch_name]
            truth, edited_small = _retouch(full, params), _retouch(small, params)
            case = f"{name} {full.shape[-2]}x{full.shape[-1]}<-{size[0]}x{size[1]} {retouch_name}"
            for provider, method in _methods(full, small).items():
                got = method(edited_small)
                timed = functools.partial(method, edited_small)
                p20, p50, p80 = measure(timed, device, min_reps=1, budget_s=1.0, warmup=False)
                mean_de, p95_de = delta_e(got, truth)
                rows.append(Row(bench="full_res", case=case, provider=provider, p20_ms=p20, p50_ms=p50, p80_ms=p80,
                                max_error=mean_de,
                                note=f"PSNR {psnr(got, truth):.2f} dB, ΔE2000 mean {mean_de:.3f} p95 {p95_de:.3f}"))
    height, width = (768, 1024) if quick else (4000, 6000)
    full = large_photo(height, width).to(device)
    small = resize(full, output_size(height, width, height * width // 16 if quick else RELEASE_PIXELS))
    edited_small = _retouch(small, RETOUCHES["warm+bright"])
    for source in (full, (full * 255).round().to(torch.uint8)):
        rows += timing_rows(source, small, edited_small, device, budget_s=1.0 if quick else 5.0)
    return rows


def timing_rows(full: torch.Tensor, small: torch.Tensor, edited_small: torch.Tensor, device: torch.device,
                budget_s: float) -> list[Row]:
    """Wall times of the transfer, of its fit and of its slice (the path dispatch picks, and on CUDA the torch path
    as well), and of the resize baseline, for one full-size source."""
    grid = fit_grid(small, edited_small)
    image_bytes = 2 * full.numel() * full.element_size()  # the least a slice moves: one read, one write
    slice_path = f"slice ({dispatch.backend_name(full, op='bilateral_slice')})"
    timed = {
        "transfer": (functools.partial(upsample_edit, full, small, edited_small), None),
        "fit": (functools.partial(fit_grid, small, edited_small), None),
        slice_path: (functools.partial(apply_grid, grid, full), image_bytes),
        "resize": (functools.partial(resize, edited_small, full.shape[-2:]), None),
    }
    if device.type == "cuda":
        timed["slice (torch)"] = (functools.partial(_slice_on_torch_path, grid, full), image_bytes)
    case = f"timing {full.shape[-2]}x{full.shape[-1]} {str(full.dtype).removeprefix('torch.')}"
    rows = []
    for provider, (fn, nbytes) in timed.items():
        p20, p50, p80 = measure(fn, device, min_reps=3, budget_s=budget_s)
        rows.append(Row(bench="full_res", case=case, provider=provider, p20_ms=p20, p50_ms=p50, p80_ms=p80,
                        bytes_moved=nbytes, gb_per_s=None if nbytes is None else nbytes / p50 / 1e6, note="time only"))
    return rows


def _slice_on_torch_path(grid: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    with dispatch.torch_fallback():
        return apply_grid(grid, full)


def summary(rows: list[Row]) -> str:
    """Median PSNR of each method over the scored cases, and the median gap transfer − resize."""
    scored = [r for r in rows if r.note.startswith("PSNR")]
    by_case: dict[str, dict[str, float]] = {}
    for r in scored:
        by_case.setdefault(r.case, {})[r.provider] = float(r.note.split()[1])
    lines = [f"median PSNR {p}: {statistics.median(c[p] for c in by_case.values()):.2f} dB" for p in ("transfer",
                                                                                                   "resize")]
    gap = statistics.median(c["transfer"] - c["resize"] for c in by_case.values())
    return "\n".join([*lines, f"median gap transfer - resize: {gap:.2f} dB over {len(by_case)} cases"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spc_fast.bench.full_res", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small photos only: a smoke run")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"device: {harness.environment(device)['device']}")
    rows = run(device, quick=args.quick)
    harness.fill_ratios(rows, BASELINES)
    if device.type == "cuda":  # the runner does this for every benchmark; alone, this one does it itself
        copy_gbps = harness.copy_bandwidth(device)
        print(f"copy bandwidth: {copy_gbps:.1f} GB/s")
        for row in rows:
            if row.gb_per_s is not None:
                row.fraction_of_copy_bw = row.gb_per_s / copy_gbps
    print(f"error column = {ERROR_KIND}")
    print(harness.format_table(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
