"""Fused Triton kernels, one op per module, each with its launcher and its torch fallback.

Imported as ``spc_fast.kernels`` (the folder ``kernels/`` is mapped onto that name by pyproject.toml). The RL
losses are re-exported here lazily: their public functions live in ``spc_fast.rl_losses``, which imports Triton
only on the kernel path, so importing this package never needs Triton.
"""

import importlib

_LAZY = {
    "nft_loss": "spc_fast.rl_losses",
    "grpo_loss": "spc_fast.rl_losses",
    "grpo_loss_from_logits": "spc_fast.rl_losses",
    "token_logprobs": "spc_fast.rl_losses",
    "group_advantages": "spc_fast.rl_losses",
    "optimality_from_advantage": "spc_fast.rl_losses",
    "nft_loss_reference": "spc_fast.kernels.references",
    "grpo_loss_reference": "spc_fast.kernels.references",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
