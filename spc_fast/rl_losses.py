"""Stage III losses (SPEC.md §7): DiffusionNFT for the artist, GRPO for the critic, and their per-sample inputs.

The training code's one place to import them from. Each op lives beside its kernel in ``spc_fast.kernels``
(Liger-style: the public function with its input checks, its dispatch and its torch fallback in ``nft_entry`` and
``grpo_entry``, the kernels in ``nft`` and ``grpo``, the references in ``references``); the advantage helpers
that make their inputs are in ``kernels/loss_inputs.py``. Imports go this way only: rl_losses -> kernels.
"""

from spc_fast.kernels.grpo_entry import grpo_loss, grpo_loss_from_logits, token_logprobs
from spc_fast.kernels.loss_inputs import A_MAX, GROUP_STD_EPS, group_advantages, optimality_from_advantage
from spc_fast.kernels.nft_entry import nft_loss
from spc_fast.kernels.references import grpo_loss_reference, nft_loss_reference, token_logprobs_reference

__all__ = [
    "A_MAX",
    "GROUP_STD_EPS",
    "group_advantages",
    "grpo_loss",
    "grpo_loss_from_logits",
    "grpo_loss_reference",
    "nft_loss",
    "nft_loss_reference",
    "optimality_from_advantage",
    "token_logprobs",
    "token_logprobs_reference",
]
