"""The DiT step as a module whose every size comes from tensor shapes, so one exported artifact serves every aspect
ratio and H_c length in its range.

``predict_velocity`` hands diffusers' forward ``img_shapes``, a Python list of ints: ``torch.export`` would bake
those in as constants. ``ArtistStep`` takes the tokens on their latent grids instead (``[B, H, W, 64]``; the
sampler's ``[B, H*W, 64]`` is a free view of that) and reads the grid sides off the shapes. It is the top-level
forward of the Qwen-Image-Edit-2509 DiT (no zero_cond_t, no guidance embedding, no controlnet) written out; a test
keeps it equal to diffusers' forward.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim

from spc_fast.export.ranges import ExportRanges

INPUT_NAMES = ("noise", "source", "t", "h_c", "h_c_mask")
OUTPUT_NAMES = ("velocity",)
LATENT_CHANNELS = 64  # 16 VAE channels x a 2x2 patch


class ArtistStep(nn.Module):
    """``forward(noise [B,Hn,Wn,64], source [B,Hs,Ws,64], t [B], h_c [B,L,D], h_c_mask [B,L] bool)`` -> the
    velocity of the noisy tokens ``[B,Hn,Wn,64]``; the same numbers as ``predict_velocity`` on the DiT."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        config = transformer.config
        unsupported = [name for name in ("zero_cond_t", "guidance_embeds") if getattr(config, name, False)]
        if unsupported:
            raise ValueError(f"ArtistStep covers the 2509 DiT config; this one sets {unsupported}")
        self.transformer = transformer

    def forward(
        self, noise: torch.Tensor, source: torch.Tensor, t: torch.Tensor, h_c: torch.Tensor, h_c_mask: torch.Tensor
    ) -> torch.Tensor:
        dit = self.transformer
        batch, noise_h, noise_w, channels = noise.shape
        _, source_h, source_w, _ = source.shape
        tokens = torch.cat(
            [noise.reshape(batch, noise_h * noise_w, channels), source.reshape(batch, source_h * source_w, channels)],
            dim=1,
        )
        hidden = dit.img_in(tokens)
        text = dit.txt_in(dit.txt_norm(h_c))
        temb = dit.time_text_embed(t.to(hidden.dtype), hidden)
        rope = dit.pos_embed(
            [[(1, noise_h, noise_w), (1, source_h, source_w)]], max_txt_seq_len=h_c.shape[1], device=noise.device
        )
        mask = h_c_mask.to(torch.bool)
        for block in dit.transformer_blocks:
            text, hidden = block(
                hidden_states=hidden,
                encoder_hidden_states=text,
                encoder_hidden_states_mask=mask,
                temb=temb,
                image_rotary_emb=rope,
            )
        out = dit.proj_out(dit.norm_out(hidden, temb))
        return out[:, : noise_h * noise_w].reshape(batch, noise_h, noise_w, channels)


def dynamic_shapes(ranges: ExportRanges) -> tuple[dict[int, Dim], ...]:
    """``torch.export`` dims for the step's inputs; names match the manifest's symbolic shapes."""
    batch = Dim("batch", min=ranges.batch[0], max=ranges.batch[1])
    noise_h, noise_w = (Dim(n, min=ranges.side[0], max=ranges.side[1]) for n in ("noise_h", "noise_w"))
    source_h, source_w = (Dim(n, min=ranges.side[0], max=ranges.side[1]) for n in ("source_h", "source_w"))
    hc_len = Dim("hc_len", min=ranges.hc_len[0], max=ranges.hc_len[1])
    return (
        {0: batch, 1: noise_h, 2: noise_w},
        {0: batch, 1: source_h, 2: source_w},
        {0: batch},
        {0: batch, 1: hc_len},
        {0: batch, 1: hc_len},
    )


def step_inputs(
    batch: int,
    noise_grid: tuple[int, int],
    source_grid: tuple[int, int],
    hc_len: int,
    width: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
    generator: torch.Generator,
    padding: int = 0,
) -> tuple[torch.Tensor, ...]:
    """Random step inputs (drawn on the CPU from ``generator``, then moved): the last ``padding`` H_c positions of the
    first sample are masked out, as a shorter instruction padded to the batch's length."""

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, dtype)

    noise = normal(batch, *noise_grid, LATENT_CHANNELS)
    source = normal(batch, *source_grid, LATENT_CHANNELS)
    t = torch.rand(batch, generator=generator).to(device, dtype)
    h_c = normal(batch, hc_len, width)
    mask = torch.ones(batch, hc_len, dtype=torch.bool)
    if padding:
        mask[0, hc_len - padding :] = False
    return noise, source, t, h_c, mask.to(device)


def example_inputs(ranges: ExportRanges, width: int, dtype: torch.dtype, device: torch.device | str):
    """The tracing example: sizes strictly inside every range and distinct from each other, so no dim is specialised
    or unified with another by accident."""
    generator = torch.Generator().manual_seed(0)
    batch = min(max(ranges.batch[0], 2), ranges.batch[1])
    low = ranges.side[0]
    return step_inputs(
        batch,
        (low + 2, low + 3),
        (low + 1, low + 4),
        ranges.hc_len[0] + 5,
        width,
        dtype=dtype,
        device=device,
        generator=generator,
        padding=2,
    )
