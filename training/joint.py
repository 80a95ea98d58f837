"""Stage III (``spc-fast train joint``): GRPO for the critic and DiffusionNFT for the artist in one loop, two AdamW
optimizers (SPEC.md §7–8).

One step (``JointTrainer.train_step``): a batch of inputs X with their targets X_gt → G answers per image from the
critic (sampled, static-cache generator: tokens, log-probs, H_c) → K edits per answer from the artist's old adapter
(deterministic sampler, no CFG, ``rl.rollout_steps``) → the critic re-scores every edit (greedy) → rewards on the
device (``rewards_joint``), all-gathered so group statistics and the drop rule see every rank → the critic's GRPO
update (reference: its adapters disabled) → the artist's DiffusionNFT update (reference: its adapters disabled) →
θ_old ← d·θ_old + (1 − d)·θ. ``RUN/metrics.jsonl`` gets the time split (``time/*``), every reward term, both
losses, KL, the clip fraction, the advantage spread and the share of groups kept.

Both halves' weights are exported to ``RUN/final`` (the critic's ``vlm/``, ``vlm_lora/`` and the artist's diffusers
layout with ``dit_lora/`` live side by side): ``spc-fast enhance --critic RUN/final --artist RUN/final``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from spc_fast.images import output_size, resize_bicubic
from spc_fast.rewards import load_lpips
from spc_fast.training import distributed
from spc_fast.training.data.manifest import Record, load_image
from spc_fast.training.export import export_artist
from spc_fast.training.joint_config import STAGE, JointConfig, joint_config, read_joint_config
from spc_fast.training.joint_models import (
    OLD,
    ArtistPolicy,
    CriticPolicy,
    OldAdapterState,
    build_artist,
    decay,
    untrained,
    update_old,
)
from spc_fast.training.joint_step import artist_rollouts, artist_update, critic_rollouts, critic_update, rescore
from spc_fast.training.joint_summary import StepTimer, rollout_rewards, summarise
from spc_fast.training.stage import StepLoss, stack_samples
from spc_fast.training.stages.artist_sft import export_base, to_unit
from spc_fast.training.stages.critic_sft import CriticSFT
from spc_fast.training.tiny_start import tiny_start
from spc_fast.training.trainer import FINAL, Trainer, to_device


class JointStage:
    """Stage III's models, data and export (the ``Stage`` protocol); ``JointTrainer`` runs its step."""

    name = STAGE

    def __init__(self) -> None:
        self.step = 0

    def build(self, config: JointConfig, device: torch.device) -> None:
        """The critic (stage I's build: float32, LoRA on the language model) and the artist (trained and old
        adapters), and LPIPS when the perceptual term weighs."""
        if config.tiny_start:
            critic, artist = tiny_start()  # built once per machine (minutes), then read from the cache
            config = dataclasses.replace(
                config,
                tiny_start=False,
                critic=dataclasses.replace(config.critic, weights=str(critic)),
                artist=dataclasses.replace(config.artist, weights=str(artist)),
            )
        self.config, self.device = config, device
        self.critic_stage = CriticSFT()
        self.critic_stage.build(config, device)
        self.critic = self.critic_stage.critic
        self.critic_policy = CriticPolicy(self.critic_stage.model.vlm, self.critic).train()
        if dist.is_initialized() and dist.get_world_size() > 1:
            # sharded weights are gathered in every decode step: all ranks must run the same number of steps
            self.critic.generator.stop_group = dist.group.WORLD
        self.critic_stage.model = self.critic_policy  # its export reads the VLM from here
        self.artist = build_artist(config, device)
        width = self.critic.model.config.text_config.hidden_size
        if width != self.artist.transformer.config.joint_attention_dim:
            raise ValueError(
                f"the critic's width {width} is not the DiT's joint_attention_dim "
                f"{self.artist.transformer.config.joint_attention_dim}: pair models of one release"
            )
        self.velocity = ArtistPolicy(self.artist).train()
        self.untrained = untrained(self.artist.transformer)
        rl = config.rl
        self.lpips = load_lpips(rl.lpips_backbone).to(device) if rl.lambda_perc > 0 else None

    def trainable(self) -> torch.nn.Module:
        return torch.nn.ModuleDict({"critic": self.critic_policy, "artist": self.velocity})

    def critic_blocks(self) -> list[torch.nn.Module]:
        return self.critic_stage.blocks()

    def artist_blocks(self) -> list[torch.nn.Module]:
        return list(self.artist.transformer.transformer_blocks)

    def blocks(self) -> list[torch.nn.Module]:
        return [*self.critic_blocks(), *self.artist_blocks()]

    def bucket(self, record: Record) -> Hashable:
        if record.target is None:
            raise ValueError(
                f"record {record.id!r} (task {record.task}) has no target: joint rewards edits against "
                "X_gt; build pairs (spc-fast data build) or leave score-only records out"
            )
        return output_size(record.height, record.width, self.config.pixels)

    def sample(self, record: Record) -> dict:
        """The photo as decoded (the critic's view), input and target at the working size, the degradations."""
        size = self.bucket(record)
        image = load_image(record.input).permute(1, 2, 0).numpy()
        target = load_image(record.target).permute(1, 2, 0).numpy()
        return {
            "id": record.id,
            "image": image,
            "x": to_unit(resize_bicubic(image, size)),
            "gt": to_unit(resize_bicubic(target, size)),
            "degradations": tuple(d["name"] for d in record.degradations),
        }

    def collate(self, samples: list[dict]) -> dict:
        return stack_samples(samples)

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        raise TypeError("stage III has no single-model loss: JointTrainer.train_step runs rollouts and two updates")

    def flops_per_sample(self, batch: dict) -> float:
        return 0.0  # the step counts its own FLOPs (JointTrainer.train_step)

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """Both halves into ``directory``: keys ``critic.…`` and ``artist.…`` of the two trained modules."""
        critic = {k.removeprefix("critic."): v for k, v in state_dict.items() if k.startswith("critic.")}
        artist = {k.removeprefix("artist."): v for k, v in state_dict.items() if k.startswith("artist.")}
        self.critic_stage.export(Path(directory), critic)
        base, dtype = export_base(self.config)
        export_artist(
            Path(directory),
            {**self.untrained, **artist},
            transformer=self.artist.transformer,
            lora=True,
            base=base,
            dtype=dtype,
        )


class JointTrainer(Trainer):
    """The trainer of stage III: models ``critic`` and ``artist``, one AdamW each (``rl.critic_lr``,
    ``rl.artist_lr``), the old adapter in the checkpoints; the rest (ranks, checkpoints, metrics, stopping) is the
    base trainer's."""

    def __init__(self, stage: JointStage | None = None, config: JointConfig | None = None, *, resume: bool = False):
        if not isinstance(config, JointConfig):
            raise ValueError("JointTrainer needs a JointConfig (spc_fast.training.joint_config.joint_config)")
        super().__init__(stage or JointStage(), config, resume=resume)

    def build_models(self) -> dict[str, torch.nn.Module]:
        stage, parallel = self.stage, self.config.parallel
        stage.build(self.config, self.world.device)
        mode = distributed.resolve_mode(parallel, self.world.size)
        if mode == "fsdp" and (self.config.critic.compile or self.config.artist.compile):
            raise ValueError(
                "compiled rollouts (critic.compile, artist.compile) need unsharded models: use "
                "parallel.mode=ddp or one process, or turn compile off"
            )
        return {
            "critic": distributed.wrap_module(stage.critic_policy, stage.critic_blocks(), parallel, self.world),
            "artist": distributed.wrap_module(stage.velocity, stage.artist_blocks(), parallel, self.world),
        }

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optim, rl = self.config.optim, self.config.rl
        out = {}
        for name, lr in (("critic", rl.critic_lr), ("artist", rl.artist_lr)):
            parameters = [p for p in self.models[name].parameters() if p.requires_grad]
            out[name] = torch.optim.AdamW(
                parameters, lr=lr, betas=(optim.beta1, optim.beta2), weight_decay=optim.weight_decay
            )
        return out

    def checkpoint_state(self) -> dict:
        return {**super().checkpoint_state(), "old_adapter": OldAdapterState(self.stage.artist.transformer)}

    def train_step(self, step: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """One step (module docstring); returns (means, sums, maxes) for ``record``."""
        config, rl, stage = self.config, self.config.rl, self.stage
        stage.step = step
        lrs = {name: s.get_last_lr()[0] for name, s in self.schedulers.items()}
        timer = StepTimer(self._sync)
        batch = to_device(next(self.loader), self.world.device)
        timer.mark("data")
        with self.autocast:
            rollout = critic_rollouts(stage.critic, self.models["critic"], batch, rl, config.seed, step)
            timer.mark("critic_rollout")
            edits = artist_rollouts(self.models["artist"], batch, rollout, rl, config.seed, step)
            timer.mark("artist_rollout")
            scores = None
            if rl.rank_weight > 0:
                scores = rescore(self.models["critic"], edits.images, rl.rollout_batch)
            timer.mark("rescore")
            rewards = rollout_rewards(batch, rollout, edits, scores, rl, stage.lpips)
            timer.mark("reward")
            summary = summarise(batch, rewards, rl)
            timer.mark("gather")
            critic = critic_update(
                self.models["critic"], rollout, summary.critic_adv, summary.critic_kept, summary.critic_scale, rl
            )
            timer.mark("critic_update")
            norms = {"critic": self._optimizer_step_if("critic", summary.critic_total)}
            timer.mark("optim")
            artist = artist_update(
                self.models["artist"],
                stage.artist,
                edits,
                summary.artist_adv,
                summary.artist_kept,
                summary.artist_scale,
                rl,
                config.seed,
                step,
            )
            timer.mark("artist_update")
            norms["artist"] = self._optimizer_step_if("artist", summary.artist_total)
            update_old(stage.artist.transformer, decay(step - 1, rl.decay_rate, rl.decay_max))
            timer.mark("optim")
        return summary.metrics(critic, artist, norms, lrs, timer, self.world.device, rollout, edits)

    def _optimizer_step_if(self, name: str, kept: int) -> torch.Tensor:
        """The optimizer step of ``name``, skipped (norm 0, learning-rate schedule held) when every group of the step
        was dropped on every rank: there is no gradient, and Adam's momentum alone would still move the weights."""
        return self.optimizer_step(name) if kept else torch.zeros(())

    def export(self) -> Path:
        """Both trained modules' full state dicts (rank 0 writes them: ``JointStage.export``)."""
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        state = {}
        for name, model in self.models.items():
            for key, value in get_model_state_dict(distributed.unwrapped(model), options=options).items():
                if f".{OLD}." not in key:
                    state[f"{name}.{key}"] = value
        final = self.run_dir / FINAL
        if self.world.main:
            self.stage.export(final, state)
        distributed.barrier()
        return final


# What the command line reads from a stage class that is not the base trainer's: its trainer and its config.
JointStage.trainer = JointTrainer
JointStage.train_config = staticmethod(joint_config)
JointStage.read_config = staticmethod(read_joint_config)
