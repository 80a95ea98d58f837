"""The one rule deciding whether a fused Triton kernel runs or the torch fallback does.

A kernel runs when Triton imports, the tensors live on a CUDA device (or TRITON_INTERPRET=1 is set, which runs
the same kernels on the CPU through Triton's interpreter, as the tests do), and SPC_FAST_DISABLE_TRITON is not
set to a true value. Anything else falls back to the torch reference path of the op.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch

_TRUE = {"1", "true", "yes", "on"}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure (missing wheel, broken driver) means "no Triton"
        return False
    return True


def interpreting() -> bool:
    return _env_flag("TRITON_INTERPRET")


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when the fused Triton kernel should handle these tensors."""
    if _env_flag("SPC_FAST_DISABLE_TRITON") or not triton_available():
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    on_cpu = all(t.device.type == "cpu" for t in tensors)
    return on_cuda or (on_cpu and interpreting())


def backend_name(*tensors: torch.Tensor) -> str:
    """Which path ``use_triton`` picks, for logs and benchmark rows."""
    if not use_triton(*tensors):
        return "torch"
    return "triton-interpret" if interpreting() else "triton"


@contextlib.contextmanager
def torch_fallback() -> Iterator[None]:
    """Within the block every op takes its torch path (how benchmarks time both paths on one device)."""
    previous = os.environ.get("SPC_FAST_DISABLE_TRITON")
    os.environ["SPC_FAST_DISABLE_TRITON"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SPC_FAST_DISABLE_TRITON"]
        else:
            os.environ["SPC_FAST_DISABLE_TRITON"] = previous
