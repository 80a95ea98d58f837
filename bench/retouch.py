"""Retouch chain (temperature -> exposure -> contrast -> saturation): numpy float64 reference, the same chain
built from kornia's colour conversions (eager and compiled), our torch path, our fused Triton kernel.

Bytes moved = one read and one write of the image, the least any implementation can move (our kernel path reads
the image twice when contrast is on: once for the mean L*, once for the chain).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from spc_fast import colour, retouch
from spc_fast.bench.harness import Row, measure, reference_row, time_once
from spc_fast.bench.photos import photo_batch
from spc_fast.kernels import dispatch

BASELINES = ("numpy-reference", "kornia", "kornia+compile")
ERROR_KIND = "max absolute pixel error in [0, 1] units against the float64 reference"
PARAMS = {"exposure": 0.3, "contrast": 1.2, "saturation": 1.1, "temperature": 15.0}


def kornia_retouch(images: torch.Tensor, matrix: torch.Tensor, contrast: float, saturation: float) -> torch.Tensor:
    """The peer-library baseline: the chain written with kornia's conversions (same maths as SPEC.md §3)."""
    import kornia.color as kc

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    linear = torch.einsum("ij,bjhw->bihw", matrix, kc.rgb_to_linear_rgb(x)).clamp(0, 1)  # temperature + exposure
    lab = kc.rgb_to_lab(kc.linear_rgb_to_rgb(linear))
    mu = lab[:, :1].mean((-1, -2), keepdim=True)
    lab = torch.cat([mu + contrast * (lab[:, :1] - mu), lab[:, 1:]], 1)
    lab = kc.rgb_to_lab(kc.lab_to_rgb(lab, clip=True))
    out = kc.lab_to_rgb(torch.cat([lab[:, :1], saturation * lab[:, 1:]], 1), clip=True)
    return (out * 255).round().to(torch.uint8) if images.dtype == torch.uint8 else out.to(images.dtype)


def reference(images: torch.Tensor) -> np.ndarray:
    x = images.cpu()
    x = x if x.dtype == torch.uint8 else x.double()  # bf16 values are exact in float64
    return np.stack([retouch.apply_reference(img.permute(1, 2, 0).numpy(), **PARAMS) for img in x])


def max_abs_error(got: torch.Tensor, truth: np.ndarray) -> float:
    got = got.detach().cpu()
    got = got.double() / 255.0 if got.dtype == torch.uint8 else got.double()
    return float(np.abs(got.permute(0, 2, 3, 1).numpy() - truth).max())


def torch_path(images: torch.Tensor) -> torch.Tensor:
    with dispatch.torch_fallback():
        return retouch.apply(images, **PARAMS)


def cases(device: torch.device, quick: bool) -> list[tuple[tuple[int, int, int], torch.dtype]]:
    if quick:
        return [((1, 256, 320), torch.uint8), ((4, 64, 64), torch.float32)]
    batch_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return [((1, 3024, 4032), torch.uint8), ((64, 512, 512), batch_dtype)]


def run(device: torch.device, quick: bool = False) -> list[Row]:
    matrix = torch.as_tensor(
        2.0 ** PARAMS["exposure"] * colour.temperature_matrix(PARAMS["temperature"]), dtype=torch.float32, device=device
    )
    rows = []
    for (batch, h, w), dtype in cases(device, quick):
        images = photo_batch(batch, h, w, dtype, device)
        case = f"{batch}x3x{h}x{w} {str(dtype).removeprefix('torch.')}"
        nbytes = 2 * images.numel() * images.element_size()
        truth, reference_ms = time_once(functools.partial(reference, images))
        rows.append(reference_row("retouch", case, reference_ms, nbytes))

        kornia_args = (images, matrix, PARAMS["contrast"], PARAMS["saturation"])
        providers = {"kornia": functools.partial(kornia_retouch, *kornia_args)}
        if not quick:
            providers["kornia+compile"] = functools.partial(torch.compile(kornia_retouch, dynamic=False), *kornia_args)
        providers["spc-fast torch"] = lambda x=images: torch_path(x)
        if dispatch.use_triton(images):
            providers[f"spc-fast {dispatch.backend_name(images)}"] = lambda x=images: retouch.apply(x, **PARAMS)
        for name, fn in providers.items():
            p20, p50, p80 = measure(fn, device)
            rows.append(Row(bench="retouch", case=case, provider=name, p20_ms=p20, p50_ms=p50, p80_ms=p80,
                            bytes_moved=nbytes, gb_per_s=nbytes / p50 / 1e6,
                            max_error=max_abs_error(fn(), truth)))
    return rows
