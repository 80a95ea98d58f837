"""What a stage III step makes of its rollouts: rewards all-gathered over the ranks, group advantages and the drop
rule over the whole step (so the statistics do not depend on how groups fall on ranks), the loss scales, and the
metrics line (``StepSummary.metrics``), plus the step's clock (``StepTimer``).

Metric names: ``reward/artist`` (r_PA) with its terms ``reward/artist/{comp,photo,perc}``; ``reward/critic`` with
``reward/critic/{format,rank,suggestion,restoration}`` (restoration: the mean over restoration records, NaN in a
step without any); ``loss/critic``, ``loss/artist`` and ``loss`` (their sum); ``kl`` (the critic's k3 estimate per
token against its reference), ``kl/artist`` (mean (v_θ − v_ref)²), ``clip_fraction`` (answer tokens whose ratio
left [1 − ε, 1 + ε]); ``kept/{critic,artist}`` (share of groups kept), ``reward_spread/*`` (mean reward std within
a group), ``advantage_spread/*`` (mean |A| over kept samples); ``time/*`` (seconds, slowest rank;
``time/gather`` is the rewards' all-gather, which also waits for the slowest rank's rollouts) and
``time/reward_fraction`` (the reward computation over the step).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spc_fast.critic.policy import CriticRollout
from spc_fast.training import distributed
from spc_fast.training.joint_config import RLConfig
from spc_fast.training.joint_step import Edits, gather_rows
from spc_fast.training.metrics import peak_memory
from spc_fast.training.rewards_joint import Rewards, advantages, joint_rewards

ARTIST_TERMS = ("comp", "photo", "perc")
CRITIC_TERMS = ("format", "rank", "suggestion", "restoration", "restoration_applies")
TIMES = (
    "data",
    "critic_rollout",
    "artist_rollout",
    "rescore",
    "reward",
    "gather",
    "critic_update",
    "artist_update",
    "optim",
)


class StepTimer:
    """Seconds per phase of a step; ``mark(name)`` charges the time since the previous mark to ``name``."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.start = self.last = clock()
        self.seconds: dict[str, float] = defaultdict(float)

    def mark(self, name: str) -> None:
        now = self.clock()
        self.seconds[name] += now - self.last
        self.last = now

    @property
    def total(self) -> float:
        return self.last - self.start


def _rank_slice(count: int) -> slice:
    rank = dist.get_rank() if dist.is_initialized() else 0
    return slice(rank * count, (rank + 1) * count)


@dataclass
class StepSummary:
    """This rank's advantages, kept masks and loss scales (world / kept samples over all ranks), and the step's
    reward metrics (the same on every rank)."""

    artist_adv: torch.Tensor
    artist_kept: torch.Tensor
    artist_scale: float
    critic_adv: torch.Tensor
    critic_kept: torch.Tensor
    critic_scale: float
    values: dict[str, float]
    images: int  # on this rank
    artist_total: int  # kept samples over all ranks
    critic_total: int

    def metrics(
        self,
        critic: dict,
        artist: dict,
        norms: dict,
        lrs: dict,
        timer: StepTimer,
        device: torch.device,
        rollout: CriticRollout,
        edits: Edits,
    ) -> tuple[dict, dict, dict]:
        """(means, sums, maxes) for ``Trainer.record`` from the updates' sums (``critic_update``,
        ``artist_update``), the gradient norms, learning rates and clock."""
        sums = torch.tensor(
            [critic["tokens"], critic["clipped"], critic["kl"], artist["kl"]],
            dtype=torch.float64,
            device=device if device.type == "cuda" else torch.device("cpu"),
        )
        tokens, clipped, kl, artist_kl = distributed.all_reduce(sums).tolist()
        kept_edits = max(1.0, self.values["kept_edits"])
        means = {
            **{k: v for k, v in self.values.items() if k != "kept_edits"},
            "loss/critic": critic["loss"],
            "loss/artist": artist["loss"],
            "loss": critic["loss"] + artist["loss"],
            "kl": kl / max(tokens, 1.0),
            "clip_fraction": clipped / max(tokens, 1.0),
            "kl/artist": artist_kl / kept_edits,
        }
        counted = int(rollout.prompt["attention_mask"].sum()) + int(rollout.lengths.sum())
        counted += edits.x0.shape[0] * (edits.x0.shape[1] + edits.source.shape[1])
        sums = {"samples": self.images, "tokens": counted, "flops": 0.0}
        seconds = dict(timer.seconds)
        step = timer.total
        maxes = {
            "time_data_s": seconds.get("data", 0.0),
            "time_optim_s": seconds.get("optim", 0.0),
            "time_fwd_bwd_s": step - seconds.get("data", 0.0) - seconds.get("optim", 0.0),
            "peak_mem_bytes": peak_memory(device)[0],
            "lr": lrs["artist"],
            "lr/critic": lrs["critic"],
            "lr/artist": lrs["artist"],
            "grad_norm": float(norms["artist"]),
            "grad_norm/critic": float(norms["critic"]),
            "grad_norm/artist": float(norms["artist"]),
            "time/step": step,
            "time/reward_fraction": seconds.get("reward", 0.0) / step,
        }
        maxes.update({f"time/{name}": seconds.get(name, 0.0) for name in TIMES})
        return means, sums, maxes


def _spread(rewards: torch.Tensor, adv: torch.Tensor, kept: torch.Tensor, group: int) -> tuple[float, float, float]:
    """(share of groups kept, mean within-group reward std, mean |A| over kept samples)."""
    groups = rewards.view(-1, group)
    share = float(kept.view(-1, group)[:, 0].float().mean())
    magnitude = float(adv[kept].abs().mean()) if bool(kept.any()) else 0.0
    return share, float(groups.std(1).mean()), magnitude


def rollout_rewards(
    batch: dict,
    rollout: CriticRollout,
    edits: Edits,
    scores: torch.Tensor | None,
    rl: RLConfig,
    lpips: torch.nn.Module | None,
) -> Rewards:
    """The rewards of this rank's rollouts (``rewards_joint.joint_rewards``)."""
    return joint_rewards(
        batch["x"], batch["gt"], edits.images, rollout.judgement.outputs, batch["degradations"], scores, rl, lpips
    )


def summarise(batch: dict, rewards: Rewards, rl: RLConfig) -> StepSummary:
    """This rank's rewards gathered over the ranks; advantages and drop rule over all of them."""
    artist = gather_rows(torch.stack([rewards.artist, *(rewards.artist_terms[k] for k in ARTIST_TERMS)], 1))
    critic = gather_rows(torch.stack([rewards.critic, *(rewards.critic_terms[k] for k in CRITIC_TERMS)], 1))
    artist_adv, artist_kept = advantages(artist[:, 0], rl.artist_group_size, rl)
    critic_adv, critic_kept = advantages(critic[:, 0], rl.answers, rl)
    world = dist.get_world_size() if dist.is_initialized() else 1
    applies = critic[:, 5] > 0
    values = {
        "reward/artist": float(artist[:, 0].mean()),
        "reward/critic": float(critic[:, 0].mean()),
        "reward/critic/restoration": float(critic[applies, 4].mean()) if bool(applies.any()) else math.nan,
        "kept_edits": float(artist_kept.sum()),
    }
    values.update({f"reward/artist/{k}": float(artist[:, i + 1].mean()) for i, k in enumerate(ARTIST_TERMS)})
    values.update({f"reward/critic/{k}": float(critic[:, i + 1].mean()) for i, k in enumerate(CRITIC_TERMS[:3])})
    for name, table, adv, kept, group in (
        ("artist", artist, artist_adv, artist_kept, rl.artist_group_size),
        ("critic", critic, critic_adv, critic_kept, rl.answers),
    ):
        share, spread, magnitude = _spread(table[:, 0], adv, kept, group)
        values.update({f"kept/{name}": share, f"reward_spread/{name}": spread, f"advantage_spread/{name}": magnitude})
    edits_here, answers_here = rewards.artist.shape[0], rewards.critic.shape[0]
    mine_a, mine_c = _rank_slice(edits_here), _rank_slice(answers_here)
    return StepSummary(
        artist_adv[mine_a],
        artist_kept[mine_a],
        world / max(1.0, float(artist_kept.sum())),
        critic_adv[mine_c],
        critic_kept[mine_c],
        world / max(1.0, float(critic_kept.sum())),
        values,
        batch["x"].shape[0],
        int(artist_kept.sum()),
        int(critic_kept.sum()),
    )
