"""Fused Triton kernels, one op per module, each with its launcher, beside its public entry and torch reference.

Imported as ``spc_fast.kernels`` (the folder ``kernels/`` is mapped onto that name by pyproject.toml).
- Kernel modules (import Triton): ``photometric_stats``, ``retouch_chain``, ``nft``, ``grpo``, ``bilateral_slice``
  (the full-resolution slice of ``spc_fast.artist.upsample``), and their shared ``@triton.jit`` colour helpers
  ``tl_colour``.
- Triton-free modules, imported here: the public RL losses (``nft_entry``, ``grpo_entry``) with their inputs
  (``loss_inputs``), the torch references (``references``), the dispatch rule (``dispatch``), the device's SM count
  for grid sizing (``grid``) and the photometric statistics contract (``photometric_partials``).
Importing this package never imports Triton: the entries import their kernel module only on the kernel path.
"""

from spc_fast.kernels.grpo_entry import grpo_loss, grpo_loss_from_logits, token_logprobs
from spc_fast.kernels.loss_inputs import group_advantages, optimality_from_advantage
from spc_fast.kernels.nft_entry import nft_loss
from spc_fast.kernels.references import grpo_loss_reference, nft_loss_reference

__all__ = [
    "group_advantages",
    "grpo_loss",
    "grpo_loss_from_logits",
    "grpo_loss_reference",
    "nft_loss",
    "nft_loss_reference",
    "optimality_from_advantage",
    "token_logprobs",
]
