"""``nft_loss``, the public DiffusionNFT loss (SPEC.md §7): input checks, then the fused kernel (``nft.py``) where
``dispatch.use_triton`` allows it, else the float32 torch reference (``references.nft_loss_reference``).

Triton is imported only on the kernel path, so this module (and ``spc_fast.kernels``) imports without it.
"""

from __future__ import annotations

import torch

from spc_fast.kernels.dispatch import use_triton
from spc_fast.kernels.loss_inputs import FLOAT_DTYPES, check_float, check_number, per_sample
from spc_fast.kernels.references import nft_loss_reference


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
    if v_theta.dim() < 1 or v_theta.numel() == 0 or v_theta.dtype not in FLOAT_DTYPES:
        raise ValueError(
            f"v_theta must be a non-empty float tensor (B, ...), got {v_theta.dtype} {tuple(v_theta.shape)}"
        )
    shape, device = tuple(v_theta.shape), v_theta.device
    check_float("v_old", v_old, shape, device)
    check_float("v_target", v_target, shape, device)
    beta = check_number("beta", beta, 0.0)
    kl_weight = check_number("kl_weight", kl_weight)
    if kl_weight != 0.0:
        if v_ref is None:
            raise ValueError("kl_weight != 0 needs v_ref, the reference model's velocity")
        check_float("v_ref", v_ref, shape, device)
    v_ref = v_ref if kl_weight != 0.0 else None
    batch = shape[0]
    t = per_sample("t", t, batch, device)
    r = per_sample("r", r, batch, device)

    velocities = [x for x in (v_theta, v_old, v_target, v_ref) if x is not None]
    if use_triton(*velocities, op="nft_loss"):
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
