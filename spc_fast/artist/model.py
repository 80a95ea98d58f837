"""`PhotoArtist`: the Qwen-Image-Edit DiT conditioned on the critic's H_c, its VAE and the flow-matching sampler.

Inference: `edit`. Training (DiffusionNFT, SPEC.md §7–8): `rollout` samples with the deterministic sampler and no CFG
and keeps the trajectory; `velocity` is one DiT prediction at a given timestep, with gradients, under a chosen LoRA
adapter (or none: the reference policy, also `reference()`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

from spc_fast.adapters import adapter_active, adapters_disabled
from spc_fast.artist.mlp import use_release_mlp
from spc_fast.artist.rope import use_real_rope
from spc_fast.artist.sampler import (
    Trajectory,
    denoise,
    pack_latents,
    predict_velocity,
    schedule,
    start_latents,
    unpack_latents,
)
from spc_fast.attention import notice, refuse, set_dit_attention
from spc_fast.config import ArtistConfig
from spc_fast.export.runtime import Engine, EngineDenoiser
from spc_fast.images import OUTPUT_MULTIPLE as MULTIPLE
from spc_fast.images import auto_resize_size, check_batch, output_size, resize_bicubic, to_unit_float

DEFAULT_CONFIG = ArtistConfig()

Generators = torch.Generator | list[torch.Generator] | None
REFERENCE = ""  # the ``adapter`` that runs the DiT with its LoRA adapters disabled (the reference policy)


@dataclass
class EditResult:
    """Edited images in [0, 1], [B, 3, h, w] float32, and the sampling trajectory when it was asked for."""

    images: torch.Tensor
    trajectory: Trajectory | None = None


class PhotoArtist:
    """Transformer + VAE + scheduler in the Qwen-Image-Edit-2509 layout, with our own sampling loop, configured by an
    ``ArtistConfig`` (its weights, device and dtype are the model factory's business).

    ``real_rope`` switches the DiT to the real-valued RoPE path (``spc_fast.artist.rope``), numerically equal to
    diffusers' complex one and free of complex tensors for ``torch.compile`` / export. ``self.attention`` is the
    backend that runs. ``release_mlp`` switches its feed-forwards to the release's activation (``use_release_mlp``,
    SPEC.md §6). Outputs above ``tiled_decode_pixels`` are decoded with the VAE's spatial tiling.
    ``config.compile`` samples through ``torch.compile`` of the DiT with ``compile_backend``/``compile_mode``.

    ``engine`` (``use_engine``): an exported DiT step (``spc_fast.export.load_engine``) samples instead of the DiT,
    which then only describes the model and may have its parameters on the meta device. ``device``/``dtype`` say
    where sampling runs: the engine's when there is one, else the DiT's.
    """

    def __init__(
        self,
        transformer: QwenImageTransformer2DModel,
        vae: AutoencoderKLQwenImage,
        scheduler: FlowMatchEulerDiscreteScheduler,
        config: ArtistConfig = DEFAULT_CONFIG,
        *,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.config = config
        self.vae = vae
        self.scheduler = scheduler
        self.tiled_decode_pixels = config.tiled_decode_pixels
        cfg = vae.config
        self._mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1)
        self.engine: Engine | None = None
        if engine is not None:  # the DiT never runs: no RoPE, feed-forward or attention set-up on it
            if config.compile:
                raise ValueError("an exported engine is already compiled: set compile=False with an engine")
            self.transformer = transformer
            self.use_engine(engine)
            return
        self.transformer = use_real_rope(transformer) if config.real_rope else transformer
        if config.release_mlp:
            use_release_mlp(self.transformer)
        attention = config.attention
        if not config.real_rope and attention != "sdpa":
            # diffusers' own Qwen-Image processor builds a 4-D H_c mask that flash-attn refuses and xformers reads as
            # a dense bias
            reason = "diffusers' own Qwen-Image attention (real_rope=False) runs only PyTorch SDPA"
            if attention != "auto":
                raise refuse(attention, f"{reason}; set real_rope=True")
            notice(f"attention auto: PyTorch SDPA, because {reason}")
            attention = "sdpa"
        self.attention = set_dit_attention(self.transformer, attention)
        self.denoiser = self.transformer
        if config.compile:
            self.compile(backend=compile_backend, **({"mode": compile_mode} if compile_mode else {}))

    @property
    def device(self) -> torch.device:
        """Where sampling runs: the engine's device, else the DiT's."""
        return torch.device(self.engine.device) if self.engine is not None else self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        """The precision sampling runs in: the engine's, else the DiT's."""
        return self.engine.dtype if self.engine is not None else self.transformer.dtype

    def compile(self, **kwargs) -> PhotoArtist:
        """Sample through ``torch.compile(transformer, fullgraph=True, **kwargs)`` from now on."""
        if self.engine is not None:
            raise ValueError("an exported engine is already compiled; compile the eager DiT only")
        self.denoiser = torch.compile(self.transformer, **{"fullgraph": True, **kwargs})
        return self

    def use_engine(self, engine: Engine) -> PhotoArtist:
        """Sample through ``engine`` (an exported DiT step) from now on; the VAE stays this artist's."""
        self.engine = engine
        self.denoiser = EngineDenoiser(engine)
        self.attention = f"exported ({engine.format})"
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, h, w] in [0, 1] -> normalised latents [B, 16, h/8, w/8] (the posterior's mode)."""
        x = (images.to(self.vae.device, self.vae.dtype) * 2 - 1).unsqueeze(2)  # [B, 3, 1, h, w] in [-1, 1]
        z = self.vae.encode(x).latent_dist.mode()
        mean, std = self._mean.to(z.device, z.dtype), self._std.to(z.device, z.dtype)
        return ((z - mean) / std)[:, :, 0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 16, h, w] -> images [B, 3, 8h, 8w] in [0, 1], float32; tiled when large."""
        z = latents.unsqueeze(2).to(self.vae.dtype)
        mean, std = self._mean.to(z.device, z.dtype), self._std.to(z.device, z.dtype)
        z = z / (1.0 / std) + mean
        pixels = latents.shape[-2] * latents.shape[-1] * self.vae.spatial_compression_ratio**2
        tiling = self.vae.use_tiling
        self.vae.use_tiling = pixels > self.tiled_decode_pixels
        try:
            out = self.vae.decode(z, return_dict=False)[0][:, :, 0]
        finally:
            self.vae.use_tiling = tiling
        return (out.float() / 2 + 0.5).clamp(0, 1)

    def _noise(
        self, shape: tuple[int, ...], generator: Generators, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        if isinstance(generator, list):
            if len(generator) != shape[0]:
                raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}; pass one per image")
            draws = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
            return torch.cat(draws).to(device)
        rand_device = generator.device if generator is not None else device
        return torch.randn(shape, generator=generator, device=rand_device, dtype=dtype).to(device)

    def _conditioning(
        self, h_c: torch.Tensor, h_c_mask: torch.Tensor | None, batch: int, *, drop_full_mask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """H_c checked and on the DiT's device and dtype, and its mask as the DiT takes it: with ``drop_full_mask`` an
        all-ones mask is dropped (as diffusers does) so attention runs unmasked (one host sync, once per edit)."""
        if h_c.dim() != 3 or h_c.shape[0] != batch:
            raise ValueError(f"h_c must be [B={batch}, L, D], got {tuple(h_c.shape)}")
        width = self.transformer.config.joint_attention_dim
        if h_c.shape[-1] != width:
            raise ValueError(
                f"h_c width {h_c.shape[-1]} != the DiT's joint_attention_dim {width}; pass the critic's last hidden "
                "states"
            )
        if h_c_mask is not None and h_c_mask.shape != h_c.shape[:2]:
            raise ValueError(f"h_c_mask must be [B, L] = {tuple(h_c.shape[:2])}, got {tuple(h_c_mask.shape)}")
        device = self.device
        full = h_c_mask is None or (drop_full_mask and bool(h_c_mask.all()))
        mask = None if full else h_c_mask.to(device, torch.bool)
        return h_c.to(device, self.dtype), mask

    @torch.no_grad()
    def edit(
        self,
        images: torch.Tensor,
        h_c: torch.Tensor,
        h_c_mask: torch.Tensor | None = None,
        *,
        num_steps: int | None = None,
        guidance: float | None = None,
        negative: tuple[torch.Tensor, torch.Tensor | None] | None = None,
        generator: Generators = None,
        target_pixels: int | None = None,
        size: tuple[int, int] | None = None,
        strength: float | None = None,
        return_trajectory: bool = False,
    ) -> EditResult:
        """Edit a batch of same-size images conditioned on H_c [B, L, D] (right-padded, mask [B, L]).

        Sizes are the release's (SPEC.md §6): the output is ``output_size(H, W, target_pixels)`` (or ``size``), and
        the source the DiT sees is the edit image, that resized photo auto-resized again (``auto_resize_size``),
        both by PIL's bicubic resize (``release_resize``). ``generator``: one for the batch or one per image
        (per-sample seeds, as diffusers' ``randn_tensor``). None takes the config's ``steps``, ``guidance`` and
        ``pixels``.
        """
        config = self.config
        num_steps = config.steps if num_steps is None else num_steps
        guidance = config.guidance if guidance is None else guidance
        target_pixels = config.pixels if target_pixels is None else target_pixels
        strength = config.strength if strength is None else strength
        images, _ = check_batch(images)
        b = images.shape[0]
        h_c, mask = self._conditioning(h_c, h_c_mask, b)
        if guidance > 1.0 and negative is None:
            raise ValueError("guidance > 1 needs negative=(embeddings, mask) for true classifier-free guidance")
        if negative is not None:
            negative = self._conditioning(*negative, b)
        h, w = size if size is not None else output_size(images.shape[2], images.shape[3], target_pixels)
        if h % MULTIPLE or w % MULTIPLE:
            raise ValueError(f"size {(h, w)} must have sides that are multiples of {MULTIPLE}")
        h2, w2 = auto_resize_size(h, w, target_pixels)
        device, dtype = self.device, self.dtype
        sigmas, timesteps = schedule(self.scheduler, num_steps, (h // MULTIPLE) * (w // MULTIPLE), device, strength)
        pixels = release_resize(images, (h, w), (h2, w2)).to(device)
        source = pack_latents(self.encode(pixels).to(dtype))  # [B, S', 64]: the edit image's tokens
        lh, lw = h // 8, w // 8
        zc = self.vae.config.z_dim
        noise = pack_latents(self._noise((b, 1, zc, lh, lw), generator, device, dtype).reshape(b, zc, lh, lw))
        if strength < 1.0:  # from the photo's own latent at the output size: the source's when the sizes agree
            clean = source
            if (h2, w2) != (h, w):
                clean = pack_latents(self.encode(release_resize(images, (h, w), (h, w)).to(device)).to(dtype))
            noise = start_latents(clean, noise, sigmas[0])
        img_shapes = [[(1, h // MULTIPLE, w // MULTIPLE), (1, h2 // MULTIPLE, w2 // MULTIPLE)]] * b
        latents, trajectory = denoise(
            self.denoiser,
            noise,
            source,
            h_c,
            mask,
            img_shapes,
            sigmas,
            timesteps,
            guidance=guidance,
            negative=negative,
            return_trajectory=return_trajectory,
        )
        return EditResult(self.decode(unpack_latents(latents, lh, lw)), trajectory)

    def rollout(
        self,
        images: torch.Tensor,
        h_c: torch.Tensor,
        h_c_mask: torch.Tensor | None,
        *,
        num_steps: int | None = None,
        generator: Generators = None,
        size: tuple[int, int] | None = None,
        adapter: str | None = None,
    ) -> EditResult:
        """An RL rollout (SPEC.md §8): ``edit`` with the deterministic Euler sampler and no CFG, at the config's
        pixels (or ``size``) and strength, returning the edited images and the ``Trajectory`` every step of which
        ``velocity`` can replay. ``adapter`` as in ``velocity`` (DiffusionNFT samples with the old policy's
        adapter); switching adapters changes the modules a compiled DiT guards on, so a compiled sampler recompiles
        once per adapter."""
        with self._adapter_switch(adapter):
            return self.edit(
                images, h_c, h_c_mask, num_steps=num_steps, guidance=1.0, generator=generator, size=size,
                return_trajectory=True,
            )

    def _adapter_switch(self, adapter: str | None) -> AbstractContextManager[None]:
        if adapter is None:
            return nullcontext()
        if adapter == REFERENCE:
            return adapters_disabled(self.transformer)
        return adapter_active(self.transformer, adapter)

    def velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | float,
        source: torch.Tensor,
        h_c: torch.Tensor,
        h_c_mask: torch.Tensor | None,
        img_shapes: list,
        *,
        adapter: str | None = None,
    ) -> torch.Tensor:
        """One DiT prediction of the velocity of the noisy tokens ``latents`` [B, S, 64] next to ``source`` [B, S', 64]
        through the eager DiT, differentiable (gradients flow when they are enabled): [B, S, 64]. ``timestep`` is on
        the scheduler's scale (1000·sigma, as ``Trajectory.timesteps``), a scalar or [B]; ``img_shapes`` as in
        ``Trajectory``. ``adapter``: None runs the active LoRA adapter, a name runs that adapter for this call (e.g.
        the NFT old policy), ``REFERENCE`` runs with the adapters disabled (the reference policy). The mask is used as
        given (no host sync): pass None when every H_c row is full. A sampler step is
        x_next = x + (sigma_next - sigma) v."""
        if self.engine is not None:
            raise ValueError("velocity needs the eager DiT (training); this artist samples through an exported engine")
        b = latents.shape[0]
        h_c, mask = self._conditioning(h_c, h_c_mask, b, drop_full_mask=False)
        device, dtype = self.device, self.dtype
        t = torch.as_tensor(timestep, device=device).expand(b).to(dtype) / 1000
        with self._adapter_switch(adapter):
            return predict_velocity(
                self.transformer, latents.to(device, dtype), source.to(device, dtype), t, h_c, mask, img_shapes
            )

    def reference(self) -> AbstractContextManager[None]:
        """Inside ``with artist.reference():`` the DiT runs with its LoRA adapters disabled (the reference policy of
        the NFT KL term, no second copy of the weights); a no-op for a DiT without adapters."""
        return adapters_disabled(self.transformer)


def release_resize(images: torch.Tensor, size: tuple[int, int], edit_size: tuple[int, int]) -> torch.Tensor:
    """[B, 3, H, W] images (uint8 or float in [0, 1]) resized to ``size``, then to ``edit_size``, each by PIL's bicubic
    resize (``spc_fast.images.resize_bicubic``: uint8 bit-exact with the release, floats without 8-bit rounding):
    [B, 3, h2, w2] float32 in [0, 1] on the CPU."""
    arrays = images.permute(0, 2, 3, 1).cpu()
    arrays = arrays.numpy() if images.dtype == torch.uint8 else arrays.float().numpy()
    out = [resize_bicubic(resize_bicubic(a, size), edit_size) for a in arrays]
    return to_unit_float(torch.from_numpy(np.stack(out))).permute(0, 3, 1, 2).clamp(0, 1).contiguous()
