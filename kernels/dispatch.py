"""Which path an op takes, its fused Triton kernel or its torch path, under one setting.

``SPC_FAST_KERNELS`` chooses (``SPC_FAST_DISABLE_TRITON=1`` reads as ``torch``):
- ``auto`` (default): the kernel wherever it can run, else the torch path. The kernels run on CUDA tensors when
  Triton imports, and on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter, as the tests run them).
  Falling back on CUDA tensors is said once, on stderr, with the reason.
- ``triton``: the kernel, or a RuntimeError that names what is missing and how to fix it.
- ``torch``: always the torch path.

Every kernel launch is counted in ``launches`` by kernel name and by how it ran (compiled or interpreted), which
is how the GPU tests prove that the compiled kernels ran.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
from collections.abc import Iterator

import torch

from spc_fast.notices import say_once

SETTINGS = ("auto", "triton", "torch")
SETTING_ENV = "SPC_FAST_KERNELS"
DISABLE_ENV = "SPC_FAST_DISABLE_TRITON"
_TRUE = {"1", "true", "yes", "on"}

logger = logging.getLogger(__name__)
launches: collections.Counter[tuple[str, str]] = collections.Counter()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def setting() -> str:
    """The kernel setting in force: ``auto``, ``triton`` or ``torch`` (read from the environment at every call)."""
    requested = os.environ.get(SETTING_ENV, "").strip().lower()
    if requested and requested not in SETTINGS:
        raise ValueError(
            f"{SETTING_ENV}={os.environ[SETTING_ENV]!r} is not a kernel setting; use one of {', '.join(SETTINGS)}"
        )
    if _env_flag(DISABLE_ENV):
        if requested == "triton":
            raise ValueError(f"{SETTING_ENV}=triton contradicts {DISABLE_ENV}=1; unset one of the two")
        return "torch"
    return requested or "auto"


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure (missing wheel, broken driver) means "no Triton"
        return f"{type(error).__name__}: {error}"
    return None


def triton_available() -> bool:
    return _triton_import_error() is None


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set: Triton then runs kernels on the CPU, one program at a time."""
    return _env_flag("TRITON_INTERPRET")


def unusable_reason(*tensors: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot run on ``tensors`` here (with the fix), or None when they can."""
    if not triton_available():
        detail = _triton_import_error()
        return (
            f"triton does not import{f' ({detail})' if detail else ''}; install it with pip install 'triton>=3.5' "
            "(Linux wheels; it comes with torch's CUDA builds)"
        )
    kinds = sorted({t.device.type for t in tensors})
    if len(kinds) > 1:
        return f"the tensors are on different device types ({', '.join(kinds)}); move them to one device"
    if kinds == ["cuda"] or (kinds == ["cpu"] and interpreting()):
        return None
    if kinds == ["cpu"]:
        return (
            "the tensors are on the CPU and the compiled kernels need CUDA tensors; move them to a GPU, or set "
            "TRITON_INTERPRET=1 before triton is imported to run the kernels in Triton's (slow) interpreter"
        )
    return f"the tensors are on {kinds[0]}; the Triton kernels run on CUDA (or interpreted on the CPU)"


def use_triton(*tensors: torch.Tensor, op: str = "kernel") -> bool:
    """Whether ``op``'s fused Triton kernel handles ``tensors`` under the setting (see the module docstring).

    ``auto`` falls back to the torch path where the kernel cannot run, with a one-time notice for CUDA tensors;
    ``triton`` raises RuntimeError there instead; ``torch`` is always False.
    """
    mode = setting()
    if mode == "torch":
        return False
    reason = unusable_reason(*tensors)
    if reason is None:
        return True
    if mode == "triton":
        raise RuntimeError(
            f"{SETTING_ENV}=triton asks for the {op} Triton kernel, which cannot run: {reason}. Fix that, or set "
            f"{SETTING_ENV}=auto to fall back to the torch path"
        )
    if any(t.is_cuda for t in tensors):
        notice(f"{op}: running the torch path on CUDA tensors because the Triton kernel cannot run: {reason}")
    return False


def backend_name(*tensors: torch.Tensor, op: str = "kernel") -> str:
    """The path ``use_triton`` picks: ``torch``, ``triton`` or ``triton-interpret`` (for logs and benchmark rows)."""
    if not use_triton(*tensors, op=op):
        return "torch"
    return "triton-interpret" if interpreting() else "triton"


def notice(message: str) -> None:
    """Log ``message`` as a warning once per process (a fallback is said once, not per call)."""
    say_once(logger, message)


def record_launch(kernel) -> None:
    """Count one launch of the ``@triton.jit`` function ``kernel`` in ``launches[name, how]``.

    ``how`` is "interpreted" when Triton built the function for its interpreter (TRITON_INTERPRET=1 when the
    kernel module was imported), else "compiled".
    """
    how = "interpreted" if type(kernel).__name__ == "InterpretedFunction" else "compiled"
    launches[kernel.__name__, how] += 1


@contextlib.contextmanager
def torch_fallback() -> Iterator[None]:
    """Within the block every op takes its torch path (how benchmarks time both paths on one device)."""
    previous = os.environ.get(SETTING_ENV)
    os.environ[SETTING_ENV] = "torch"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[SETTING_ENV]
        else:
            os.environ[SETTING_ENV] = previous
