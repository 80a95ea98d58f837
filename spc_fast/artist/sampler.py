"""Flow-matching Euler sampling in the Qwen-Image-Edit-2509 layout, written out so RL rollouts can use every step.

Latents: the VAE gives [B, 16, 1, h, w] at 1/8 of the pixel size; normalised as (z - mean) / std per channel and
packed into 2x2 patches, [B, (h/2)(w/2), 64], the DiT's tokens. Per step the noisy tokens (at the output size
H x W) and the source tokens (the edit image, h2 x w2, SPEC.md §6) are concatenated on the sequence axis, noise first,
the DiT sees `img_shapes = [(1, H/16, W/16), (1, h2/16, w2/16)]` per sample, and only the first (noisy) part of its
prediction is kept. Flow matching: x_t = (1 - t) x0 + t eps, v = eps - x0, so an Euler step is
x <- x + (sigma_next - sigma) v and the clean estimate is x0 = x_t - sigma v.

`schedule` with the release's scheduler config is DiffSynth's Qwen-Image schedule (tests/test_release_fidelity.py); it
needs at least two steps: with one, the terminal stretch divides 0 by 0 (DiffSynth's formula included). With
``strength`` s < 1 the steps cover unshifted time [s, 0] instead of [1, 0] (SDEdit): sampling starts from the photo's
own latent noised to the first sigma, ``start_latents``, not from pure noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from spc_fast.images import edit_image_size, output_size

__all__ = [
    "Trajectory",
    "denoise",
    "dynamic_shift",
    "edit_image_size",
    "output_size",
    "pack_latents",
    "predict_velocity",
    "schedule",
    "start_latents",
    "unpack_latents",
]


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] latents -> [B, (h/2)(w/2), 4C] tokens, each token a 2x2 patch ordered (c, dy, dx)."""
    b, c, h, w = z.shape
    z = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # [B, h/2, w/2, C, 2, 2]
    return z.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of `pack_latents`: [B, (h/2)(w/2), 4C] -> [B, C, h, w] (h, w in latent pixels)."""
    b, _, c4 = tokens.shape
    z = tokens.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # [B, C, h/2, 2, w/2, 2]
    return z.reshape(b, c4 // 4, h, w)


def dynamic_shift(image_seq_len: int, scheduler: FlowMatchEulerDiscreteScheduler) -> float:
    """mu, linear in the noisy-image token count between (base_image_seq_len, base_shift) and (max_.., max_shift)."""
    cfg = scheduler.config
    slope = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    return image_seq_len * slope + cfg.base_shift - slope * cfg.base_image_seq_len


def schedule(
    scheduler: FlowMatchEulerDiscreteScheduler,
    num_steps: int,
    image_seq_len: int,
    device: torch.device,
    strength: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigmas [T + 1] ending at 0, timesteps [T] = 1000 sigma) from the scheduler with the dynamic shift (mu from
    ``image_seq_len``, the noise tokens (h/16)(w/16)), over unshifted time [``strength``, 0] (1: the release's)."""
    least = 2 if scheduler.config.get("shift_terminal") else 1
    if num_steps < least:
        raise ValueError(
            f"num_steps must be >= {least} (a one-step schedule's terminal stretch divides 0 by 0), got {num_steps}"
        )
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1] (1 samples from pure noise), got {strength}")
    base = np.linspace(strength, strength / num_steps, num_steps)
    scheduler.set_timesteps(num_steps, device=device, sigmas=base, mu=dynamic_shift(image_seq_len, scheduler))
    return scheduler.sigmas.to(device), scheduler.timesteps.to(device)


def start_latents(clean: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Where a ``strength`` < 1 run starts: x_σ = (1 − σ) x0 + σ ε for the photo's tokens x0 [B, S, 64] at the output
    size, in float32 and stored in ``noise``'s dtype."""
    return ((1.0 - sigma) * clean.float() + sigma * noise.float()).to(noise.dtype)


@dataclass
class Trajectory:
    """Every step of one batched sampling run, in packed tokens: what an RL trainer replays."""

    latents: torch.Tensor  # [T + 1, B, S, 64]: x_T (the noise, or the noised photo) ... x_0, at the output size
    x0: torch.Tensor  # [T, B, S, 64]: x_t - sigma_t v at each step
    sigmas: torch.Tensor  # [T + 1]
    timesteps: torch.Tensor  # [T]
    source: torch.Tensor  # [B, S', 64]: the edit image's tokens (S' may differ from S)
    img_shapes: list  # per sample [(1, H/16, W/16), (1, h2/16, w2/16)]: noise tokens, then source tokens


def predict_velocity(
    denoiser,
    x: torch.Tensor,
    source: torch.Tensor,
    t: torch.Tensor,
    h_c: torch.Tensor,
    h_c_mask: torch.Tensor | None,
    img_shapes: list,
) -> torch.Tensor:
    """The DiT's velocity for the noisy tokens ``x`` [B, S, 64] next to the source tokens [B, S', 64] (after them, as
    ``img_shapes`` lists them), at ``t`` [B] in [0, 1]
    (the scheduler's timestep / 1000): [B, S, 64], the noisy part of the prediction."""
    tokens = torch.cat([x, source], dim=1)  # [B, S + S', 64]
    out = denoiser(
        hidden_states=tokens,
        timestep=t,
        encoder_hidden_states=h_c,
        encoder_hidden_states_mask=h_c_mask,
        img_shapes=img_shapes,
        return_dict=False,
    )[0]
    return out[:, : x.shape[1]]


def denoise(
    denoiser,
    noise: torch.Tensor,
    source: torch.Tensor,
    h_c: torch.Tensor,
    h_c_mask: torch.Tensor | None,
    img_shapes: list,
    sigmas: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    guidance: float = 1.0,
    negative: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    return_trajectory: bool = False,
) -> tuple[torch.Tensor, Trajectory | None]:
    """Euler flow-matching loop over `sigmas`; `denoiser` is the DiT (eager or compiled).

    Arithmetic follows diffusers' scheduler step: the update is computed in float32 from the latents, then stored in
    the model's dtype. With guidance > 1, true CFG against `negative` = (embeddings, mask), rescaled to the
    conditional prediction's norm per token.
    """
    x = noise
    steps_x, steps_x0 = [x], []
    for i in range(len(timesteps)):
        t = timesteps[i].expand(x.shape[0]).to(x.dtype) / 1000
        v = predict_velocity(denoiser, x, source, t, h_c, h_c_mask, img_shapes)
        if guidance > 1.0:
            v = v.clone()  # a CUDA-graph replay reuses its output buffer: the negative pass would overwrite v
            v_neg = predict_velocity(denoiser, x, source, t, negative[0], negative[1], img_shapes)
            mixed = v_neg + guidance * (v - v_neg)
            v = mixed * (torch.norm(v, dim=-1, keepdim=True) / torch.norm(mixed, dim=-1, keepdim=True))
        if return_trajectory:
            steps_x0.append((x.float() - sigmas[i] * v.float()).to(x.dtype))
        x = (x.float() + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)
        if return_trajectory:
            steps_x.append(x)
    if not return_trajectory:
        return x, None
    return x, Trajectory(torch.stack(steps_x), torch.stack(steps_x0), sigmas, timesteps, source, img_shapes)
