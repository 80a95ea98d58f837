"""Torch references of the RL losses (SPEC.md §7): the oracles of the tests and the baselines of the benchmarks.

Both are written the way the public training code writes them, not the way the kernels compute them:
``nft_loss_reference`` goes through x_t and x0-space predictions with the adaptive weights in float64 (the
DiffusionNFT training loop), ``grpo_loss_reference`` materialises the full log-softmax and applies TRL's
clipped-ratio formula with a per-sequence masked mean (TRL's ``loss_type="grpo"``). With ``dtype=torch.float64``
they are the truth; with ``dtype=None`` they keep the input precision, as the public code does.
"""

from __future__ import annotations

import torch


def _per_sample(value: torch.Tensor | float, batch: int, like: torch.Tensor, ndim: int) -> torch.Tensor:
    """A float or (B,) tensor as [B, 1, ..., 1], at least float32, on ``like``'s device."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    value = torch.as_tensor(value, dtype=dtype, device=like.device).expand(batch)
    return value.reshape(batch, *([1] * (ndim - 1)))


def nft_loss_reference(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_target: torch.Tensor,
    t: torch.Tensor | float,
    r: torch.Tensor | float,
    beta: float,
    adaptive: bool = True,
    v_ref: torch.Tensor | None = None,
    kl_weight: float = 0.0,
    *,
    x0: torch.Tensor | None = None,
    dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    """Per-sample DiffusionNFT loss (B,), differentiable with respect to ``v_theta`` only.

    The clean latent ``x0`` is arbitrary (zeros when omitted): with noise ε = x0 + v_target, x_t = (1 − t) x0 + t ε
    and the x0-space error x_t − t v± − x0 equals t (v − v±) whatever x0 is. ``dtype`` casts every input first
    (None keeps the inputs' precision; the adaptive weights are float64 either way, as in the public code).
    """
    def cast(x):  # (B,) inputs become (B, 1): torch's mean over an empty dim tuple would reduce everything
        x = x if dtype is None else x.to(dtype)
        return x.unsqueeze(-1) if x.dim() == 1 else x

    v_theta, v_old, v = cast(v_theta), cast(v_old).detach(), cast(v_target).detach()
    batch, ndim = v_theta.shape[0], v_theta.ndim
    dims = tuple(range(1, ndim))
    t = _per_sample(t, batch, v_theta, ndim)
    r = _per_sample(r, batch, v_theta, ndim).reshape(batch)
    x0 = torch.zeros_like(v) if x0 is None else cast(x0).detach()
    noise = x0 + v  # v = ε − x0
    x_t = (1 - t) * x0 + t * noise

    positive = beta * v_theta + (1 - beta) * v_old  # v⁺
    negative = (1 + beta) * v_old - beta * v_theta  # v⁻
    if adaptive:
        x0_positive = x_t - t * positive
        x0_negative = x_t - t * negative
        with torch.no_grad():
            w_positive = (x0_positive.double() - x0.double()).abs().mean(dims, keepdim=True).clamp(min=1e-5)
            w_negative = (x0_negative.double() - x0.double()).abs().mean(dims, keepdim=True).clamp(min=1e-5)
        loss_positive = ((x0_positive - x0) ** 2 / w_positive).mean(dims)
        loss_negative = ((x0_negative - x0) ** 2 / w_negative).mean(dims)
    else:
        loss_positive = ((positive - v) ** 2).mean(dims)
        loss_negative = ((negative - v) ** 2).mean(dims)
    loss = (r * loss_positive + (1 - r) * loss_negative) / beta
    if kl_weight != 0.0:
        loss = loss + kl_weight * ((v_theta - cast(v_ref).detach()) ** 2).mean(dims)
    return loss


def token_logprobs_reference(
    logits: torch.Tensor, completion_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log softmax(logits / temperature)[id] per token: logits [B, T, V], ids [B, T] -> [B, T] in logits' dtype."""
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, completion_ids.long().unsqueeze(-1)).squeeze(-1)


def grpo_objective_reference(
    logp: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    *,
    epsilon: float = 0.2,
    beta_kl: float = 0.04,
) -> torch.Tensor:
    """TRL's GRPO loss (scalar) from per-token log-probs [B, T]: clipped ratio + β_kl k3-KL, per-sequence masked
    mean, then the mean over sequences (``loss_type="grpo"``).

    ``old_logp`` None means one update per batch (the ratio is exp(logp − logp.detach()) = 1 with gradient);
    ``ref_logp`` is needed when ``beta_kl`` is not 0.
    """
    old = logp.detach() if old_logp is None else old_logp.to(logp.dtype)
    ratio = torch.exp(logp - old)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    adv = advantages.to(logp.dtype).unsqueeze(1)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if beta_kl != 0.0:
        diff = ref_logp.to(logp.dtype) - logp
        per_token = per_token + beta_kl * (torch.exp(diff) - diff - 1)
    mask = completion_mask.to(logp.dtype)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()


def grpo_loss_reference(
    logits: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    *,
    epsilon: float = 0.2,
    beta_kl: float = 0.04,
    temperature: float = 1.0,
    dtype: torch.dtype | None = torch.float64,
) -> torch.Tensor:
    """TRL's GRPO loss (scalar) from full logits [B, T, V] (``dtype`` casts them first; None keeps them):
    ``grpo_objective_reference`` of their log-softmax at the completion ids."""
    logits = logits if dtype is None else logits.to(dtype)
    logp = token_logprobs_reference(logits, completion_ids, temperature)  # [B, T]
    return grpo_objective_reference(
        logp, advantages, completion_mask, old_logp, ref_logp, epsilon=epsilon, beta_kl=beta_kl
    )
