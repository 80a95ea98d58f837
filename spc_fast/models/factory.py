"""Ready-to-run critic and artist: ``load_critic``/``load_artist`` from local directories (release weights) and
``tiny_critic``/``tiny_artist`` (tiny random weights, the same classes) wrapped as ``ImageCritic``/``PhotoArtist``.

Defaults follow the device: CUDA when there is one, bfloat16 there and float32 on the CPU. ``compile=True`` compiles
the critic's decode step and the artist's DiT; on CUDA with CUDA graphs (``mode="reduce-overhead"``).
"""

from __future__ import annotations

from pathlib import Path

import torch

from spc_fast.artist.model import PhotoArtist
from spc_fast.critic.model import ImageCritic
from spc_fast.models import qwen_image, qwen_vl


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on CUDA (the release's precision); float32 on the CPU, where bfloat16 matmuls are slow."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _compile_mode(device: torch.device) -> str | None:
    return "reduce-overhead" if device.type == "cuda" else None


def critic_from(
    model, processor, *, attention: str = "auto", compile: bool = False, max_new_tokens: int = 512
) -> ImageCritic:
    """``ImageCritic`` around a loaded Qwen2.5-VL and its processor."""
    return ImageCritic(
        model,
        processor,
        attention=attention,
        compile=compile,
        compile_mode=_compile_mode(model.device),
        max_new_tokens=max_new_tokens,
    )


def artist_from(transformer, vae, scheduler, *, attention: str = "auto", compile: bool = False) -> PhotoArtist:
    """``PhotoArtist`` around loaded components (real-valued RoPE, compiled DiT on request)."""
    artist = PhotoArtist(transformer, vae, scheduler, attention=attention)
    if compile:
        mode = _compile_mode(transformer.device)
        artist.compile(**({"mode": mode} if mode else {}))
    return artist


def load_critic(
    path: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "auto",
    compile: bool = False,
    max_new_tokens: int = 512,
) -> ImageCritic:
    """The critic of a release directory (``vlm/``, optional ``vlm_lora/``) on ``device``; never downloads."""
    device = torch.device(device) if device is not None else default_device()
    model, processor = qwen_vl.load_critic(path, dtype=dtype or default_dtype(device), device=device)
    return critic_from(model, processor, attention=attention, compile=compile, max_new_tokens=max_new_tokens)


def load_artist(
    path: str | Path,
    *,
    release: str | Path | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "auto",
    compile: bool = False,
) -> PhotoArtist:
    """The artist of a diffusers Qwen-Image-Edit-2509 directory (plus ``dit.safetensors``/``dit_lora/`` from
    ``release``, default ``path``) on ``device``; a LoRA is merged for inference. Never downloads."""
    device = torch.device(device) if device is not None else default_device()
    transformer, vae, scheduler = qwen_image.load_artist(
        path, dtype or default_dtype(device), release=release, device=device
    )
    if getattr(transformer, "peft_config", None):
        from spc_fast.artist.lora import merge_lora

        merge_lora(transformer)
    return artist_from(transformer, vae, scheduler, attention=attention, compile=compile)


def tiny_critic(seed: int = 0, *, max_new_tokens: int = 32, **options) -> ImageCritic:
    """A tiny random-weight Qwen2.5-VL critic (float32, CPU) with its offline tokenizer and processor."""
    model, processor = qwen_vl.build_tiny_critic(seed)
    return critic_from(model, processor, max_new_tokens=max_new_tokens, **options)


def tiny_artist(seed: int = 0, **options) -> PhotoArtist:
    """A tiny random-weight Qwen-Image-Edit artist (float32, CPU) that takes ``tiny_critic``'s H_c."""
    return artist_from(*qwen_image.tiny_artist_components(seed), **options)
