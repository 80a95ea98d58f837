"""GRPO's public losses (SPEC.md §7): ``grpo_loss`` (hidden states through the LM head), ``grpo_loss_from_logits``
and ``token_logprobs``. Each checks its inputs, then takes the fused kernels (``grpo.py``) where
``dispatch.use_triton`` allows it, else the float32 torch references (``references.py``).

Triton is imported only on the kernel path, so this module (and ``spc_fast.kernels``) imports without it.
"""

from __future__ import annotations

import numbers

import torch

from spc_fast.kernels.dispatch import use_triton
from spc_fast.kernels.loss_inputs import FLOAT_DTYPES, check_float, check_number
from spc_fast.kernels.references import grpo_loss_reference, token_logprobs_reference


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
    check_float("advantages", advantages, (batch,), device)
    if tuple(completion_mask.shape) != (batch, length) or completion_mask.device != device:
        raise ValueError(
            f"completion_mask must have the shape of completion_ids {(batch, length)} on {device}, got "
            f"{tuple(completion_mask.shape)} on {completion_mask.device}"
        )
    if old_logp is not None:
        check_float("old_logp", old_logp, (batch, length), device)
    if beta_kl != 0.0:
        if ref_logp is None:
            raise ValueError("beta_kl != 0 needs ref_logp, the reference policy's log-probs (or pass beta_kl=0)")
        check_float("ref_logp", ref_logp, (batch, length), device)


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
    epsilon = check_number("epsilon", epsilon, 0.0)
    if not isinstance(beta_kl, numbers.Real) or isinstance(beta_kl, bool) or beta_kl < 0:
        raise ValueError(f"beta_kl must be a Python number >= 0, got {beta_kl!r}")
    return epsilon, float(beta_kl), check_number("temperature", temperature, 0.0)


def _autocast_head(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states and LM head in autocast's dtype when autocast is on, as autocast treats a linear layer: the
    fused op computes in its inputs' dtype (float32 master weights under bf16 autocast give bf16 logits either way)."""
    device = hidden_states.device.type
    if not torch.is_autocast_enabled(device):
        return hidden_states, lm_head_weight
    dtype = torch.get_autocast_dtype(device)
    return hidden_states.to(dtype), lm_head_weight.to(dtype)


def _check_head(hidden_states: torch.Tensor, lm_head_weight: torch.Tensor, completion_ids: torch.Tensor):
    if hidden_states.dim() != 3 or hidden_states.dtype not in FLOAT_DTYPES:
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

    if use_triton(hidden_states, lm_head_weight, op="grpo_loss"):
        hidden_states, lm_head_weight = _autocast_head(hidden_states, lm_head_weight)
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
    if logits.dim() != 3 or logits.dtype not in FLOAT_DTYPES:
        raise ValueError(f"logits must be float (B, T, V), got {logits.dtype} {tuple(logits.shape)}")
    epsilon, beta_kl, temperature = _check_loss_options(epsilon, beta_kl, temperature)
    if tuple(completion_ids.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"completion_ids must be (B, T) = {tuple(logits.shape[:2])} like the logits, got "
            f"{tuple(completion_ids.shape)}"
        )
    _check_grpo_tokens(completion_ids, advantages, completion_mask, old_logp, ref_logp, beta_kl, logits.device)

    if use_triton(logits, op="grpo_loss_from_logits"):
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
    temperature = check_number("temperature", temperature, 0.0)
    batch, length, hidden = hidden_states.shape
    if use_triton(hidden_states, lm_head_weight, op="token_logprobs"):
        hidden_states, lm_head_weight = _autocast_head(hidden_states, lm_head_weight)
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
