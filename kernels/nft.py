"""Fused DiffusionNFT velocity loss (SPEC.md §7): per-sample loss of the artist's velocity field and its gradient.

With d = v − v_old, δ = v_θ − v_old and u± = v − v± (so u⁺ = d − βδ, u⁻ = d + βδ and e± = t u±), both forms are
L± = s± mean(u±²): s± = 1 for the plain form, s± = t² / max(t mean|u±|, 1e-5) (detached) for the adaptive one.
The per-sample loss (r L⁺ + (1 − r) L⁻) / β + λ mean((v_θ − v_ref)²) then has the gradient

    ∂loss/∂v_θ = (2 / N) [ ((1 − r) s⁻ − r s⁺) d + β (r s⁺ + (1 − r) s⁻) δ + λ (v_θ − v_ref) ]

with per-sample coefficients only. Passes over the [B, N] inputs (e = bytes per element, read + written):
- adaptive: forward reads v_θ, v_old, v once for the sums of u±² and |u±| (3e); s± need those sums, so the
  gradient is a second pass in backward, where dLoss/dloss is known (3e read + e written): 7e in all.
- plain: s± = 1 is known up front, so forward writes the gradient for dLoss/dloss = 1 while it sums (3e + e)
  and backward only scales it per sample (e + e): 6e in all, against 7e for recomputing in backward.
- the KL term adds v_ref to every pass that reads the velocities (+e forward, +e backward when adaptive).
Partial sums go per program to a [B, NB, 5] buffer and a one-program-per-sample kernel finishes them (no atomics:
the result does not depend on scheduling). Interpreted on the CPU the same kernels run with wide blocks.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from spc_fast.kernels.dispatch import interpreting, record_launch
from spc_fast.kernels.grid import min_programs
from spc_fast.kernels.tl_colour import round_to_bfloat16

NUM_SUMS = 5  # Σu⁺², Σ|u⁺|, Σu⁻², Σ|u⁻|, Σ(v_θ − v_ref)²

# 2048 elements over 8 warps is 8 per thread: one 16-byte load per tensor for bf16. About 8 programs per SM,
# each summing up to MAX_CHUNKS blocks, keeps the partial buffer small and the tail wave short.
GPU_BLOCK = 2048
GPU_NUM_WARPS = 8
PROGRAMS_PER_SM = 8
MAX_CHUNKS = 64
FINALIZE_BLOCK = 256
# The interpreter runs programs one after another with numpy per op: wide blocks, one program per sample.
INTERPRET_BLOCK = 1 << 14


@triton.jit
def _nft_pass_kernel(
    theta_ptr,  # [B, N] v_θ, rows contiguous (any float dtype; upcast on load)
    old_ptr,  # [B, N] v_old
    target_ptr,  # [B, N] target velocity v = ε − x0
    ref_ptr,  # [B, N] v_ref (read only when HAS_REF)
    r_ptr,  # [B] f32 optimality r (read only when WRITE_GRAD)
    scale_ptr,  # [B, 2] f32 s⁺, s⁻ (read only when WRITE_GRAD and ADAPTIVE)
    grad_out_ptr,  # [B] f32 dLoss/dloss_b (read only when HAS_GRAD_OUT; 1 otherwise)
    grad_ptr,  # [B, N] ∂Loss/∂v_θ in v_θ's dtype (written only when WRITE_GRAD)
    partial_ptr,  # [B, NB, NUM_SUMS] f32 sums of this program's elements (written only when WRITE_SUMS)
    num_elements,  # N per sample
    elements_per_program,  # chunks * BLOCK
    num_chunks,
    beta,
    kl_weight,
    HAS_REF: tl.constexpr,
    ADAPTIVE: tl.constexpr,
    HAS_GRAD_OUT: tl.constexpr,
    WRITE_SUMS: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    IS_BFLOAT16: tl.constexpr,  # gradient dtype bf16 (rounded explicitly: the interpreter's cast truncates)
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    row = tl.program_id(1)
    offset = row.to(tl.int64) * num_elements
    start = pid * elements_per_program
    lanes = tl.arange(0, BLOCK)

    if WRITE_GRAD:
        r = tl.load(r_ptr + row)
        if ADAPTIVE:
            s_pos = tl.load(scale_ptr + 2 * row)
            s_neg = tl.load(scale_ptr + 2 * row + 1)
        else:
            s_pos = 1.0
            s_neg = 1.0
        grad_out = tl.load(grad_out_ptr + row) if HAS_GRAD_OUT else 1.0
        two_over_n = 2.0 * grad_out / num_elements
        c_d = two_over_n * ((1.0 - r) * s_neg - r * s_pos)  # coefficient of d = v − v_old
        c_delta = two_over_n * beta * (r * s_pos + (1.0 - r) * s_neg)  # of δ = v_θ − v_old
        c_ref = two_over_n * kl_weight  # of v_θ − v_ref

    sq_pos = tl.zeros([BLOCK], tl.float32)
    abs_pos = tl.zeros([BLOCK], tl.float32)
    sq_neg = tl.zeros([BLOCK], tl.float32)
    abs_neg = tl.zeros([BLOCK], tl.float32)
    sq_ref = tl.zeros([BLOCK], tl.float32)
    for chunk in range(0, num_chunks):
        idx = start + chunk * BLOCK + lanes
        mask = idx < num_elements  # masked lanes load 0: every term below is 0 there
        theta = tl.load(theta_ptr + offset + idx, mask=mask, other=0.0).to(tl.float32)
        old = tl.load(old_ptr + offset + idx, mask=mask, other=0.0).to(tl.float32)
        target = tl.load(target_ptr + offset + idx, mask=mask, other=0.0).to(tl.float32)
        d = target - old  # v − v_old
        delta = theta - old  # v_θ − v_old
        if WRITE_SUMS:
            u_pos = d - beta * delta  # v − v⁺, v⁺ = (1 − β) v_old + β v_θ
            u_neg = d + beta * delta  # v − v⁻, v⁻ = (1 + β) v_old − β v_θ
            sq_pos += u_pos * u_pos
            abs_pos += tl.abs(u_pos)
            sq_neg += u_neg * u_neg
            abs_neg += tl.abs(u_neg)
        if HAS_REF:
            kl = theta - tl.load(ref_ptr + offset + idx, mask=mask, other=0.0).to(tl.float32)
            sq_ref += kl * kl
        if WRITE_GRAD:
            grad = c_d * d + c_delta * delta
            if HAS_REF:
                grad += c_ref * kl
            if IS_BFLOAT16:
                grad = round_to_bfloat16(grad)
            tl.store(grad_ptr + offset + idx, grad.to(grad_ptr.dtype.element_ty), mask=mask)

    if WRITE_SUMS:
        out = partial_ptr + (row * tl.num_programs(0) + pid) * 5
        tl.store(out + 0, tl.sum(sq_pos, axis=0))
        tl.store(out + 1, tl.sum(abs_pos, axis=0))
        tl.store(out + 2, tl.sum(sq_neg, axis=0))
        tl.store(out + 3, tl.sum(abs_neg, axis=0))
        tl.store(out + 4, tl.sum(sq_ref, axis=0))


@triton.jit
def _nft_finalize_kernel(
    partial_ptr,  # [B, NB, NUM_SUMS] f32
    t_ptr,  # [B] f32 time of each sample (read only when ADAPTIVE)
    r_ptr,  # [B] f32 optimality
    loss_ptr,  # [B] f32 per-sample loss
    scale_ptr,  # [B, 2] f32 s⁺, s⁻ (1 for the plain form)
    num_partials,  # NB
    num_elements,  # N
    beta,
    kl_weight,
    ADAPTIVE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    lanes = tl.arange(0, BLOCK)
    sq_pos = tl.zeros([BLOCK], tl.float32)
    abs_pos = tl.zeros([BLOCK], tl.float32)
    sq_neg = tl.zeros([BLOCK], tl.float32)
    abs_neg = tl.zeros([BLOCK], tl.float32)
    sq_ref = tl.zeros([BLOCK], tl.float32)
    for start in range(0, num_partials, BLOCK):
        j = start + lanes
        mask = j < num_partials
        p = partial_ptr + (row * num_partials + j) * 5
        sq_pos += tl.load(p + 0, mask=mask, other=0.0)
        abs_pos += tl.load(p + 1, mask=mask, other=0.0)
        sq_neg += tl.load(p + 2, mask=mask, other=0.0)
        abs_neg += tl.load(p + 3, mask=mask, other=0.0)
        sq_ref += tl.load(p + 4, mask=mask, other=0.0)
    inv_n = 1.0 / num_elements
    mean_sq_pos = tl.sum(sq_pos, axis=0) * inv_n  # mean(u⁺²)
    mean_sq_neg = tl.sum(sq_neg, axis=0) * inv_n
    r = tl.load(r_ptr + row)
    if ADAPTIVE:
        t = tl.load(t_ptr + row)
        # w± = max(mean|e±|, 1e-5) with e± = t u±, and L± = mean(e±²) / w± = s± mean(u±²)
        s_pos = t * t / tl.maximum(t * tl.sum(abs_pos, axis=0) * inv_n, 1e-5)
        s_neg = t * t / tl.maximum(t * tl.sum(abs_neg, axis=0) * inv_n, 1e-5)
    else:
        s_pos = 1.0
        s_neg = 1.0
    tl.store(scale_ptr + 2 * row, s_pos)
    tl.store(scale_ptr + 2 * row + 1, s_neg)
    loss = (r * s_pos * mean_sq_pos + (1.0 - r) * s_neg * mean_sq_neg) / beta  # (r L⁺ + (1 − r) L⁻) / β
    loss += kl_weight * tl.sum(sq_ref, axis=0) * inv_n  # + λ mean((v_θ − v_ref)²)
    tl.store(loss_ptr + row, loss)


class LaunchConfig(NamedTuple):
    block: int  # elements per chunk (lanes of a program)
    chunks: int  # chunks per program
    num_warps: int


def launch_config(batch: int, num_elements: int, device: torch.device) -> LaunchConfig:
    """Block, chunks per program and warps for ``batch`` samples of ``num_elements`` elements on ``device``."""
    if interpreting():
        block = min(INTERPRET_BLOCK, triton.next_power_of_2(num_elements))
        return LaunchConfig(block, min(MAX_CHUNKS, triton.cdiv(num_elements, block)), 1)
    programs_per_sample = triton.cdiv(min_programs(device, PROGRAMS_PER_SM), batch)
    chunks = triton.cdiv(num_elements, GPU_BLOCK * programs_per_sample)
    return LaunchConfig(GPU_BLOCK, max(1, min(MAX_CHUNKS, chunks)), GPU_NUM_WARPS)


def _launch_pass(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_target: torch.Tensor,
    v_ref: torch.Tensor | None,
    r: torch.Tensor,
    scales: torch.Tensor | None,
    grad_loss: torch.Tensor | None,
    beta: float,
    kl_weight: float,
    *,
    write_sums: bool,
    write_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    batch, num_elements = v_theta.shape
    config = launch_config(batch, num_elements, v_theta.device)
    per_program = config.block * config.chunks
    num_partials = triton.cdiv(num_elements, per_program)
    f32 = dict(dtype=torch.float32, device=v_theta.device)
    partials = torch.empty((batch, num_partials, NUM_SUMS), **f32) if write_sums else None
    grad = torch.empty_like(v_theta) if write_grad else None
    placeholder = r  # any tensor: pointers behind false flags are never read or written
    record_launch(_nft_pass_kernel)
    _nft_pass_kernel[(num_partials, batch)](
        v_theta, v_old, v_target, placeholder if v_ref is None else v_ref, r,
        placeholder if scales is None else scales,
        placeholder if grad_loss is None else grad_loss,
        placeholder if grad is None else grad,
        placeholder if partials is None else partials,
        num_elements, per_program, config.chunks, beta, kl_weight,
        HAS_REF=v_ref is not None, ADAPTIVE=scales is not None, HAS_GRAD_OUT=grad_loss is not None,
        WRITE_SUMS=write_sums, WRITE_GRAD=write_grad, IS_BFLOAT16=v_theta.dtype == torch.bfloat16,
        BLOCK=config.block, num_warps=config.num_warps,
    )
    return partials, grad


def _check_offsets(v_theta: torch.Tensor) -> None:
    if v_theta.shape[1] >= 2**31:
        raise ValueError(
            f"{v_theta.shape[1]} elements per sample is too many for 32-bit offsets; split each sample into "
            "samples of fewer elements only if the loss allows it (the mean runs over the whole sample)"
        )


@torch.library.custom_op("spc_fast::nft_loss_forward", mutates_args=())
def nft_loss_forward(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_target: torch.Tensor,
    v_ref: torch.Tensor | None,
    t: torch.Tensor,
    r: torch.Tensor,
    beta: float,
    kl_weight: float,
    adaptive: bool,
    fuse_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss [B], s± [B, 2], gradient for dLoss/dloss = 1 [B, N] or empty) of validated [B, N] inputs.

    t, r: float32 [B]. The gradient is written only when ``fuse_grad`` (plain form): the adaptive gradient
    needs the finished sums and comes from ``nft_loss_backward``.
    """
    _check_offsets(v_theta)
    batch, num_elements = v_theta.shape
    fuse_grad = fuse_grad and not adaptive
    partials, grad = _launch_pass(
        v_theta, v_old, v_target, v_ref, r, None, None, beta, kl_weight, write_sums=True, write_grad=fuse_grad
    )
    loss = torch.empty(batch, dtype=torch.float32, device=v_theta.device)
    scales = torch.empty((batch, 2), dtype=torch.float32, device=v_theta.device)
    record_launch(_nft_finalize_kernel)
    _nft_finalize_kernel[(batch,)](
        partials, t, r, loss, scales, partials.shape[1], num_elements, beta, kl_weight,
        ADAPTIVE=adaptive, BLOCK=FINALIZE_BLOCK, num_warps=4,
    )
    return loss, scales, v_theta.new_empty(0) if grad is None else grad


@nft_loss_forward.register_fake
def _(v_theta, v_old, v_target, v_ref, t, r, beta, kl_weight, adaptive, fuse_grad):
    batch = v_theta.shape[0]
    grad = v_theta.new_empty(v_theta.shape if fuse_grad and not adaptive else (0,))
    f32 = dict(dtype=torch.float32)
    return v_theta.new_empty((batch,), **f32), v_theta.new_empty((batch, 2), **f32), grad


@torch.library.custom_op("spc_fast::nft_loss_backward", mutates_args=())
def nft_loss_backward(
    grad_loss: torch.Tensor,
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    v_target: torch.Tensor,
    v_ref: torch.Tensor | None,
    r: torch.Tensor,
    scales: torch.Tensor,
    beta: float,
    kl_weight: float,
    adaptive: bool,
) -> torch.Tensor:
    """∂Loss/∂v_θ [B, N] for dLoss/dloss = ``grad_loss`` [B] (float32), given the s± of the forward pass."""
    _check_offsets(v_theta)
    _, grad = _launch_pass(
        v_theta, v_old, v_target, v_ref, r, scales if adaptive else None, grad_loss, beta, kl_weight,
        write_sums=False, write_grad=True,
    )
    return grad


@nft_loss_backward.register_fake
def _(grad_loss, v_theta, v_old, v_target, v_ref, r, scales, beta, kl_weight, adaptive):
    return torch.empty_like(v_theta)


class NFTLossFunction(torch.autograd.Function):
    """The per-sample loss of flattened [B, N] inputs, differentiable with respect to v_θ only."""

    @staticmethod
    def forward(ctx, v_theta, v_old, v_target, v_ref, t, r, beta, kl_weight, adaptive, grad_enabled):
        # forward always runs without grad mode: whether backward can follow is ``grad_enabled``, from the caller
        fuse_grad = not adaptive and grad_enabled and ctx.needs_input_grad[0]
        loss, scales, grad = nft_loss_forward(
            v_theta, v_old, v_target, v_ref, t, r, beta, kl_weight, adaptive, fuse_grad
        )
        ctx.fused, ctx.beta, ctx.kl_weight, ctx.adaptive = fuse_grad, beta, kl_weight, adaptive
        if fuse_grad:
            ctx.save_for_backward(grad)
        else:
            ctx.save_for_backward(v_theta, v_old, v_target, v_ref, r, scales)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        grad_loss = grad_loss.float().contiguous()
        if ctx.fused:
            (grad,) = ctx.saved_tensors
            # the kernel rounded the gradient for dLoss/dloss = 1 into its dtype; scaling rounds it once more
            # (exact for power-of-two factors such as the 1/B of a mean over a power-of-two batch)
            scaled = torch.mul(grad, grad_loss[:, None], out=torch.empty_like(grad))
        else:
            v_theta, v_old, v_target, v_ref, r, scales = ctx.saved_tensors
            scaled = nft_loss_backward(
                grad_loss, v_theta, v_old, v_target, v_ref, r, scales, ctx.beta, ctx.kl_weight, ctx.adaptive
            )
        return scaled, *([None] * 9)
