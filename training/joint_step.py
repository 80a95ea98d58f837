"""The parts of one stage III step (``JointTrainer.train_step`` runs them in order): critic rollouts, artist rollouts
with the old adapter, the critic's re-scores of the edits, and the two updates.

Every random draw is keyed by (seed, step, sample) through ``flow.sample_generator``: the critic's answers per
rank batch, each edit's rollout noise and its DiffusionNFT timestep and noise per edit, so a resumed run draws what
the uninterrupted one drew. Updates run over the kept samples only (dropped groups cost no forward pass), in
chunks of ``rl.update_batch``; every rank runs as many chunks as the rank with the most kept samples (padding
chunks weigh 0), because each forward of a sharded model is a collective.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spc_fast.adapters import adapter_active, adapters_disabled
from spc_fast.artist.model import PhotoArtist
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.policy import CriticRollout
from spc_fast.rl_losses import nft_loss, optimality_from_advantage
from spc_fast.training import distributed
from spc_fast.training.flow import draw_flow, noisy_latents, sample_generator
from spc_fast.training.joint_config import RLConfig
from spc_fast.training.joint_models import OLD, select_rows

OUTPUT_MULTIPLE = 16


@dataclass
class Edits:
    """The artist's rollouts, [E = B·G·K] along the first axis: decoded images in [0, 1], the clean latents x0
    (packed tokens), the source tokens, and the conditioning each was made with."""

    images: torch.Tensor
    x0: torch.Tensor
    source: torch.Tensor
    img_shapes: list
    h_c: torch.Tensor
    mask: torch.Tensor
    ids: list[str]


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape on each) concatenated along the first axis, in rank order."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def edit_ids(ids: list[str], answers: int, edits: int) -> list[str]:
    """One id per edit: ``record#answer.edit``, in the [B·G·K] order."""
    return [f"{i}#{g}.{k}" for i in ids for g in range(answers) for k in range(edits)]


def device_generator(seed: int, step: int, key: str, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from ``sample_generator(seed, step, key)``."""
    return torch.Generator(device=device).manual_seed(sample_generator(seed, step, key).initial_seed())


@torch.no_grad()
def critic_rollouts(
    critic: ImageCritic, model: torch.nn.Module, batch: dict, rl: RLConfig, seed: int, step: int
) -> CriticRollout:
    """G answers per image with their sampling log-probs and H_c (the static-cache generator)."""
    generator = device_generator(seed, step, "critic:" + "\x1e".join(batch["id"]), critic.model.device)
    options = {"num_samples": rl.answers, "temperature": rl.temperature, "top_p": rl.top_p, "generator": generator}
    return model(sample={"images": batch["image"], **options})


@torch.no_grad()
def artist_rollouts(
    model: torch.nn.Module, batch: dict, rollout: CriticRollout, rl: RLConfig, seed: int, step: int
) -> Edits:
    """K edits per answer from the old adapter: the deterministic sampler without CFG, ``rl.rollout_steps`` steps,
    in chunks of ``rl.rollout_batch``."""
    x = batch["x"]
    size = tuple(x.shape[-2:])
    per_image = rl.answers * rl.edits
    images = x.repeat_interleave(per_image, dim=0)
    h_c = rollout.judgement.hidden.repeat_interleave(rl.edits, dim=0)
    mask = rollout.judgement.mask.repeat_interleave(rl.edits, dim=0)
    ids = edit_ids(batch["id"], rl.answers, rl.edits)
    parts = []
    for start in range(0, len(ids), rl.rollout_batch):
        part = slice(start, start + rl.rollout_batch)
        generators = [sample_generator(seed, step, f"{i}/rollout") for i in ids[part]]
        options = {"num_steps": rl.rollout_steps, "generator": generators, "size": size, "adapter": OLD}
        out = model(rollout={"images": images[part], "h_c": h_c[part], "h_c_mask": mask[part], **options})
        parts.append((out.images, out.trajectory.latents[-1], out.trajectory.source, out.trajectory.img_shapes))
    return Edits(
        torch.cat([p[0] for p in parts]).to(x.device),
        torch.cat([p[1] for p in parts]),
        torch.cat([p[2] for p in parts]),
        [s for p in parts for s in p[3]],
        h_c,
        mask,
        ids,
    )


@torch.no_grad()
def rescore(model: torch.nn.Module, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """[E] the critic's greedy scores of the edits (NaN where an answer gives none): the rank reward's S(X_e)."""
    scores = []
    for start in range(0, images.shape[0], chunk):
        scores.append(model(sample={"images": images[start : start + chunk], "temperature": 0.0}).judgement.scores)
    return torch.cat(scores).to(images.device)


def update_chunks(kept: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, bool, bool]]:
    """(indices, real, last) per update chunk: this rank's kept samples ``size`` at a time, then padding chunks
    (one sample, ``real`` False) up to the most chunks any rank runs."""
    indices = kept.nonzero().flatten()
    most = int(gather_rows(torch.tensor([indices.numel()], device=kept.device)).max())
    count = math.ceil(most / size)
    for c in range(count):
        part = indices[c * size : (c + 1) * size]
        real = part.numel() > 0
        yield (part if real else torch.zeros(1, dtype=torch.long, device=kept.device)), real, c == count - 1


def critic_update(
    model: torch.nn.Module, rollout: CriticRollout, adv: torch.Tensor, kept: torch.Tensor, scale: float, rl: RLConfig
) -> dict[str, float]:
    """Backward of the GRPO loss over the kept answers, ``scale`` = world / kept answers over all ranks (the ranks'
    gradients are averaged: the result is the mean over every kept answer). Returns this rank's sums."""
    totals = {"loss": 0.0, "tokens": 0.0, "clipped": 0.0, "kl": 0.0}
    for part, real, last in update_chunks(kept, rl.update_batch):
        rows = torch.full((part.numel(),), real, device=adv.device)
        sub = select_rows(rollout, part)
        with distributed.gradient_sync(model, last):
            loss, stats = model(sub, adv[part], rows, epsilon=rl.epsilon, beta_kl=rl.beta_kl)
            (loss * part.numel() * scale).backward()
        totals["loss"] += float(loss.detach()) * part.numel() * scale if real else 0.0
        for key, value in stats.items():
            totals[key] += float(value)
    return totals


def artist_update(
    model: torch.nn.Module,
    artist: PhotoArtist,
    edits: Edits,
    adv: torch.Tensor,
    kept: torch.Tensor,
    scale: float,
    rl: RLConfig,
    seed: int,
    step: int,
) -> dict[str, float]:
    """Backward of DiffusionNFT over the kept edits (SPEC.md §7–8): per edit a timestep (in the rollouts' range,
    ``artist.strength``) and fresh noise, x_t = (1 − t) x0 + t ε, v_old from the old adapter and v_ref with the
    adapters disabled (no grad), v_θ from the trained one; loss = A_max · policy + λ KL, summed with weight
    ``scale`` as ``critic_update``."""
    transformer, inner = artist.transformer, distributed.unwrapped(model)
    h, w = edits.img_shapes[0][0][1:]
    totals = {"loss": 0.0, "kl": 0.0}
    for part, real, last in update_chunks(kept, rl.update_batch):
        x0 = edits.x0[part].float()
        ids = [edits.ids[i] for i in part.tolist()]
        draws = draw_flow(seed, step, ids, tuple(x0.shape[1:]), h * w, artist.scheduler, artist.config.strength)
        draws = draws.to(x0.device)
        x_t = noisy_latents(x0, draws.noise, draws.t)
        shapes = [edits.img_shapes[i] for i in part.tolist()]
        args = (x_t, edits.source[part], draws.t, edits.h_c[part].float(), edits.mask[part].bool(), shapes)
        with torch.no_grad():
            with adapter_active(transformer, OLD):
                v_old = inner(*args)
            v_ref = None
            if rl.kl_weight > 0:
                with adapters_disabled(transformer):
                    v_ref = inner(*args)
        with distributed.gradient_sync(model, last):
            v_theta = model(*args)
            r = optimality_from_advantage(adv[part], rl.a_max)
            per_sample = rl.a_max * nft_loss(
                v_theta,
                v_old,
                draws.noise - x0,
                draws.t,
                r,
                rl.nft_beta,
                adaptive=rl.adaptive,
                v_ref=v_ref,
                kl_weight=rl.kl_weight / rl.a_max,
            )
            weight = scale if real else 0.0
            (per_sample.sum() * weight).backward()
        if real:
            totals["loss"] += float(per_sample.detach().sum()) * scale
            if v_ref is not None:
                totals["kl"] += float((v_theta.detach().float() - v_ref.float()).square().flatten(1).mean(1).sum())
    return totals
