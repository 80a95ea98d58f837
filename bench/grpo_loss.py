"""GRPO loss of the critic, forward + backward to the final hidden states (the LM head stays frozen: the critic
trains LoRA adapters): eager torch, TRL's formula with its memory-lean log-softmax, Liger-Kernel's fused linear
GRPO when it is installed, and ours.

Sizes: on CUDA the real critic, G=8 completions x 1280 tokens x 3584 hidden x 152064 vocabulary in bf16; on the
CPU 2 x 256 x 512 x 32000 in float32 (quick: 2 x 64 x 64 x 4096, both devices). Interpreted Triton runs only in
quick runs. Peak memory is what the call allocates beyond its inputs: on CUDA torch.cuda.max_memory_allocated;
on the CPU the growth of the process's resident set, sampled every 0.5 ms from /proc/self/statm by a thread
(approximate: it can miss short peaks and counts allocator slack).
"""

from __future__ import annotations

import os
import threading
import time

import torch

from spc_fast.bench.harness import Row, measure
from spc_fast.kernels import dispatch, group_advantages, grpo_loss
from spc_fast.kernels.references import grpo_loss_reference, grpo_objective_reference

BASELINES = ("eager", "trl")
ERROR_KIND = "max(relative loss error, error of sequence 0's hidden-state gradient / its max) vs float64"
EPSILON, BETA_KL = 0.2, 0.04


def eager_loss(h, weight, ids, advantages, mask, old_logp, ref_logp):
    """Full logits, float32 log-softmax, TRL's formula: the straightforward torch loss."""
    return grpo_loss_reference(h @ weight.T, ids, advantages, mask, old_logp, ref_logp, epsilon=EPSILON,
                               beta_kl=BETA_KL, dtype=torch.float32)


def trl_style_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """TRL's memory-lean per-token log-probs: half-precision logits go one sequence at a time through
    log-softmax in their own dtype; float32 ones through gather − logsumexp."""
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        return picked - torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    rows = [torch.log_softmax(row, dim=-1).gather(-1, i.unsqueeze(-1)) for row, i in zip(logits, ids, strict=True)]
    return torch.stack(rows).squeeze(-1)


def trl_loss(h, weight, ids, advantages, mask, old_logp, ref_logp):
    logp = trl_style_logprobs(h @ weight.T, ids)
    return grpo_objective_reference(logp, advantages, mask, old_logp, ref_logp, epsilon=EPSILON, beta_kl=BETA_KL)


def ours(h, weight, ids, advantages, mask, old_logp, ref_logp):
    return grpo_loss(h, weight, ids, advantages, mask, old_logp, ref_logp, epsilon=EPSILON, beta_kl=BETA_KL)


def liger_loss_fn():
    """Liger-Kernel's chunked fused linear GRPO with TRL's per-sequence reduction, or None when not installed."""
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except ImportError:
        return None
    module = LigerFusedLinearGRPOLoss(beta=BETA_KL, epsilon_low=EPSILON, epsilon_high=EPSILON, loss_type="grpo",
                                      use_ref_model=True)

    def liger(h, weight, ids, advantages, mask, old_logp, ref_logp):
        loss, _ = module(h, weight, ids, mask, advantages, None, ref_logp, old_logp)
        return loss

    return liger


def make_inputs(groups: int, length: int, hidden: int, vocab: int, dtype: torch.dtype, device: torch.device) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(groups, length, hidden, generator=gen, device=device).to(dtype)
    weight = (torch.randn(vocab, hidden, generator=gen, device=device) / hidden**0.5).to(dtype)
    ids = torch.randint(0, vocab, (groups, length), generator=gen, device=device)
    lengths = torch.randint(length // 2, length + 1, (groups,), generator=gen, device=device)
    mask = torch.arange(length, device=device)[None, :] < lengths[:, None]
    typical = -torch.log(torch.tensor(float(vocab))) - 0.5  # logp of N(0, 1) logits
    old = typical + 0.3 * torch.randn(groups, length, generator=gen, device=device)
    ref = typical + 0.3 * torch.randn(groups, length, generator=gen, device=device)
    advantages = group_advantages(torch.rand(groups, generator=gen, device=device), groups)
    return dict(h=h, weight=weight, ids=ids, advantages=advantages, mask=mask, old_logp=old, ref_logp=ref)


def truth(inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 loss, sequence by sequence (the loss is their mean), and sequence 0's gradient of the hidden
    states, without ever holding every sequence's float64 logits."""
    groups = inputs["h"].shape[0]
    weight = inputs["weight"].double()
    per_sequence = []
    for b in range(groups):
        pick = {k: v[b : b + 1] for k, v in inputs.items() if k != "weight"}
        h = pick.pop("h").double().requires_grad_(b == 0)
        loss = grpo_loss_reference(h @ weight.T, pick["ids"], pick["advantages"], pick["mask"], pick["old_logp"],
                                   pick["ref_logp"], epsilon=EPSILON, beta_kl=BETA_KL)
        if b == 0:
            grad0 = torch.autograd.grad(loss, h)[0][0] / groups
        per_sequence.append(loss.detach())
    return torch.stack(per_sequence).mean(), grad0


def forward_backward(loss_fn, inputs: dict):
    h = inputs["h"].detach().requires_grad_()
    rest = {k: v for k, v in inputs.items() if k != "h"}

    def fn():
        loss = loss_fn(h, **rest)
        return loss, torch.autograd.grad(loss, h)[0]

    return fn


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device: torch.device):
    """(result of fn(), bytes allocated at the peak beyond what was allocated before the call)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - base
    base, peak, done = _resident_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(5e-4)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    return result, max(0, max(peak[0], _resident_bytes()) - base)


def cases(device: torch.device, quick: bool) -> list[tuple[tuple[int, int, int, int], torch.dtype]]:
    if quick:
        return [((2, 64, 64, 4096), torch.bfloat16 if device.type == "cuda" else torch.float32)]
    if device.type == "cuda":
        return [((8, 1280, 3584, 152064), torch.bfloat16)]
    return [((2, 256, 512, 32000), torch.float32)]


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    for (groups, length, hidden, vocab), dtype in cases(device, quick):
        inputs = make_inputs(groups, length, hidden, vocab, dtype, device)
        case = f"{groups}x{length}x{hidden}x{vocab} {str(dtype).removeprefix('torch.')}"
        true_loss, true_grad0 = truth(inputs)

        providers = {"eager": eager_loss, "trl": trl_loss}
        liger = liger_loss_fn() if device.type == "cuda" else None
        if liger is not None:
            providers["liger-kernel"] = liger
        if dispatch.use_triton(inputs["h"]) and (device.type == "cuda" or quick):
            providers[f"spc-fast {dispatch.backend_name(inputs['h'])}"] = ours

        for name, loss_fn in providers.items():
            fn = forward_backward(loss_fn, inputs)
            (loss, grad), peak = peak_memory(fn, device)
            err = max(abs(loss.double().item() - true_loss.item()) / abs(true_loss.item()),
                      ((grad[0].double() - true_grad0).abs().max() / true_grad0.abs().max()).item())
            p20, p50, p80 = measure(fn, device)
            del loss, grad
            rows.append(Row(
                bench="grpo_loss", case=case, provider=name, p20_ms=p20, p50_ms=p50, p80_ms=p80, max_error=err,
                peak_memory_mib=peak / 2**20, note=f"fwd+bwd to h; peak {peak / 2**20:.0f} MiB",
            ))
    return rows
