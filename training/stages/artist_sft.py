"""Stage I, the artist (``spc-fast train artist-sft``): flow matching of the Qwen-Image-Edit DiT on (input, target)
pairs, conditioned on the instruction's H_c.

Sizes are inference's (``PhotoArtist.edit``): the target is generated at ``output_size`` of the input (for
``config.pixels``), the source the DiT sees is the release's edit image of the input (``release_resize``), its
tokens appended after the noisy ones. The conditioning is the instruction mode's H_c: the frozen critic's last-layer
states over the chat holding the input and the record's suggestions joined by "; " (``ImageCritic.
instruction_states``). The VAE is frozen and encodes source and target once per step; x0 = the target's packed
latents, x_t = (1 − t) x0 + t ε with (t, ε) drawn per sample (``spc_fast.training.flow``), and the loss is the mean
squared error of the predicted velocity to ε − x0. LoRA (r/α from the config, the release's targets) or full.

``Adapt`` (stage II) is this stage with another conditioning and other targets: it overrides ``conditioning`` and
``targets`` and keeps the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch

from spc_fast.artist.lora import add_lora
from spc_fast.artist.model import PhotoArtist, release_resize
from spc_fast.artist.sampler import pack_latents, predict_velocity
from spc_fast.config import TINY
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.vocabulary import NO_EDIT
from spc_fast.images import OUTPUT_MULTIPLE, auto_resize_size, output_size, resize_bicubic
from spc_fast.models import build_critic, qwen_image
from spc_fast.models.factory import artist_from
from spc_fast.training.config import TrainConfig
from spc_fast.training.data.manifest import Record, load_image
from spc_fast.training.export import export_artist
from spc_fast.training.flow import draw_flow, flow_matching_loss, noisy_latents
from spc_fast.training.stage import StepLoss, stack_samples
from spc_fast.training.stages.flops import attention_flops, dit_streams, matmul_flops


class Velocity(torch.nn.Module):
    """The trained module: the DiT, whose forward predicts the velocity of the noisy tokens next to the source tokens
    (``predict_velocity``, as the sampler calls it). Inputs arrive in float32; FSDP or autocast cast them."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(
        self,
        x_t: torch.Tensor,
        source: torch.Tensor,
        t: torch.Tensor,
        h_c: torch.Tensor,
        h_c_mask: torch.Tensor,
        img_shapes: list,
    ) -> torch.Tensor:
        return predict_velocity(self.transformer, x_t, source, t, h_c, h_c_mask, img_shapes)


def discarded_parameters(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The DiT's parameters whose output is thrown away: the last block's text-stream output (``attn.to_add_out``
    and ``txt_mlp``, LoRA layers included), since only the image tokens leave the last block. They never receive a
    gradient, and an optimizer holding them would have no state for them to checkpoint."""
    index = len(transformer.transformer_blocks) - 1
    last = transformer.transformer_blocks[index]
    out = []
    for part, module in (("attn.to_add_out", last.attn.to_add_out), ("txt_mlp", last.txt_mlp)):
        out += [(f"transformer_blocks.{index}.{part}.{name}", p) for name, p in module.named_parameters()]
    return out


def instruction(record: Record) -> str:
    """The record's suggestions as one instruction ("no edit needed" when it has none)."""
    return "; ".join(record.suggestions) or NO_EDIT


def to_unit(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> [3, H, W] float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def _tiny_components() -> tuple:
    with torch.random.fork_rng(devices=[]):
        return qwen_image.tiny_artist_components(0)


def artist_components(config: TrainConfig, device: torch.device, stage: str) -> tuple:
    """(DiT, VAE, scheduler) of ``config.artist.weights`` in float32 (the optimizer's master weights) on
    ``device``: the tiny models, or a Qwen-Image-Edit-2509 directory (a previous run's ``RUN/final`` too)."""
    weights = config.artist.weights
    if weights is None:
        raise ValueError(
            f"{stage} trains the diffusion artist: set artist.weights (a Qwen-Image-Edit-2509 "
            "directory, a previous run's RUN/final, or 'tiny')"
        )
    if weights == TINY:
        transformer, vae, scheduler = _tiny_components()
        return transformer.to(device), vae.to(device), scheduler
    return qwen_image.load_artist(weights, torch.float32, release=config.artist.release, device=device)


def export_base(config: TrainConfig) -> tuple:
    """(the base an export links or writes beside the trained weights, their dtype) for ``export_artist``."""
    weights = config.artist.weights
    if weights == TINY:
        return _tiny_components, torch.float32
    return (Path(weights), Path(config.artist.release or weights)), torch.bfloat16


class ArtistSFT:
    """Stage I of the artist (see the module docstring)."""

    name = "artist-sft"

    def __init__(self) -> None:
        self.step = 0
        self.last_text_tokens: list[int] = []

    # ---- models -----------------------------------------------------------------------------------------------

    def build(self, config: TrainConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.critic: ImageCritic = build_critic(dataclasses.replace(config.critic, device=str(device)))
        self.critic.model.requires_grad_(False)
        self.artist = self._artist(config, device)
        width = self.critic.model.config.text_config.hidden_size
        if width != self.artist.transformer.config.joint_attention_dim:
            raise ValueError(
                f"the critic's width {width} is not the DiT's joint_attention_dim "
                f"{self.artist.transformer.config.joint_attention_dim}: pair models of one release"
            )
        self.model = Velocity(self.artist.transformer).train()
        self.streams = dit_streams(self.artist.transformer)

    def _artist(self, config: TrainConfig, device: torch.device) -> PhotoArtist:
        """The DiT (float32: the optimizer's master weights), VAE and scheduler; LoRA added (or the weights' own
        ``dit_lora/`` trained further, as stage II continues stage I) or every weight trained."""
        transformer, vae, scheduler = artist_components(config, device, self.name)
        adapted = bool(getattr(transformer, "peft_config", None))
        if config.lora:
            if not adapted:
                add_lora(transformer, rank=config.lora_rank, alpha=config.lora_alpha)
            for name, parameter in transformer.named_parameters():
                parameter.requires_grad_(".lora_" in name)
        else:
            if adapted:  # the adapter becomes part of the weights that are trained
                transformer.fuse_lora()
                transformer.unload_lora()
            transformer.requires_grad_(True)
        # kept out of the optimizer (no gradient ever reaches them) and written back as they are at export
        self.untrained = {}
        for name, parameter in discarded_parameters(transformer):
            if parameter.requires_grad:
                parameter.requires_grad_(False)
                self.untrained[f"transformer.{name}"] = parameter.detach().cpu().clone()
        vae.requires_grad_(False)
        artist_config = dataclasses.replace(config.artist, device=str(device), dtype="float32", compile=False)
        return artist_from(transformer, vae, scheduler, artist_config)

    def trainable(self) -> torch.nn.Module:
        return self.model

    def blocks(self) -> list[torch.nn.Module]:
        return list(self.artist.transformer.transformer_blocks)

    # ---- data -------------------------------------------------------------------------------------------------

    def sizes(self, record: Record) -> tuple[tuple[int, int], tuple[int, int]]:
        """(output size, edit-image size) of the record's input at ``config.pixels``, as ``PhotoArtist.edit``."""
        size = output_size(record.height, record.width, self.config.pixels)
        return size, auto_resize_size(*size, self.config.pixels)

    def bucket(self, record: Record) -> Hashable:
        if record.target is None:
            raise ValueError(
                f"record {record.id!r} (task {record.task}) has no target: {self.name} learns input -> "
                "target pairs; build pairs (spc-fast data build) or leave score-only records out"
            )
        return self.sizes(record)[0]

    def common(self, record: Record) -> dict:
        """What every artist stage's sample holds: the critic's view of the input (the photo as decoded: the critic
        makes its own edit image of it) and the DiT's source pixels."""
        image = load_image(record.input)  # uint8 [3, H, W]
        size, edit_size = self.sizes(record)
        source = release_resize(image[None], size, edit_size)[0]  # [3, h2, w2] float32
        return {"id": record.id, "critic_image": image.permute(1, 2, 0).numpy(), "source": source, "size": size}

    def working(self, path: Path, size: tuple[int, int]) -> torch.Tensor:
        """An image file at the working ``size`` (PIL bicubic), [3, h, w] float32 in [0, 1]."""
        return to_unit(resize_bicubic(load_image(path).permute(1, 2, 0).numpy(), size))

    def sample(self, record: Record) -> dict:
        self.bucket(record)
        sample = self.common(record)
        return {**sample, "target": self.working(record.target, sample["size"]), "instruction": instruction(record)}

    def collate(self, samples: list[dict]) -> dict:
        return stack_samples(samples)

    # ---- loss -------------------------------------------------------------------------------------------------

    def conditioning(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """H_c [B, L, D] and its mask [B, L]: the instruction mode's states of the frozen critic."""
        return self.critic.instruction_states(batch["critic_image"], batch["instruction"])

    def targets(self, batch: dict, judged: object) -> torch.Tensor:
        """[B, 3, h, w] target pixels in [0, 1]; ``judged`` is what ``conditioning`` returned."""
        return batch["target"]

    @torch.no_grad()
    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, h, w] pixels in [0, 1] -> packed latent tokens [B, (h/16)(w/16), 64] float32 (frozen VAE)."""
        return pack_latents(self.artist.encode(pixels.to(self.device))).float()

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        judged = self.conditioning(batch)
        h_c, mask = judged[0], judged[1]
        x0 = self.latents(self.targets(batch, judged))
        source = self.latents(batch["source"])
        (h, w), (h2, w2) = batch["size"][0], tuple(batch["source"].shape[-2:])
        tiles = (h // OUTPUT_MULTIPLE, w // OUTPUT_MULTIPLE)
        draws = draw_flow(
            self.config.seed, self.step, batch["id"], tuple(x0.shape[1:]), tiles[0] * tiles[1], self.artist.scheduler
        ).to(self.device)
        x_t = noisy_latents(x0, draws.noise, draws.t)
        img_shapes = [[(1, *tiles), (1, h2 // OUTPUT_MULTIPLE, w2 // OUTPUT_MULTIPLE)]] * len(batch["id"])
        velocity = model(
            x_t, source, draws.t, h_c.to(self.device, torch.float32), mask.to(self.device).bool(), img_shapes
        )
        per_sample = flow_matching_loss(velocity, x0, draws.noise)
        self.last_text_tokens = mask.sum(1).tolist()
        tokens = len(batch["id"]) * (x0.shape[1] + source.shape[1])
        return StepLoss(per_sample.mean(), {"t": draws.t.mean()}, samples=len(batch["id"]), tokens=tokens)

    def flops_per_sample(self, batch: dict) -> float:
        """The DiT's image stream over the noisy and source tokens, its text stream over H_c's rows (of the last
        ``loss`` call), joint attention over both; gradients through every block, weight gradients when full."""
        image_params, text_params, width, layers = self.streams
        (h, w), (h2, w2) = batch["size"][0], tuple(batch["source"].shape[-2:])
        image = (h // OUTPUT_MULTIPLE) * (w // OUTPUT_MULTIPLE) + (h2 // OUTPUT_MULTIPLE) * (w2 // OUTPUT_MULTIPLE)
        full = not self.config.lora
        total = 0.0
        for text in self.last_text_tokens or [0]:
            total += matmul_flops(image_params, image, input_grad=True, weight_grad=full)
            total += matmul_flops(text_params, text, input_grad=True, weight_grad=full)
            total += attention_flops(layers, image + text, width, backward=True)
        return total / max(1, len(self.last_text_tokens))

    # ---- export -----------------------------------------------------------------------------------------------

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """``dit_lora/`` (LoRA) or ``dit.safetensors`` (full) beside the base's diffusers layout: linked from the
        weights directory, or written for the tiny model, so ``--artist RUN/final`` loads the trained artist."""
        base, dtype = export_base(self.config)
        state_dict = {**self.untrained, **state_dict}
        export_artist(
            Path(directory),
            state_dict,
            transformer=self.artist.transformer,
            lora=self.config.lora,
            base=base,
            dtype=dtype,
        )
