"""The shape ranges an exported artist step accepts, and the check that runs before every call.

Pure Python (no torch): the runtime loads it next to the artifact. AOTInductor and ONNX Runtime both run shapes
outside the exported range without a word (and AOTInductor's own input check refuses batch 1, which computes
correctly), so the range is checked here, against the manifest, with an error that names it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATCH_PIXELS = 16  # one latent token covers 16 x 16 pixels (VAE /8, then 2x2 patches)
MAX_ASPECT = 4.0  # the longest grid side over the shortest, within the pixel limits
MIN_SIDE = 2  # torch.export specialises sizes 0 and 1


@dataclass(frozen=True)
class ExportRanges:
    """Inclusive (min, max) ranges: ``batch``; ``side``, a latent grid side (noise and source grids alike);
    ``hc_len``, H_c tokens; ``pixels``, an image's pixels (grid cells x 256)."""

    batch: tuple[int, int]
    side: tuple[int, int]
    hc_len: tuple[int, int]
    pixels: tuple[int, int]

    @classmethod
    def from_limits(cls, min_pixels: int, max_pixels: int, max_batch: int, max_hc_tokens: int) -> ExportRanges:
        """The ranges for images of ``min_pixels``..``max_pixels`` with sides up to ``MAX_ASPECT``:1."""
        cell = PATCH_PIXELS * PATCH_PIXELS
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"--min-pixels {min_pixels} must be positive and at most --max-pixels {max_pixels}")
        if max_pixels < MIN_SIDE * MIN_SIDE * cell:
            raise ValueError(f"--max-pixels {max_pixels} is below the smallest grid ({MIN_SIDE * PATCH_PIXELS}² px)")
        if max_batch < 1:
            raise ValueError(f"--max-batch must be at least 1, got {max_batch}")
        if max_hc_tokens < 8:
            raise ValueError(f"--max-hc-tokens must be at least 8 (the parity check pads H_c), got {max_hc_tokens}")
        short = max(MIN_SIDE, math.floor(math.sqrt(min_pixels / cell / MAX_ASPECT)))
        long = max(short + 1, math.ceil(math.sqrt(max_pixels / cell * MAX_ASPECT)))
        return cls(batch=(1, max_batch), side=(short, long), hc_len=(2, max_hc_tokens), pixels=(min_pixels, max_pixels))

    @classmethod
    def from_manifest(cls, entry: dict) -> ExportRanges:
        """Inverse of ``as_manifest``."""
        return cls(
            batch=tuple(entry["batch"]),
            side=tuple(entry["noise_h"]),
            hc_len=tuple(entry["hc_len"]),
            pixels=tuple(entry["pixels"]),
        )

    def as_manifest(self) -> dict[str, list[int]]:
        """One [min, max] per dimension name of the step's inputs, plus ``pixels``."""
        side = list(self.side)
        return {
            "batch": list(self.batch),
            "noise_h": side,
            "noise_w": side,
            "source_h": side,
            "source_w": side,
            "hc_len": list(self.hc_len),
            "pixels": list(self.pixels),
        }

    def grid(self, aspect: int) -> tuple[int, int]:
        """A small grid of aspect ``1:aspect`` inside the range (the parity check's sizes)."""
        min_cells = math.ceil(self.pixels[0] / PATCH_PIXELS**2)
        short = max(self.side[0], math.ceil(math.sqrt(min_cells / aspect))) + (2 if aspect == 1 else 1)
        short = min(short, self.side[1] // aspect)
        return short, short * aspect

    def check(self, noise: tuple[int, ...], source: tuple[int, ...], hc: tuple[int, ...]) -> None:
        """Raise ValueError naming the exported range when the shapes of noise [B,Hn,Wn,C], source [B,Hs,Ws,C] and
        h_c [B,L,D] fall outside it."""
        problems = []
        if len(noise) != 4 or len(source) != 4 or len(hc) != 3:
            raise ValueError(f"expected noise/source [B,H,W,64] and h_c [B,L,D], got {noise}, {source}, {hc}")
        if not noise[0] == source[0] == hc[0]:
            problems.append(f"batch sizes differ: noise {noise[0]}, source {source[0]}, h_c {hc[0]}")
        named = [("batch", noise[0], self.batch), ("hc_len", hc[1], self.hc_len)]
        named += [
            (f"{part}_{axis}", size, self.side)
            for part, shape in (("noise", noise), ("source", source))
            for axis, size in zip("hw", shape[1:3], strict=True)
        ]
        problems += [
            f"{name}={size} outside [{low}, {high}]" for name, size, (low, high) in named if not low <= size <= high
        ]
        for part, shape in (("noise", noise), ("source", source)):
            pixels = shape[1] * shape[2] * PATCH_PIXELS**2
            if pixels > self.pixels[1]:
                problems.append(
                    f"{part} grid {shape[1]}x{shape[2]} is {pixels} px, over the exported max {self.pixels[1]}"
                )
        if problems:
            raise ValueError(
                f"input outside the exported range ({'; '.join(problems)}); exported: {self.describe()}. "
                "Resize the input, or export again with wider --min/--max-pixels, --max-batch, "
                "--max-hc-tokens"
            )

    def describe(self) -> str:
        """The ranges in one line, for errors and the CLI."""
        return (
            f"batch {self.batch[0]}..{self.batch[1]}, grid sides {self.side[0]}..{self.side[1]}, "
            f"hc_len {self.hc_len[0]}..{self.hc_len[1]}, pixels up to {self.pixels[1]}"
        )
