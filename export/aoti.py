"""AOTInductor: the exported program compiled ahead of time into a ``.pt2`` package (a shared library plus the
weights) that ``torch._inductor.aoti_load_package`` runs from C++ with no Python model code, on the CPU or CUDA."""

from __future__ import annotations

from pathlib import Path

import torch

ARTIFACT = "artist_step.pt2"


def export_aoti(program: torch.export.ExportedProgram, directory: Path) -> str:
    """Compile and package ``program`` into ``directory``; the artifact's file name."""
    torch._inductor.aoti_compile_and_package(program, package_path=str(directory / ARTIFACT))
    return ARTIFACT


def load_aoti(path: Path, device: str = "cpu"):
    """A callable over the step's five inputs returning the velocity tensor, on ``device`` (a CUDA package runs on
    the GPU that ``cuda:N`` names, the current one for plain ``cuda``)."""
    index = torch.device(device).index
    runner = torch._inductor.aoti_load_package(str(path), device_index=-1 if index is None else index)

    def run(*args: torch.Tensor) -> torch.Tensor:
        out = runner(*args)
        return out[0] if isinstance(out, (list, tuple)) else out

    return run
