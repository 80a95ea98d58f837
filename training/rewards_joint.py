"""Stage III's rewards and advantages (SPEC.md §5, §7–8), on the training device, from one step's rollouts.

Layout: B images, G answers per image (consecutive), K edits per answer (consecutive): answers are [B·G], edits
[B·G·K]. Every image's photometric attributes are measured once and shared by the terms that need them.

- Artist, per edit: r_PA = r_comp (λ1 r_photo + λ2 r_perc) against X_gt, its terms computed by the functions
  ``rewards.artist_reward`` composes (trusted path: the edits come from the VAE's clamped decode, suggestions as
  one dense tensor), so each term can be logged; λ2 = 0 skips LPIPS.
- Critic, per answer: the weighted mean of format, rank (the critic's re-scores of the answer's K edits against
  the score the answer gave the input, averaged over the K), suggestion (its own tone/colour suggestions executed
  by the rule executor, compared with X_gt) and, on restoration records only, the restoration constraint. The mean
  is over the weights that apply, so every reward is in [0, 1], the scale the group-drop rule is written for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from spc_fast.critic.vocabulary import CriticOutput
from spc_fast.rewards import (
    compliance_from_attributes,
    format_reward,
    perceptual_reward,
    photometric_control_from_attributes,
    restoration_constraint_reward,
    suggestion_reward,
    suggestion_tensor,
)
from spc_fast.rewards.artist import measure
from spc_fast.rl_losses import group_advantages
from spc_fast.training.joint_config import RLConfig


@dataclass
class Rewards:
    """One step's rewards on this rank: ``artist`` [B·G·K], ``critic`` [B·G], and each term per sample."""

    artist: torch.Tensor
    critic: torch.Tensor
    artist_terms: dict[str, torch.Tensor]
    critic_terms: dict[str, torch.Tensor]


def artist_rewards(
    a_x: torch.Tensor,
    a_gt: torch.Tensor,
    edits: torch.Tensor,
    x_gt: torch.Tensor,
    counts: torch.Tensor,
    rl: RLConfig,
    lpips: torch.nn.Module | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """r_PA [E] of edits [E, 3, h, w] given the input's and reference's attributes [E, 4] (one row per edit), the
    references x_gt [E, 3, h, w] and the answers' suggestion counts [E, K_ops, 2] (``suggestion_tensor``)."""
    (a_edit,) = measure(edits, validate=False)
    r_comp = compliance_from_attributes(a_x, a_edit, counts)
    r_photo = photometric_control_from_attributes(a_x, a_edit, a_gt)
    if rl.lambda_perc > 0:
        if lpips is None:
            raise ValueError("rl.lambda_perc > 0 needs the LPIPS model (or set rl.lambda_perc=0)")
        r_perc = perceptual_reward(edits, x_gt, lpips, validate=False)
    else:
        r_perc = torch.zeros_like(r_photo)
    total = r_comp * (rl.lambda_photo * r_photo + rl.lambda_perc * r_perc)
    return total, {"comp": r_comp, "photo": r_photo, "perc": r_perc}


def critic_rewards(
    x: torch.Tensor,
    x_gt: torch.Tensor,
    outputs: Sequence[CriticOutput],
    degradations: Sequence[Sequence[str]],
    edit_scores: torch.Tensor | None,
    rl: RLConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The critic's reward [B·G] for answers ``outputs`` (G per image of ``x``, ``x_gt`` [B, 3, h, w]), with
    ``degradations`` the known degradation names per image (empty: not a restoration record) and ``edit_scores``
    [B·G·K] the critic's scores of each answer's edits (NaN where none parsed; None when ``rl.rank_weight`` is 0)."""
    answers = len(outputs)
    per_image = answers // x.shape[0]
    device = x.device
    suggestions = [o.suggestions for o in outputs]
    fmt = format_reward(outputs, device=device)
    if edit_scores is not None:
        before = torch.tensor([math.nan if o.score is None else o.score for o in outputs], device=device)
        edits = edit_scores.to(device).view(answers, -1)
        rank = (before[:, None] < edits).float().mean(1)  # NaN compares false: no score, no reward
    else:
        rank = torch.zeros(answers, device=device)
    repeat = torch.arange(x.shape[0], device=device).repeat_interleave(per_image)
    sugg = suggestion_reward(x[repeat], x_gt[repeat], suggestions)
    known = [list(degradations[i // per_image]) or None for i in range(answers)]
    restore = restoration_constraint_reward(suggestions, known, device=device)
    applies = torch.tensor([k is not None for k in known], dtype=torch.float32, device=device)
    weighted = rl.format_weight * fmt + rl.rank_weight * rank + rl.suggestion_weight * sugg
    weighted = weighted + rl.restoration_weight * applies * restore
    total = weighted / (rl.format_weight + rl.rank_weight + rl.suggestion_weight + rl.restoration_weight * applies)
    return total, {
        "format": fmt,
        "rank": rank,
        "suggestion": sugg,
        "restoration": restore,
        "restoration_applies": applies,
    }


def joint_rewards(
    x: torch.Tensor,
    x_gt: torch.Tensor,
    edits: torch.Tensor,
    outputs: Sequence[CriticOutput],
    degradations: Sequence[Sequence[str]],
    edit_scores: torch.Tensor | None,
    rl: RLConfig,
    lpips: torch.nn.Module | None = None,
) -> Rewards:
    """Both rewards of a step (module docstring): x, x_gt [B, 3, h, w] in [0, 1], edits [B·G·K, 3, h, w]."""
    images, answers, edit_count = x.shape[0], len(outputs), edits.shape[0]
    if answers % images or edit_count % answers or edits.shape[1:] != x.shape[1:] or x_gt.shape != x.shape:
        raise ValueError(
            f"rewards need B images, B·G answers and B·G·K edits of the images' size; got {tuple(x.shape)}, "
            f"{answers} answers, edits {tuple(edits.shape)}, references {tuple(x_gt.shape)}"
        )
    a_x, a_gt = measure(x, x_gt)
    per_edit = torch.arange(images, device=x.device).repeat_interleave(edit_count // images)
    counts = suggestion_tensor([o.suggestions for o in outputs], x.device)
    counts = counts.repeat_interleave(edit_count // answers, dim=0)
    artist, artist_terms = artist_rewards(a_x[per_edit], a_gt[per_edit], edits, x_gt[per_edit], counts, rl, lpips)
    critic, critic_terms = critic_rewards(x, x_gt, outputs, degradations, edit_scores, rl)
    return Rewards(artist, critic, artist_terms, critic_terms)


def kept_groups(rewards: torch.Tensor, group_size: int, rl: RLConfig) -> torch.Tensor:
    """[groups] bool: the groups that are not dropped (reward std >= rl.drop_std and mean <= rl.drop_mean,
    SPEC.md §8; the std is the sample std that ``group_advantages`` normalises with)."""
    grouped = rewards.float().view(-1, group_size)
    return (grouped.std(1) >= rl.drop_std) & (grouped.mean(1) <= rl.drop_mean)


def advantages(rewards: torch.Tensor, group_size: int, rl: RLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Group-normalised advantages (SPEC.md §7) [N] and the [N] bool mask of samples in kept groups."""
    kept = kept_groups(rewards, group_size, rl).repeat_interleave(group_size)
    return group_advantages(rewards.float(), group_size), kept
