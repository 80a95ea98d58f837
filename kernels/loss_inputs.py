"""Per-sample inputs of the RL losses (SPEC.md §7): GRPO's group advantages, DiffusionNFT's optimality, and the
input checks that the loss entry points share.

No Triton here: ``nft_entry`` and ``grpo_entry`` validate with these before choosing a path.
"""

from __future__ import annotations

import numbers

import torch

A_MAX = 5.0  # advantage clip of the optimality r
GROUP_STD_EPS = 1e-4
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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


def check_float(name: str, tensor: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    """Raise ValueError unless ``tensor`` is a float tensor of ``shape`` on ``device``."""
    if tensor.dtype not in FLOAT_DTYPES or tuple(tensor.shape) != shape or tensor.device != device:
        raise ValueError(
            f"{name} must be a float tensor of shape {shape} on {device}, got {tensor.dtype} "
            f"{tuple(tensor.shape)} on {tensor.device}"
        )


def per_sample(name: str, value: torch.Tensor | float, batch: int, device: torch.device) -> torch.Tensor:
    """A float or a (B,) tensor as a contiguous float32 (B,) tensor on ``device``."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device)
    if value.dim() == 0:
        return value.expand(batch).contiguous()
    if tuple(value.shape) != (batch,):
        raise ValueError(f"{name} must be a float or a tensor of shape ({batch},), got {tuple(value.shape)}")
    return value.contiguous()


def check_number(name: str, value: float, low: float | None = None) -> float:
    """``value`` as a float; ValueError unless it is a Python number (not a bool, not a tensor) above ``low``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or (low is not None and not value > low):
        bound = "" if low is None else f" > {low}"
        raise ValueError(f"{name} must be a Python number{bound}, got {value!r}")
    return float(value)
