"""The parity check every export ends with: the artifact against eager on fresh random inputs at two aspect ratios
and two H_c lengths, from one artifact (so a shape baked in anywhere shows up as an error or a mismatch)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from spc_fast.export.ranges import ExportRanges
from spc_fast.export.step import step_inputs


def parity_cases(ranges: ExportRanges) -> list[dict]:
    """Square and 1:2 grids x the shortest and the longest H_c; batch 1 and the largest batch, alternating."""
    short_hc, long_hc = ranges.hc_len[0] + 6, ranges.hc_len[1]
    cases = []
    for aspect in (1, 2):
        noise = ranges.grid(aspect)
        source = (min(noise[0] + 1, ranges.side[1]), noise[1])  # a source grid of its own size, as after resizing
        for index, hc_len in enumerate((short_hc, long_hc)):
            batch = ranges.batch[1] if (aspect + index) % 2 else ranges.batch[0]
            cases.append({"batch": batch, "noise": list(noise), "source": list(source), "hc_len": hc_len})
    return cases


def parity_inputs(
    ranges: ExportRanges, width: int, dtype: torch.dtype, device: torch.device | str, seed: int
) -> list[tuple[torch.Tensor, ...]]:
    """Random inputs for each of ``parity_cases``, fresh from ``seed`` (also FP8's calibration batches)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        step_inputs(
            case["batch"],
            tuple(case["noise"]),
            tuple(case["source"]),
            case["hc_len"],
            width,
            dtype=dtype,
            device=device,
            generator=generator,
            padding=3,
        )
        for case in parity_cases(ranges)
    ]


def check_parity(
    engine: Callable[..., torch.Tensor],
    eager: Callable[..., torch.Tensor],
    ranges: ExportRanges,
    *,
    width: int,
    dtype: torch.dtype,
    device: torch.device | str,
    threshold: float,
    seed: int,
) -> dict:
    """Run every case through ``engine`` and ``eager``; the manifest's ``parity`` entry. Max relative error is
    max |engine - eager| / max |eager| (per case, then the worst case), judged against ``threshold``."""
    cases = []
    for case, args in zip(parity_cases(ranges), parity_inputs(ranges, width, dtype, device, seed), strict=True):
        with torch.no_grad():
            expected = eager(*args).float()
            got = engine(*args).float()
        if got.shape != expected.shape:
            raise ValueError(f"exported step returned {tuple(got.shape)} for {case}, eager {tuple(expected.shape)}")
        max_abs = (got - expected).abs().max().item()
        cases.append({**case, "max_abs": max_abs, "max_rel": max_abs / max(expected.abs().max().item(), 1e-30)})
    max_abs = max(case["max_abs"] for case in cases)
    max_rel = max(case["max_rel"] for case in cases)
    passed = math.isfinite(max_abs) and max_rel <= threshold  # NaN fails the comparison too
    return {
        "cases": cases,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "threshold": threshold,
        "passed": passed,
        "seed": seed,
    }
