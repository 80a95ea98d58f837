"""Flow matching for training (SPEC.md §7): ``x_t = (1 − t) x0 + t ε``, the DiT regresses the velocity ``ε − x0``.

The random draws (a timestep and a noise tensor per sample) are kept apart from the loss: ``draw_flow`` makes them,
``noisy_latents`` and ``flow_matching_loss`` use them, so stage III (DiffusionNFT) can replay the same draws. Every
draw comes from ``sample_generator(seed, step, sample_id)``, a generator of its own per sample and step: a sample's
timestep and noise do not depend on which other samples share its batch, on the number of ranks or on a resume.

Timesteps follow the schedule's shifted distribution: ``u ~ U(0, 1)``, then the scheduler's own exponential time
shift with ``mu`` from the image's token count (``spc_fast.artist.sampler.dynamic_shift``), the same shift the
sampler's sigmas get, so training sees the noise levels inference visits (more high-noise steps for larger images).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from spc_fast.artist.sampler import dynamic_shift

__all__ = ["FlowDraws", "draw_flow", "flow_matching_loss", "noisy_latents", "sample_generator", "shifted_timesteps"]


def sample_generator(seed: int, step: int, sample_id: str) -> torch.Generator:
    """A CPU generator seeded by a 63-bit blake2b hash of (seed, step, sample id): the randomness of one sample at one
    optimizer step, the same on any rank, in any batch and after a resume."""
    text = f"{int(seed)}\x1f{int(step)}\x1f{sample_id}".encode()
    digest = hashlib.blake2b(text, digest_size=8, person=b"spc-flow").digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest, "little") >> 1)
    return generator


def shifted_timesteps(u: torch.Tensor, image_seq_len: int, scheduler: FlowMatchEulerDiscreteScheduler) -> torch.Tensor:
    """Uniform draws ``u`` in [0, 1) mapped through the scheduler's time shift (exponential for Qwen-Image) with
    ``mu = dynamic_shift(image_seq_len)``, ``image_seq_len`` the noisy image's tokens (h/16)(w/16): t in [0, 1)."""
    if not scheduler.config.get("use_dynamic_shifting"):
        raise ValueError(
            "the scheduler has use_dynamic_shifting=False: flow-matching training draws timesteps with the "
            "resolution-dependent shift of the Qwen-Image scheduler; load the release's scheduler_config.json"
        )
    mu = dynamic_shift(image_seq_len, scheduler)
    return scheduler.time_shift(mu, 1.0, u.double()).to(u.dtype)


@dataclass
class FlowDraws:
    """One optimizer step's draws for a batch: timesteps t [B] in [0, 1) and noise ε [B, S, C] (float32, CPU)."""

    t: torch.Tensor
    noise: torch.Tensor

    def to(self, device: torch.device | str) -> FlowDraws:
        return FlowDraws(self.t.to(device), self.noise.to(device))


def draw_flow(
    seed: int,
    step: int,
    sample_ids: Sequence[str],
    token_shape: tuple[int, int],
    image_seq_len: int,
    scheduler: FlowMatchEulerDiscreteScheduler,
    strength: float = 1.0,
) -> FlowDraws:
    """Per sample, from its own ``sample_generator``: u ~ U(0, ``strength``) (then shifted: the times a sampler of
    that strength visits), and ε ~ N(0, I) of ``token_shape`` = (S, C) packed latent tokens. Drawn on the CPU so
    every device gives the same numbers."""
    if not sample_ids:
        raise ValueError("draw_flow needs at least one sample id")
    us, noises = [], []
    for sample_id in sample_ids:
        generator = sample_generator(seed, step, sample_id)
        us.append(torch.rand((), generator=generator, dtype=torch.float64) * strength)
        noises.append(torch.randn(token_shape, generator=generator, dtype=torch.float32))
    t = shifted_timesteps(torch.stack(us), image_seq_len, scheduler).float()
    return FlowDraws(t, torch.stack(noises))


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 − t) x0 + t ε for packed latents x0, ε [B, S, C] and t [B] (float32)."""
    t = t.float().view(-1, *([1] * (x0.dim() - 1)))
    return (1.0 - t) * x0.float() + t * noise.float()


def flow_matching_loss(velocity: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error [B] (float32) between the predicted velocity and the target ε − x0."""
    if velocity.shape != x0.shape or noise.shape != x0.shape:
        raise ValueError(
            f"velocity {tuple(velocity.shape)}, x0 {tuple(x0.shape)} and noise {tuple(noise.shape)} must have one shape"
        )
    error = velocity.float() - (noise.float() - x0.float())
    return error.square().flatten(1).mean(1)
