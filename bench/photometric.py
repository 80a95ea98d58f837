"""Photometric attributes: numpy float64 reference, kornia (eager and compiled), our torch path, our Triton kernel.

Shapes: a 12-megapixel photo (1x3x3024x4032) and a training batch as the artist's decoder hands it over
(64x3x512x512), in uint8 and float (bf16 on CUDA, float32 on the CPU). Bytes moved = the input's bytes: the
attribute pass reads the image once and writes a few numbers per block.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from spc_fast import photometric
from spc_fast.bench.harness import Row, measure, reference_row, time_once
from spc_fast.bench.photos import photo_batch
from spc_fast.kernels import dispatch

BASELINES = ("numpy-reference", "kornia", "kornia+compile")
ERROR_KIND = "max relative error of the 4 attributes (floor 1e-3)"


def kornia_attributes(images: torch.Tensor) -> torch.Tensor:
    """The peer-library baseline: kornia's rgb_to_lab and XYZ, then torch reductions (same statistics as ours)."""
    import kornia.color

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    lab = kornia.color.rgb_to_lab(x)
    xyz_mean = kornia.color.rgb_to_xyz(kornia.color.rgb_to_linear_rgb(x)).mean((-1, -2))
    lightness, a, b = lab.unbind(1)
    chroma = torch.sqrt(a * a + b * b)
    stats = [lightness.mean((-1, -2)), lightness.std((-1, -2), correction=0), chroma.mean((-1, -2))]
    return torch.stack([*stats, photometric.cct_from_xyz(xyz_mean)], dim=1)


def torch_path_attributes(images: torch.Tensor) -> torch.Tensor:
    with dispatch.torch_fallback():
        return photometric.attributes(images)


def exp2_cube_root_attributes(images: torch.Tensor) -> torch.Tensor:
    from spc_fast.kernels import photometric_stats

    return photometric.finalize(photometric_stats.launch(images, cbrt_newton=False))


def reference_attributes(images: torch.Tensor) -> np.ndarray:
    x = images.cpu()
    if x.dtype == torch.bfloat16:
        x = x.float()
    return np.stack([photometric.attributes_reference(img.permute(1, 2, 0).numpy()) for img in x])


def max_rel_error(got: torch.Tensor, truth: np.ndarray) -> float:
    got = got.detach().double().cpu().numpy()
    return float((np.abs(got - truth) / np.maximum(np.abs(truth), 1e-3)).max())


def cases(device: torch.device, quick: bool) -> list[tuple[tuple[int, int, int], torch.dtype]]:
    shapes = [(1, 256, 320), (4, 64, 64)] if quick else [(1, 3024, 4032), (64, 512, 512)]
    floats = (torch.bfloat16,) if device.type == "cuda" else (torch.float32,)
    return [(shape, dtype) for shape in shapes for dtype in (torch.uint8, *floats)]


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    for (batch, h, w), dtype in cases(device, quick):
        images = photo_batch(batch, h, w, dtype, device)
        case = f"{batch}x3x{h}x{w} {str(dtype).removeprefix('torch.')}"
        nbytes = images.numel() * images.element_size()

        providers = {"kornia": lambda x=images: kornia_attributes(x)}
        if not quick:
            compiled = torch.compile(kornia_attributes, dynamic=False)
            providers["kornia+compile"] = lambda x=images, f=compiled: f(x)
        providers["spc-fast torch"] = lambda x=images: torch_path_attributes(x)
        if dispatch.use_triton(images):
            providers[f"spc-fast {dispatch.backend_name(images)}"] = lambda x=images: photometric.attributes(x)
            if images.is_cuda:  # the other cube-root variant, to check the instruction-count prediction
                providers["spc-fast triton exp2-cbrt"] = functools.partial(exp2_cube_root_attributes, images)

        truth, reference_ms = time_once(functools.partial(reference_attributes, images))
        rows.append(reference_row("photometric", case, reference_ms, nbytes))
        for name, fn in providers.items():
            p20, p50, p80 = measure(fn, device)
            rows.append(Row(bench="photometric", case=case, provider=name, p20_ms=p20, p50_ms=p50, p80_ms=p80,
                            bytes_moved=nbytes, gb_per_s=nbytes / p50 / 1e6, max_error=max_rel_error(fn(), truth)))
    return rows
