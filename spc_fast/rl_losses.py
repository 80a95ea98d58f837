"""Stage III losses (SPEC.md §7): DiffusionNFT for the artist, GRPO for the critic, and their advantage helpers.

Every entry point validates once, then takes the fused Triton kernels (``kernels/nft.py``,
``kernels/grpo.py``) when ``dispatch.use_triton`` allows, else the torch references of
``kernels/references.py`` computed in float32. Triton is imported only on the kernel path.
"""

from __future__ import annotations

import numbers

import torch

from spc_fast.kernels import dispatch
from spc_fast.kernels.references import grpo_loss_reference, nft_loss_reference, token_logprobs_reference

A_MAX = 5.0  # advantage clip of the optimality r
GROUP_STD_EPS = 1e-4
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def optimality_from_advantage(advantages: torch.Tensor, a_max: float = A_MAX) -> torch.Tensor:
    """r = clamp(clip(A, ±a_max) / a_max / 2 + 0.5, 0, 1): the DiffusionNFT optimality of each sample."""
    return torch.clamp(advantages.clamp(-a_max, a_max) / a_max / 2 + 0.5, 0.0, 1.0)


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """A_i = (r_i − mean_g) / (std_g + 1e-4) over consecutive groups of ``group_size`` completions.

    rewards: (B,) with B a multiple of ``group_size`` (the completions of one prompt side by side). std_g is the
    sample standard deviation (Bessel-corrected, ``torch.std``'s default), as TRL computes it: GRPO's formula is
    TRL's, and its tests are the oracle. A group of equal rewards has std 0 and gets advantages of exactly 0.
    Returns float32 (float64 for float64 rewards).
    """
    if rewards.dim() != 1 or not rewards.is_floating_point():
        raise ValueError(f"rewards must be a 1-D float tensor (B,), got {rewards.dtype} {tuple(rewards.shape)}")
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_size must be >= 2 and divide the {rewards.shape[0]} rewards, got {group_size}: "
            "a group needs two completions to define a relative advantage"
        )
    grouped = rewards.to(torch.promote_types(rewards.dtype, torch.float32)).view(-1, group_size)  # [groups, G]
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + GROUP_STD_EPS)).reshape(-1)


def _check_float(name: str, tensor: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    if tensor.dtype not in _FLOATS or tuple(tensor.shape) != shape or tensor.device != device:
        raise ValueError(
            f"{name} must be a float tensor of shape {shape} on {device}, got {tensor.dtype} "
            f"{tuple(tensor.shape)} on {tensor.device}"
        )


def _per_sample(name: str, value: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.dim() == 0:
        return value.expand(batch).contiguous()
    if tuple(value.shape) != (batch,):
        raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), got {tuple(value.shape)}")
    return value.contiguous()


def _check_scalar(name: str, value: float, low: float) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > low:
        raise ValueError(f"{name} must be a Python number > {low}, got {value!r}")
    return float(value)


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_target: torch.Tensor,
    t: torch.Tensor | float,
    r: torch.Tensor | float,
    beta: float,
    adaptive: bool = True,
    v_ref: torch.Tensor | None = None,
    kl_weight: float = 0.0,
) -> torch.Tensor:
    """Per-sample DiffusionNFT loss (B,) float32, differentiable with respect to ``v_theta`` only.

    v_theta, v_old, v_target (and v_ref): velocity fields of one shape (B, ...), float16/bfloat16/float32/float64
    on one device; the loss accumulates in float32. t (flow time in (0, 1)) and r (optimality in [0, 1], see
    ``optimality_from_advantage``): floats or (B,) tensors. beta: Python number > 0. ``adaptive`` selects the
    x0-space adaptive weighting of the official code, else the plain velocity MSE. ``kl_weight`` λ adds
    λ mean((v_θ − v_ref)²), which needs ``v_ref``.
    """
    if v_theta.dim() < 1 or v_theta.numel() == 0 or v_theta.dtype not in _FLOATS:
        raise ValueError(
            f"v_theta must be a non-empty float tensor (B, ...), got {v_theta.dtype} {tuple(v_theta.shape)}"
        )
    shape, device = tuple(v_theta.shape), v_theta.device
    _check_float("v_old", v_old, shape, device)
    _check_float("v_target", v_target, shape, device)
    beta = _check_scalar("beta", beta, 0.0)
    if not isinstance(kl_weight, numbers.Real) or isinstance(kl_weight, bool):
        raise ValueError(f"kl_weight must be a Python number, got {kl_weight!r}")
    kl_weight = float(kl_weight)
    if kl_weight != 0.0:
        if v_ref is None:
            raise ValueError("kl_weight != 0 needs v_ref, the reference model's velocity")
        _check_float("v_ref", v_ref, shape, device)
    v_ref = v_ref if kl_weight != 0.0 else None
    batch = shape[0]
    t = _per_sample("t", t, batch, device)
    r = _per_sample("r", r, batch, device)

    velocities = [x for x in (v_theta, v_old, v_target, v_ref) if x is not None]
    if dispatch.use_triton(*velocities):
        from spc_fast.kernels.nft import NFTLossFunction

        theta, old, target, ref = (None if x is None else x.reshape(batch, -1).contiguous()
                                   for x in (v_theta, v_old.detach(), v_target.detach(), v_ref))
        ref = None if ref is None else ref.detach()
        grad_enabled = torch.is_grad_enabled()
        return NFTLossFunction.apply(theta, old, target, ref, t, r, beta, kl_weight, bool(adaptive), grad_enabled)
    loss = nft_loss_reference(
        v_theta, v_old, v_target, t, r, beta, bool(adaptive), v_ref, kl_weight, dtype=torch.float32
    )
    return loss.float()


def _check_grpo_tokens(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl, device):
    if (
        completion_ids.dim() != 2
        or completion_ids.dtype.is_floating_point
        or completion_ids.dtype == torch.bool
        or completion_ids.device != device
    ):
        raise ValueError(
            f"completion_ids must be an integer tensor (B, T) on {device}, got {completion_ids.dtype} "
            f"{tuple(completion_ids.shape)} on {completion_ids.device}"
        )
    batch, length = completion_ids.shape
    _check_float("advantages", advantages, (batch,), device)
    if tuple(completion_mask.shape) != (batch, length) or completion_mask.device != device:
        raise ValueError(
            f"completion_mask must have the shape of completion_ids {(batch, length)} on {device}, got "
            f"{tuple(completion_mask.shape)} on {completion_mask.device}"
        )
    if old_logp is not None:
        _check_float("old_logp", old_logp, (batch, length), device)
    if beta_kl != 0.0:
        if ref_logp is None:
            raise ValueError("beta_kl != 0 needs ref_logp, the reference policy's log-probs (or pass beta_kl=0)")
        _check_float("ref_logp", ref_logp, (batch, length), device)


def _token_inputs(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl):
    """Flattened per-token ids, advantages, loss weights w = m / (max(Σ_t m, 1) B), old and ref log-probs."""
    batch, length = completion_ids.shape
    mask = completion_mask.to(torch.float32)
    weights = mask / (mask.sum(-1, keepdim=True).clamp(min=1.0) * batch)  # [B, T]
    adv = advantages.to(torch.float32)[:, None].expand(batch, length)

    def flat(x):
        return None if x is None else x.detach().to(torch.float32).reshape(-1).contiguous()

    return (
        completion_ids.reshape(-1).contiguous(),
        flat(adv),
        flat(weights),
        flat(old_logp),
        flat(ref_logp if beta_kl != 0.0 else None),
    )


def _check_loss_options(epsilon: float, beta_kl: float, temperature: float) -> tuple[float, float, float]:
    epsilon = _check_scalar("epsilon", epsilon, 0.0)
    if not isinstance(beta_kl, numbers.Real) or isinstance(beta_kl, bool) or beta_kl < 0:
        raise ValueError(f"beta_kl must be a Python number >= 0, got {beta_kl!r}")
    return epsilon, float(beta_kl), _check_scalar("temperature", temperature, 0.0)


def _check_head(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, completion_ids: torch.Tensor):
    if hidden_states.dim() != 3 or hidden_states.dtype not in _FLOATS:
        raise ValueError(
            f"hidden_states must be float (B, T, H), got {hidden_states.dtype} {tuple(hidden_states.shape)}"
        )
    batch, length, hidden = hidden_states.shape
    if (
        lm_head_weight.dim() != 2
        or lm_head_weight.shape[1] != hidden
        or lm_head_weight.dtype != hidden_states.dtype
        or lm_head_weight.device != hidden_states.device
    ):
        raise ValueError(
            f"lm_head_weight must be (V, {hidden}) {hidden_states.dtype} on {hidden_states.device} like the hidden "
            f"states, got {lm_head_weight.dtype} {tuple(lm_head_weight.shape)} on {lm_head_weight.device}"
        )
    if tuple(completion_ids.shape) != (batch, length) or completion_ids.device != hidden_states.device:
        raise ValueError(
            f"completion_ids must be (B, T) = {(batch, length)} on {hidden_states.device} like the hidden "
            f"states, got {tuple(completion_ids.shape)} on {completion_ids.device}"
        )


def grpo_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    completion_ids: torch.Tensor,
    advantages: torch.Tensor,
    completion_mask: torch.Tensor,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    *,
    epsilon: float = 0.2,
    beta_kl: float = 0.04,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """GRPO loss (scalar float32) of the critic's final hidden states through its LM head, never holding the
    full (B·T × V) logits on the kernel path.

    hidden_states: (B, T, H), the states that predict the completion tokens; lm_head_weight: (V, H), same dtype;
    completion_ids: (B, T) integers in [0, V); advantages: (B,) (see ``group_advantages``); completion_mask:
    (B, T), nonzero on completion tokens; old_logp, ref_logp: (B, T) log-probs of the sampling and reference
    policies (old_logp None: one update per batch, ratio 1). Gradients reach hidden_states and, when it requires
    grad, lm_head_weight. ``chunk_tokens`` bounds the tokens whose logits exist at once (default: ~256 MiB).
    """
    _check_head(hidden_states, lm_head_weight, completion_ids)
    epsilon, beta_kl, temperature = _check_loss_options(epsilon, beta_kl, temperature)
    device = hidden_states.device
    _check_grpo_tokens(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl, device)
    if chunk_tokens is not None and (not isinstance(chunk_tokens, int) or chunk_tokens < 1):
        raise ValueError(f"chunk_tokens must be a positive int or None, got {chunk_tokens!r}")

    if dispatch.use_triton(hidden_states, lm_head_weight):
        from spc_fast.kernels.grpo import FusedLinearGRPOFunction, default_chunk_tokens

        batch, length, hidden = hidden_states.shape
        vocab = lm_head_weight.shape[0]
        chunk = chunk_tokens or default_chunk_tokens(batch * length, vocab, hidden_states.element_size())
        tokens = _token_inputs(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl)
        return FusedLinearGRPOFunction.apply(
            hidden_states.reshape(batch * length, hidden), lm_head_weight, *tokens, epsilon, beta_kl, temperature,
            max(1, chunk), torch.is_grad_enabled(),
        )
    logits = hidden_states @ lm_head_weight.T
    return grpo_loss_reference(
        logits, completion_ids, advantages, completion_mask, old_logp, ref_logp,
        epsilon=epsilon, beta_kl=beta_kl, temperature=temperature, dtype=torch.float32,
    )


def grpo_loss_from_logits(
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
) -> torch.Tensor:
    """GRPO loss (scalar float32) from logits (B, T, V) that already exist; arguments as ``grpo_loss``.

    The kernel reads the logits twice and writes their gradient once, with no float32 copy of them.
    """
    if logits.dim() != 3 or logits.dtype not in _FLOATS:
        raise ValueError(f"logits must be float (B, T, V), got {logits.dtype} {tuple(logits.shape)}")
    epsilon, beta_kl, temperature = _check_loss_options(epsilon, beta_kl, temperature)
    if tuple(completion_ids.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"completion_ids must be (B, T) = {tuple(logits.shape[:2])} like the logits, got "
            f"{tuple(completion_ids.shape)}"
        )
    _check_grpo_tokens(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl, logits.device)

    if dispatch.use_triton(logits):
        from spc_fast.kernels.grpo import LogitsGRPOFunction

        flat = logits.reshape(-1, logits.shape[-1])
        flat = flat if flat.stride(1) == 1 else flat.contiguous()
        tokens = _token_inputs(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl)
        return LogitsGRPOFunction.apply(flat, *tokens, epsilon, beta_kl, temperature, torch.is_grad_enabled())
    return grpo_loss_reference(
        logits, completion_ids, advantages, completion_mask, old_logp, ref_logp,
        epsilon=epsilon, beta_kl=beta_kl, temperature=temperature, dtype=torch.float32,
    )


@torch.no_grad()
def token_logprobs(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    completion_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_tokens: int | None = None,
) -> torch.Tensor:
    """log softmax(h W^T / T)[id] per token (B, T) float32, not differentiable: the old and reference
    log-probs of ``grpo_loss``, computed chunk by chunk like it."""
    _check_head(hidden_states, lm_head_weight, completion_ids)
    if completion_ids.dtype.is_floating_point or completion_ids.dtype == torch.bool:
        raise ValueError(f"completion_ids must be integers, got {completion_ids.dtype}")
    temperature = _check_scalar("temperature", temperature, 0.0)
    batch, length, hidden = hidden_states.shape
    if dispatch.use_triton(hidden_states, lm_head_weight):
        from spc_fast.kernels.grpo import default_chunk_tokens, grpo_fused_linear

        num_tokens, vocab = batch * length, lm_head_weight.shape[0]
        chunk = chunk_tokens or default_chunk_tokens(num_tokens, vocab, hidden_states.element_size())
        zeros = hidden_states.new_zeros(num_tokens, dtype=torch.float32)
        _, logp, _, _ = grpo_fused_linear(
            hidden_states.reshape(num_tokens, hidden), lm_head_weight, completion_ids.reshape(-1).contiguous(),
            zeros, zeros, None, None, 0.2, 0.0, temperature, max(1, chunk), False, False,
        )
        return logp.view(batch, length)
    logits = (hidden_states @ lm_head_weight.T).float()
    return token_logprobs_reference(logits, completion_ids, temperature)
