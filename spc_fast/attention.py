"""One attention setting for both models: ``auto``, ``sdpa``, ``flash`` (flash-attn 2) or ``xformers``.

``resolve`` turns the request into the backend that will run on a device and dtype: a backend whose package is
missing, or that cannot run there (flash-attn and xformers need CUDA; flash-attn needs fp16/bf16), falls back to
PyTorch SDPA with a one-line notice. ``auto`` takes flash-attn when it can run, else SDPA. It never picks xformers:
diffusers' xformers path turns a padding mask into a dense ``[B, heads, S, S]`` bias (gigabytes at 1 MP), so
xformers runs only when asked for.

The libraries apply it: the artist's DiT through diffusers' ``set_attention_backend`` (``DIFFUSERS_BACKEND``), the
critic through transformers' ``attn_implementation`` (``TRANSFORMERS_IMPLEMENTATION``; transformers has no xformers
path, so that critic runs SDPA).
"""

from __future__ import annotations

import importlib.util
import logging

import torch

BACKENDS = ("auto", "sdpa", "flash", "xformers")
DIFFUSERS_BACKEND = {"sdpa": "native", "flash": "flash", "xformers": "xformers"}
# diffusers backend -> the one a padded H_c needs (flash-attn 2 takes no mask; its varlen kernel drops the padding)
DIFFUSERS_MASKED_BACKEND = {"flash": "flash_varlen"}
TRANSFORMERS_IMPLEMENTATION = {"sdpa": "sdpa", "flash": "flash_attention_2"}
_PACKAGE = {"flash": "flash_attn", "xformers": "xformers"}
_EXTRA = {"flash": "pip install 'spc-fast[gpu]' (flash-attn builds against the installed torch and CUDA)",
          "xformers": "pip install xformers (a wheel built for the installed torch)"}

logger = logging.getLogger(__name__)
_noticed: set[str] = set()


def unusable_reason(backend: str, device: torch.device | str, dtype: torch.dtype) -> str | None:
    """Why ``backend`` cannot run on ``device`` in ``dtype``, or None when it can."""
    if backend == "sdpa":
        return None
    if backend not in _PACKAGE:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if importlib.util.find_spec(_PACKAGE[backend]) is None:
        return f"{_PACKAGE[backend]} is not installed ({_EXTRA[backend]})"
    if torch.device(device).type != "cuda":
        return f"{backend} needs a CUDA device, the model is on {torch.device(device).type}"
    if backend == "flash" and dtype not in (torch.float16, torch.bfloat16):
        return f"flash-attn needs float16 or bfloat16 weights, the model is {dtype}"
    return None


def runnable(device: torch.device | str, dtype: torch.dtype) -> list[str]:
    """The backends that can run on ``device`` in ``dtype`` (``sdpa`` first): what benchmarks compare."""
    return [b for b in BACKENDS[1:] if unusable_reason(b, device, dtype) is None]


def resolve(requested: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """The backend that runs for ``requested`` on ``device``/``dtype``: one of ``sdpa``, ``flash``, ``xformers``."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    wanted = "flash" if requested == "auto" else requested
    reason = unusable_reason(wanted, device, dtype)
    if reason is None:
        return wanted
    if requested != "auto" or torch.device(device).type == "cuda":
        notice(f"attention {requested}: {reason}; using PyTorch SDPA")
    return "sdpa"


def notice(message: str) -> None:
    """Log ``message`` as a warning once per process (fallback notices, not repeated per model or batch)."""
    if message not in _noticed:
        _noticed.add(message)
        logger.warning(message)


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
        notice(f"attention {backend}: {error}; using PyTorch SDPA")
        backend = "sdpa"
        transformer.set_attention_backend(DIFFUSERS_BACKEND[backend])
    finally:
        diffusers_logging.set_verbosity(level)
        _AttentionBackendRegistry.set_active_backend(process_wide)
    return backend


def set_vlm_attention(model, requested: str) -> str:
    """Apply ``requested`` to a transformers model through ``set_attn_implementation``; returns the backend that
    runs (xformers, which transformers lacks, runs SDPA)."""
    backend = resolve(requested, model.device, model.dtype)
    if backend == "xformers":
        notice("attention xformers: transformers has no xformers path; the critic uses PyTorch SDPA")
        backend = "sdpa"
    implementation = TRANSFORMERS_IMPLEMENTATION[backend]
    if model.config._attn_implementation != implementation:
        model.set_attn_implementation(implementation)
    return backend
