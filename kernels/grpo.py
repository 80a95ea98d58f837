"""Fused GRPO token loss (SPEC.md §7) without the full (tokens × vocabulary) logits.

Tokens are taken in chunks of C: logits [C, V] = h W^T (a cuBLAS GEMM in the hidden states' dtype), then one
program per token row streams its logits twice — an online log-sum-exp, then ∂Loss/∂z written over the logits
in place — and the chunk's gradients follow as GEMMs: ∂h = ∂z W, ∂W += ∂z^T h. Peak memory is O(C × V) beside
the inputs and their gradients, instead of the several (B·T × V) float32 tensors of the eager loss.

Per token, with logp = z_id / T − logsumexp(z / T), ρ = exp(logp − logp_old) and A the sequence's advantage:
    ℓ = −min(ρ A, clip(ρ, 1 − ε, 1 + ε) A) + β_kl (exp(ref − logp) − (ref − logp) − 1)
    ∂ℓ/∂logp = −ρ A where the min picks ρ A (ties included: torch splits them evenly between two equal
               branches, which sum to −ρ A), 0 where the clipped term holds it constant; + β_kl (1 − exp(ref − logp))
    ∂logp/∂z_j = (1[j = id] − softmax(z / T)_j) / T
The loss is Σ w ℓ with w = mask / (max(Σ_t mask, 1) · B): the per-sequence masked mean, then the mean over
sequences (TRL's ``loss_type="grpo"``). Tokens of weight 0 contribute exactly 0 to the loss and the gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from spc_fast.kernels.dispatch import interpreting, record_launch
from spc_fast.kernels.tl_colour import round_to_bfloat16

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

# One program per token row: 4096 logits per tile over 8 warps (16 per thread, two 16-byte bf16 loads).
GPU_BLOCK_V = 4096
GPU_NUM_WARPS = 8
INTERPRET_BLOCK_V = 1 << 13
# Logits of one chunk: ~256 MiB, e.g. 768 tokens of a 152064-word vocabulary in bf16.
CHUNK_BYTES = 256 * 2**20


@triton.jit
def _grpo_rows_kernel(
    logits_ptr,  # [C, V] logits (any float dtype), row stride stride_logits
    grad_ptr,  # [C, V] ∂Loss/∂logits, row stride stride_grad; may alias logits_ptr (written only when WRITE_GRAD)
    ids_ptr,  # [C] integer completion token ids
    adv_ptr,  # [C] f32 advantage of each token's sequence
    weight_ptr,  # [C] f32 w = mask / (max(Σ_t mask, 1) B)
    old_ptr,  # [C] f32 log-probs of the sampling policy (read only when HAS_OLD)
    ref_ptr,  # [C] f32 log-probs of the reference policy (read only when HAS_REF)
    loss_ptr,  # [C] f32 per-token loss ℓ, 0 where w = 0
    logp_ptr,  # [C] f32 per-token log-prob
    vocab,
    stride_logits,
    stride_grad,
    inv_temperature,
    clip_low,  # 1 − ε
    clip_high,  # 1 + ε
    beta_kl,
    HAS_OLD: tl.constexpr,
    HAS_REF: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    IS_BFLOAT16: tl.constexpr,  # gradient dtype bf16 (rounded explicitly: the interpreter's cast truncates)
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    logits_row = logits_ptr + row * stride_logits
    cols = tl.arange(0, BLOCK_V)
    scale = inv_temperature * LOG2E  # base-2 logits: 2^(z log2(e) / T) = e^(z / T)

    m = float("-inf")  # running max and Σ 2^(z − m) of the base-2 logits
    s = 0.0
    for start in range(0, vocab, BLOCK_V):
        mask = start + cols < vocab  # the first lane of every tile is valid, so m stays finite
        z = tl.load(logits_row + start + cols, mask=mask, other=float("-inf")).to(tl.float32) * scale
        m_new = tl.maximum(m, tl.max(z, axis=0))
        s = s * tl.exp2(m - m_new) + tl.sum(tl.exp2(z - m_new), axis=0)
        m = m_new
    lse2 = m + tl.log2(s)  # log2 Σ_j e^(z_j / T)

    target = tl.load(ids_ptr + row)
    valid = (target >= 0) & (target < vocab)  # an out-of-range id gives NaN, never an out-of-bounds read
    z_target = tl.load(logits_row + target, mask=valid, other=float("nan")).to(tl.float32)
    logp = z_target * inv_temperature - lse2 * LN2  # log softmax(z / T)[id]

    old = tl.load(old_ptr + row) if HAS_OLD else logp  # without old log-probs: ρ = 1, with gradient
    ratio = tl.exp2((logp - old) * LOG2E)  # ρ = exp(logp − logp_old)
    adv = tl.load(adv_ptr + row)
    unclipped = ratio * adv
    clipped = tl.minimum(tl.maximum(ratio, clip_low), clip_high) * adv
    loss = -tl.minimum(unclipped, clipped)
    dlogp = tl.where(unclipped <= clipped, -unclipped, 0.0)  # ∂ℓ/∂logp of the surrogate
    if HAS_REF:
        diff = tl.load(ref_ptr + row) - logp  # ref − logp
        ref_ratio = tl.exp2(diff * LOG2E)
        loss += beta_kl * (ref_ratio - diff - 1.0)  # k3 estimate of KL(π ‖ π_ref)
        dlogp += beta_kl * (1.0 - ref_ratio)

    weight = tl.load(weight_ptr + row)
    live = weight != 0.0
    tl.store(loss_ptr + row, tl.where(live, loss, 0.0))
    tl.store(logp_ptr + row, logp)

    if WRITE_GRAD:
        grad_row = grad_ptr + row * stride_grad
        coef = tl.where(live, weight * dlogp, 0.0) * inv_temperature
        for start in range(0, vocab, BLOCK_V):
            c = start + cols
            mask = c < vocab
            z = tl.load(logits_row + c, mask=mask, other=0.0).to(tl.float32) * scale
            p = tl.exp2(z - lse2)  # softmax(z / T)_j
            grad = coef * (tl.where(c == target, 1.0, 0.0) - p)  # ∂Loss/∂z_j = w ℓ' (1[j = id] − p_j) / T
            if IS_BFLOAT16:
                grad = round_to_bfloat16(grad)
            tl.store(grad_row + c, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def block_v(vocab: int) -> int:
    if interpreting():
        return min(INTERPRET_BLOCK_V, triton.next_power_of_2(vocab))
    return min(GPU_BLOCK_V, triton.next_power_of_2(vocab))


def default_chunk_tokens(num_tokens: int, vocab: int, itemsize: int) -> int:
    """Tokens per chunk: the chunk's logits fit CHUNK_BYTES (a multiple of 128 tokens when that many fit)."""
    chunk = max(1, CHUNK_BYTES // (vocab * itemsize))
    if chunk >= 128:
        chunk -= chunk % 128
    return min(num_tokens, chunk)


def launch_rows(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    ids: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    loss: torch.Tensor,
    logp: torch.Tensor,
    epsilon: float,
    beta_kl: float,
    temperature: float,
) -> None:
    """Per-token loss and log-prob of ``logits`` [C, V] (rows of stride ≥ V, unit column stride) into
    ``loss`` and ``logp`` [C]; ∂Loss/∂logits into ``grad`` (which may be ``logits`` itself) unless None."""
    rows, vocab = logits.shape
    if rows == 0:
        return
    record_launch(_grpo_rows_kernel)
    _grpo_rows_kernel[(rows,)](
        logits,
        logits if grad is None else grad,
        ids,
        advantages,
        weights,
        weights if old_logp is None else old_logp,
        weights if ref_logp is None else ref_logp,
        loss,
        logp,
        vocab,
        logits.stride(0),
        logits.stride(0) if grad is None else grad.stride(0),
        1.0 / temperature,
        1.0 - epsilon,
        1.0 + epsilon,
        beta_kl,
        HAS_OLD=old_logp is not None,
        HAS_REF=ref_logp is not None,
        WRITE_GRAD=grad is not None,
        IS_BFLOAT16=grad is not None and grad.dtype == torch.bfloat16,
        BLOCK_V=block_v(vocab),
        num_warps=1 if interpreting() else GPU_NUM_WARPS,
    )


@torch.library.custom_op("spc_fast::grpo_fused_linear", mutates_args=())
def grpo_fused_linear(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    ids: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    epsilon: float,
    beta_kl: float,
    temperature: float,
    chunk_tokens: int,
    grad_hidden: bool,
    grad_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss [N], logp [N], ∂Loss/∂hidden [N, H] or empty, ∂Loss/∂weight [V, H] or empty) for hidden [N, H],
    LM head weight [V, H] of the same dtype and per-token ids, advantages, weights, old/ref log-probs [N]."""
    num_tokens = hidden.shape[0]
    f32 = dict(dtype=torch.float32, device=hidden.device)
    loss = torch.empty(num_tokens, **f32)
    logp = torch.empty(num_tokens, **f32)
    d_hidden = torch.empty_like(hidden) if grad_hidden else hidden.new_empty(0)
    d_weight = torch.zeros_like(weight) if grad_weight else weight.new_empty(0)
    write_grad = grad_hidden or grad_weight
    # the entry casts the inputs to autocast's dtype; inside, every product stays in it
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, num_tokens, chunk_tokens):
            end = min(num_tokens, start + chunk_tokens)
            h = hidden[start:end]  # [C, H]
            logits = h @ weight.T  # [C, V]; overwritten by ∂Loss/∂logits
            pick = slice(start, end)
            launch_rows(
                logits,
                logits if write_grad else None,
                ids[pick],
                advantages[pick],
                weights[pick],
                None if old_logp is None else old_logp[pick],
                None if ref_logp is None else ref_logp[pick],
                loss[pick],
                logp[pick],
                epsilon,
                beta_kl,
                temperature,
            )
            if grad_hidden:
                torch.mm(logits, weight, out=d_hidden[pick])  # [C, V] @ [V, H]
            if grad_weight:
                d_weight.addmm_(logits.T, h)  # [V, C] @ [C, H], accumulated in the weight's dtype
            del logits  # else the next chunk's logits are allocated while these still live: two chunks at the peak
    return loss, logp, d_hidden, d_weight


@grpo_fused_linear.register_fake
def _(hidden, weight, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature, chunk_tokens,
      grad_hidden, grad_weight):
    num_tokens = hidden.shape[0]
    loss = hidden.new_empty((num_tokens,), dtype=torch.float32)
    d_hidden = hidden.new_empty(hidden.shape if grad_hidden else (0,))
    d_weight = weight.new_empty(weight.shape if grad_weight else (0,))
    return loss, torch.empty_like(loss), d_hidden, d_weight


@torch.library.custom_op("spc_fast::grpo_logits", mutates_args=())
def grpo_logits(
    logits: torch.Tensor,
    ids: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    old_logp: torch.Tensor | None,
    ref_logp: torch.Tensor | None,
    epsilon: float,
    beta_kl: float,
    temperature: float,
    write_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss [N], logp [N], ∂Loss/∂logits [N, V] or empty) of logits [N, V] with unit column stride."""
    num_tokens = logits.shape[0]
    f32 = dict(dtype=torch.float32, device=logits.device)
    loss = torch.empty(num_tokens, **f32)
    logp = torch.empty(num_tokens, **f32)
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if write_grad else logits.new_empty(0)
    launch_rows(
        logits, grad if write_grad else None, ids, advantages, weights, old_logp, ref_logp, loss, logp,
        epsilon, beta_kl, temperature,
    )
    return loss, logp, grad


@grpo_logits.register_fake
def _(logits, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature, write_grad):
    loss = logits.new_empty((logits.shape[0],), dtype=torch.float32)
    grad = logits.new_empty(logits.shape if write_grad else (0,))
    return loss, torch.empty_like(loss), grad


class FusedLinearGRPOFunction(torch.autograd.Function):
    """Scalar GRPO loss of hidden [N, H] and LM head [V, H]; gradients computed chunk by chunk in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature,
                chunk_tokens, grad_enabled):
        # forward always runs without grad mode: whether backward can follow is ``grad_enabled``, from the caller
        grad_hidden = grad_enabled and ctx.needs_input_grad[0]
        grad_weight = grad_enabled and ctx.needs_input_grad[1]
        loss, _, d_hidden, d_weight = grpo_fused_linear(
            hidden, weight, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature,
            chunk_tokens, grad_hidden, grad_weight,
        )
        ctx.save_for_backward(d_hidden, d_weight)
        ctx.grads = grad_hidden, grad_weight
        return (loss * weights).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        d_hidden, d_weight = ctx.saved_tensors
        grad_hidden, grad_weight = ctx.grads
        return (
            d_hidden * grad_loss if grad_hidden else None,
            d_weight * grad_loss if grad_weight else None,
            *([None] * 10),
        )


class LogitsGRPOFunction(torch.autograd.Function):
    """Scalar GRPO loss of logits [N, V]; the logits' gradient computed in forward."""

    @staticmethod
    def forward(ctx, logits, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature,
                grad_enabled):
        write_grad = grad_enabled and ctx.needs_input_grad[0]
        loss, _, grad = grpo_logits(
            logits, ids, advantages, weights, old_logp, ref_logp, epsilon, beta_kl, temperature, write_grad
        )
        ctx.save_for_backward(grad)
        return (loss * weights).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss, *([None] * 9)
