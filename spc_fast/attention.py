"""One attention setting for both models: ``auto``, ``sdpa``, ``flash`` (flash-attn 2) or ``xformers``
(``spc_fast.config.ATTENTION_BACKENDS``).

``resolve`` turns the request into the backend that runs on a device and dtype. An explicit backend that cannot run
there (its package is missing; flash-attn and xformers need CUDA; flash-attn needs fp16/bf16) is a ValueError that
names the missing package or condition and the fix. Only ``auto`` chooses: flash-attn when it can run, else PyTorch
SDPA, and it says once per process, in one line, which backend runs and why. ``auto`` never picks xformers:
diffusers' xformers path turns a padding mask into a dense ``[B, heads, S, S]`` bias (gigabytes at 1 MP), so xformers
runs only when asked for.

The libraries apply it: the artist's DiT through diffusers' ``set_attention_backend`` (``DIFFUSERS_BACKEND``), the
critic through transformers' ``attn_implementation`` (``TRANSFORMERS_IMPLEMENTATION``; transformers has no xformers
path, so the critic refuses an explicit xformers).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

from spc_fast.config import ATTENTION_BACKENDS
from spc_fast.notices import say_once

BACKENDS = ATTENTION_BACKENDS
DIFFUSERS_BACKEND = {"sdpa": "native", "flash": "flash", "xformers": "xformers"}
# diffusers backend -> the one a padded H_c needs (flash-attn 2 takes no mask; its varlen kernel drops the padding)
DIFFUSERS_MASKED_BACKEND = {"flash": "flash_varlen"}
TRANSFORMERS_IMPLEMENTATION = {"sdpa": "sdpa", "flash": "flash_attention_2"}
_PACKAGE = {"flash": "flash_attn", "xformers": "xformers"}
_INSTALL = {"flash": "pip install 'spc-fast[gpu]' (flash-attn builds against the installed torch and CUDA)",
            "xformers": "pip install xformers (a wheel built for the installed torch)"}

logger = logging.getLogger(__name__)


def unusable_reason(backend: str, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why ``backend`` cannot run on ``device`` in ``dtype`` and how to make it run, or None when it can."""
    if backend == "sdpa":
        return None
    if backend not in _PACKAGE:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(_PACKAGE[backend]) is None:
        return f"{_PACKAGE[backend]} is not installed; install it: {_INSTALL[backend]}"
    if torch.device(device).type != "cuda":
        where = torch.device(device).type
        return f"{backend} needs a CUDA device, the model is on {where}; run it on a GPU (device cuda)"
    if backend == "flash" and dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn needs float16 or bfloat16 weights, the model is {dtype}; set dtype bfloat16"
    return None


def runnable(device: torch.device | str, dtype: torch.dtype) -> list[str]:
    """The backends that can run on ``device`` in ``dtype`` (``sdpa`` first): what benchmarks compare."""
    return [b for b in BACKENDS[1:] if unusable_reason(b, device, dtype) is None]


def refuse(requested: str, reason: str) -> ValueError:
    """The error of an explicitly requested backend that cannot run (what ``auto`` would have fallen back from)."""
    return ValueError(
        f"attention {requested!r} cannot run: {reason}. Or choose attention 'sdpa' (PyTorch), or 'auto' (flash-attn "
        "when it can run, else SDPA)"
    )


def resolve(requested: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend that runs for ``requested`` on ``device``/``dtype``: one of ``sdpa``, ``flash``, ``xformers``.
    An explicit backend that cannot run raises ValueError; ``auto`` logs its choice once."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        reason = unusable_reason(requested, device, dtype)
        if reason is not None:
            raise refuse(requested, reason)
        return requested
    reason = unusable_reason("flash", device, dtype)
    if reason is None:
        notice("attention auto: flash-attn (installed, CUDA device, half-precision weights)", logging.INFO)
        return "flash"
    on_gpu = torch.device(device).type == "cuda"
    notice(f"attention auto: PyTorch SDPA, because {reason}", logging.WARNING if on_gpu else logging.INFO)
    return "sdpa"


def notice(message: str, level: int = logging.WARNING) -> None:
    """Log ``message`` once per process (which backend runs and why; not repeated per model or batch)."""
    say_once(logger, message, level)


def set_dit_attention(transformer, requested: str) -> str:
    """Apply ``requested`` to a diffusers DiT through ``set_attention_backend``; returns the backend that runs.

    diffusers also makes the backend process-wide (models whose processors name none follow it); that is put back,
    so setting one model never changes another (a benchmark's baseline, say)."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry
    from diffusers.utils import logging as diffusers_logging

    backend = resolve(requested, transformer.device, transformer.dtype)
    level = diffusers_logging.get_verbosity()
    process_wide = _AttentionBackendRegistry.get_active_backend()[0]
    diffusers_logging.set_verbosity_error()  # set_attention_backend warns "experimental" on every call
    try:
        transformer.set_attention_backend(DIFFUSERS_BACKEND[backend])
    except RuntimeError as error:  # diffusers' own requirement check, e.g. a flash-attn older than it needs
        if requested != "auto":
            raise refuse(requested, f"diffusers refuses it ({error})") from error
        notice(f"attention auto: PyTorch SDPA, because diffusers refuses {backend} ({error})")
        backend = "sdpa"
        transformer.set_attention_backend(DIFFUSERS_BACKEND[backend])
    finally:
        diffusers_logging.set_verbosity(level)
        _AttentionBackendRegistry.set_active_backend(process_wide)
    return backend


def set_vlm_attention(model, requested: str) -> str:
    """Apply ``requested`` to a transformers model through ``set_attn_implementation``; returns the backend that
    runs. transformers has no xformers path: an explicit xformers is refused."""
    if requested == "xformers":
        raise refuse(requested, "transformers has no xformers path for the critic; choose flash or sdpa for it")
    backend = resolve(requested, model.device, model.dtype)
    implementation = TRANSFORMERS_IMPLEMENTATION[backend]
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)
    return backend
