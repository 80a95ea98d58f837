"""A whole edit (VAE encode, 20 Euler steps of the DiT, VAE decode): diffusers' ``QwenImageEditPlusPipeline`` in
eager mode against our ``PhotoArtist`` eager and compiled, at the same precision, components, H_c, image and seed.

CUDA: the release-width DiT with ``artist_step.CUDA_LAYERS`` layers and the release VAE, random bf16 weights, a
1024² edit, 1024 H_c tokens; ours compiled with CUDA graphs (``mode="reduce-overhead"``). CPU: the tiny models
(float32) at 128², 64 H_c tokens. The error column compares the edited images; with random weights the DiT's
velocity is noise-like, so bf16 rounding differences (real vs complex RoPE) grow over the steps: the CPU float32
run is the tight check (tests/test_artist.py holds it to 1e-5 on three steps).
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
from PIL import Image

from spc_fast import attention
from spc_fast.artist.model import PhotoArtist
from spc_fast.bench.artist_step import CUDA_LAYERS, TEXT_TOKENS
from spc_fast.bench.harness import Row, measure
from spc_fast.config import ArtistConfig
from spc_fast.models import qwen_image

BASELINES = ("diffusers pipeline eager",)
ERROR_KIND = "max |image - image_diffusers| over pixels in [0, 1]"
STEPS = 20


def build(device: torch.device, quick: bool):
    """(transformer, vae, scheduler, description, side) for this device."""
    if device.type == "cuda" and not quick:
        transformer = qwen_image.build_dit(CUDA_LAYERS, torch.bfloat16, device)
        with torch.device(device):
            vae = qwen_image.AutoencoderKLQwenImage(**qwen_image.VAE_CONFIG)
        scheduler = qwen_image.FlowMatchEulerDiscreteScheduler(**qwen_image.SCHEDULER_CONFIG)
        return transformer, vae.to(torch.bfloat16).eval(), scheduler, f"release width, {CUDA_LAYERS} layers", 1024
    transformer, vae, scheduler = qwen_image.tiny_artist_components(0)
    return transformer.to(device), vae.to(device), scheduler, "tiny", 64 if quick else 128


@contextlib.contextmanager
def _source_at_output_size(pixels: int):
    # diffusers encodes the source at ~1 MP (VAE_IMAGE_SIZE) whatever the output size; ours at the output size.
    # Equal at 1 MP; below it (the CPU case) the constant is set to the output size for the comparison.
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus as edit_plus

    previous = edit_plus.VAE_IMAGE_SIZE
    edit_plus.VAE_IMAGE_SIZE = pixels
    try:
        yield
    finally:
        edit_plus.VAE_IMAGE_SIZE = previous


def run(device: torch.device, quick: bool = False) -> list[Row]:
    from diffusers import QwenImageEditPlusPipeline

    transformer, vae, scheduler, what, side = build(device, quick)
    attention.set_dit_attention(transformer, "sdpa")  # the baseline's processors name their backend
    steps = 4 if quick else STEPS
    dtype = transformer.dtype
    text = TEXT_TOKENS[device.type] // (4 if quick else 1)
    g = torch.Generator().manual_seed(0)
    h_c = torch.randn(1, text, transformer.config.joint_attention_dim, generator=g).to(device, dtype)
    mask = torch.ones(1, text, dtype=torch.long, device=device)
    photo = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    pixels = torch.from_numpy(photo).permute(2, 0, 1)

    pipe = QwenImageEditPlusPipeline(
        scheduler=copy.deepcopy(scheduler), vae=vae, text_encoder=None, tokenizer=None, processor=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)

    def diffusers_edit():
        with _source_at_output_size(side * side):
            return pipe(
                image=Image.fromarray(photo), prompt_embeds=h_c, prompt_embeds_mask=mask, height=side, width=side,
                num_inference_steps=steps, true_cfg_scale=1.0, generator=torch.Generator(device).manual_seed(7),
                output_type="pt",
            ).images

    def ours(artist: PhotoArtist):
        def edit():
            return artist.edit(
                pixels, h_c, mask, num_steps=steps, target_pixels=side * side,
                generator=torch.Generator(device).manual_seed(7),
            ).images

        return edit

    candidates = {"diffusers pipeline eager": diffusers_edit}
    for backend in attention.runnable(device, dtype):
        artist = PhotoArtist(copy.deepcopy(transformer), vae, copy.deepcopy(scheduler), ArtistConfig(attention=backend))
        candidates[f"spc-fast eager {backend}"] = ours(artist)
        if not quick:
            compiled = PhotoArtist(
                copy.deepcopy(transformer), vae, copy.deepcopy(scheduler), ArtistConfig(attention=backend)
            )
            compiled.compile(**({"mode": "reduce-overhead"} if device.type == "cuda" else {}))
            candidates[f"spc-fast compile {backend}"] = ours(compiled)

    case = f"{what} {side}² {steps} steps {text} tok {str(dtype).removeprefix('torch.')}"
    rows = []
    with torch.no_grad():
        reference = diffusers_edit().float().to(device)
        for name, fn in candidates.items():
            image = fn().float().to(device)  # the first call also compiles
            p20, p50, p80 = measure(fn, device, min_reps=3, budget_s=2.0 if quick else 8.0)
            rows.append(
                Row(
                    bench="artist_sample",
                    case=case,
                    provider=name,
                    p20_ms=p20,
                    p50_ms=p50,
                    p80_ms=p80,
                    max_error=float((image - reference).abs().max()),
                    note=f"{p50 / steps:.1f} ms/step including VAE encode and decode",
                )
            )
    return rows
