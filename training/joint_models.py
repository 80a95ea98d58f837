"""Stage III's two trained modules (``CriticPolicy``, ``ArtistPolicy``), the artist's trained and old LoRA adapters
(``build_artist``, ``update_old``, ``OldAdapterState`` for checkpoints), and answers selected from a critic rollout.

Every use of a trained model goes through its module's ``forward`` — the rollouts too, which call the models' own
fast paths (``ImageCritic.sample``, ``PhotoArtist.rollout``) from there — so FSDP2 gathers the root's parameters
(embeddings, heads, the vision tower) and DDP sees every call, as for stage I's losses. The critic's GRPO loss runs
inside its forward, the reference log-probabilities in the same forward with the adapters disabled.
"""

from __future__ import annotations

import dataclasses

import torch
from peft import PeftModel
from torch.distributed.checkpoint.stateful import Stateful

from spc_fast.adapters import adapter_names, adapters_disabled
from spc_fast.artist.lora import add_lora, set_adapter
from spc_fast.artist.model import PhotoArtist
from spc_fast.config import ArtistConfig
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.policy import CriticRollout, completion_states
from spc_fast.models.factory import artist_from
from spc_fast.rl_losses import grpo_loss, token_logprobs
from spc_fast.roles import Judgement
from spc_fast.training.config import TrainConfig
from spc_fast.training.stages.artist_sft import Velocity, artist_components, discarded_parameters

TRAINED, OLD = "default", "old"  # the artist's adapters: the one the optimizer trains, the old policy


class CriticPolicy(torch.nn.Module):
    """The trained critic module: its VLM (a ``PeftModel``); ``critic`` is the ``ImageCritic`` around it (not a
    submodule: it holds no weights of its own)."""

    def __init__(self, vlm: torch.nn.Module, critic: ImageCritic) -> None:
        super().__init__()
        self.vlm = vlm
        self.critic = critic

    def forward(
        self,
        rollout: CriticRollout | None = None,
        advantages: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        *,
        epsilon: float = 0.2,
        beta_kl: float = 0.0,
        sample: dict | None = None,
    ):
        """``sample``: ``ImageCritic.sample(**sample)``, a ``CriticRollout`` (no gradient). Else the GRPO loss"""
        if sample is not None:
            with torch.no_grad():
                return self.critic.sample(**sample)
        return self.grpo(rollout, advantages, rows, epsilon=epsilon, beta_kl=beta_kl)

    def grpo(
        self, rollout: CriticRollout, advantages: torch.Tensor, rows: torch.Tensor, *, epsilon: float, beta_kl: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The GRPO loss (SPEC.md §7) over the answer tokens of the rows in ``rows`` ([N] bool: the kept groups), old
        log-probs the sampling policy's; returns (loss: the mean over all N rows, dropped ones counting 0; detached
        sums over the scored tokens: ``tokens``, ``clipped`` (|ρ − 1| > ε), ``kl`` (k3 estimate; 0 when beta_kl=0))."""
        model = self.vlm.get_base_model() if isinstance(self.vlm, PeftModel) else self.vlm
        mask = rollout.completion_mask & rows[:, None]
        temperature = rollout.temperature
        ref_logp = None
        if beta_kl > 0:
            with torch.no_grad(), adapters_disabled(model):
                ref_states = completion_states(model, rollout)
                ref_logp = token_logprobs(
                    ref_states, model.lm_head.weight.to(ref_states.dtype), rollout.tokens, temperature=temperature
                )
        states = completion_states(model, rollout)  # [N, T, D]
        weight = model.lm_head.weight.to(states.dtype)
        loss = grpo_loss(
            states,
            weight,
            rollout.tokens,
            advantages.float(),
            mask,
            rollout.logprobs,
            ref_logp,
            epsilon=epsilon,
            beta_kl=beta_kl,
            temperature=temperature,
        )
        with torch.no_grad():
            logp = token_logprobs(states.detach(), weight.detach(), rollout.tokens, temperature=temperature)
            scored = mask.float()
            clipped = ((logp - rollout.logprobs).exp() - 1).abs() > epsilon
            kl = torch.zeros_like(logp) if ref_logp is None else (ref_logp - logp).exp() - (ref_logp - logp) - 1
            stats = {"tokens": scored.sum(), "clipped": (clipped.float() * scored).sum(), "kl": (kl * scored).sum()}
        return loss, stats


class ArtistPolicy(Velocity):
    """The trained artist module: stage I's velocity module of the DiT; ``artist`` is the ``PhotoArtist`` around it
    (not a submodule: the VAE is not trained)."""

    def __init__(self, artist: PhotoArtist) -> None:
        super().__init__(artist.transformer)
        self.artist = artist

    def forward(self, *args, rollout: dict | None = None):
        """``rollout``: ``PhotoArtist.rollout(**rollout)`` (no gradient); else the velocity (``Velocity``)."""
        if rollout is not None:
            with torch.no_grad():
                return self.artist.rollout(**rollout)
        # a copy, not the view of the DiT's output that the velocity is: FSDP2 hooks its backward on the output
        return super().forward(*args).clone()


def select_rows(rollout: CriticRollout, rows: torch.Tensor) -> CriticRollout:
    """The answers ``rows`` ([n] indices) of a rollout, the prompt's image patches selected along with them."""
    patches = rollout.prompt["image_grid_thw"].prod(1)
    offsets = torch.cat([patches.new_zeros(1), patches.cumsum(0)]).tolist()
    index = rows.tolist()
    patch_rows = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in index]).to(rows.device)
    prompt = {k: v[rows] for k, v in rollout.prompt.items() if k != "pixel_values"}
    prompt["pixel_values"] = rollout.prompt["pixel_values"][patch_rows]
    judgement = Judgement(
        texts=[rollout.judgement.texts[i] for i in index], outputs=[rollout.judgement.outputs[i] for i in index]
    )
    return CriticRollout(
        judgement, rollout.tokens[rows], rollout.lengths[rows], rollout.logprobs[rows], prompt, rollout.temperature
    )


def build_artist(config: TrainConfig, device: torch.device) -> PhotoArtist:
    """The artist of ``config.artist.weights`` (float32: the optimizer's master weights) with two LoRA adapters:
    ``default`` (trained; the weights' own ``dit_lora/`` when they carry one, as stage II continues stage I) and
    ``old`` (frozen, a copy of it: DiffusionNFT's old policy). With the adapters disabled the DiT is the
    reference policy. The parameters no loss reaches (``artist_sft.discarded_parameters``: the last block's text
    stream) stay frozen; the export writes them back as they are (``untrained``)."""
    transformer, vae, scheduler = artist_components(config, device, "joint")
    artist_config = dataclasses.replace(config.artist, device=str(device), dtype="float32", pixels=config.pixels)
    return with_adapters(transformer, vae, scheduler, artist_config, rank=config.lora_rank, alpha=config.lora_alpha)


def with_adapters(transformer, vae, scheduler, config: ArtistConfig, *, rank: int, alpha: int) -> PhotoArtist:
    """``build_artist`` for components already built: the trained adapter (added with ``rank``/``alpha`` unless
    the DiT carries it), the old one as its copy, only the trained adapter's reachable parameters trainable."""
    names = adapter_names(transformer)
    if names and names != [TRAINED]:
        raise ValueError(f"the DiT carries adapters {names}; joint continues one adapter named {TRAINED!r}")
    if not names:
        add_lora(transformer, TRAINED, rank=rank, alpha=alpha)
    trained = transformer.peft_config[TRAINED]
    add_lora(transformer, OLD, rank=trained.r, alpha=trained.lora_alpha)
    set_adapter(transformer, TRAINED)
    with torch.no_grad():
        for old, current in adapter_pairs(transformer):
            old.copy_(current)
    for name, parameter in transformer.named_parameters():
        parameter.requires_grad_(f".{TRAINED}." in name and ".lora_" in name)
    for _, parameter in discarded_parameters(transformer):  # never reached by a loss: kept as they are
        parameter.requires_grad_(False)
    vae.requires_grad_(False)
    return artist_from(transformer, vae, scheduler, config)


def untrained(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained adapter's parameters that no loss reaches, named as the trained module's state dict names them
    (``transformer.…``), on the CPU: the export adds them to the trained ones."""
    return {
        f"transformer.{n}": p.detach().cpu().clone()
        for n, p in discarded_parameters(transformer)
        if f".{TRAINED}." in n
    }


def adapter_pairs(transformer: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
    """(old, trained) parameter pairs of the two adapters, matched by name (after FSDP2 they are its DTensors)."""
    parameters = dict(transformer.named_parameters())
    pairs = [
        (p, parameters[n.replace(f".{OLD}.", f".{TRAINED}.")])
        for n, p in parameters.items()
        if f".{OLD}." in n and ".lora_" in n
    ]
    if not pairs:
        raise ValueError(f"the DiT has no {OLD!r} adapter; build it with build_artist")
    return pairs


def decay(step: int, rate: float, most: float) -> float:
    """The old adapter's decay d = min(rate · step, most) after ``step`` optimizer steps (0 before the first: the
    old adapter then becomes the trained one)."""
    return min(rate * step, most)


@torch.no_grad()
def update_old(transformer: torch.nn.Module, d: float) -> None:
    """θ_old ← d·θ_old + (1 − d)·θ (SPEC.md §8), shard by shard under FSDP2."""
    for old, current in adapter_pairs(transformer):
        old.lerp_(current, 1.0 - d)


class OldAdapterState(Stateful):
    """The frozen old adapter in a checkpoint (the trainer's state holds trainable parameters only): its parameters
    themselves, so DCP loads into them in place, sharded as they are."""

    def __init__(self, transformer: torch.nn.Module) -> None:
        self.transformer = transformer

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.transformer.named_parameters() if f".{OLD}." in n}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"the checkpoint lacks {len(missing)} old-adapter tensors, e.g. {missing[0]}")
        for name, parameter in own.items():
            if state[name] is not parameter:
                parameter.copy_(state[name])
