"""DiffusionNFT loss, forward + backward: the public training code's eager loss, its torch.compile, our kernel.

Shapes: the artist's latents, 16 channels at 1/8 of the image side. On CUDA (bf16) a batch of 8 one-megapixel
latents (8x16x128x128, 1024² images) and a GPU-bound batch of 64; on the CPU (float32) 4x16x64x64; quick runs
2x16x32x32 (CPU) or 2x16x64x64 (CUDA). Adaptive (official) and plain forms, no KL term (SPEC default).
Bytes moved: what the fused passes read and write (kernels/nft.py): 7 element accesses per element of v_θ for
the adaptive form, 6 for the plain one. The other providers make more passes than that, so no byte count is
claimed for them and their GB/s stays empty; compare them by time.
"""

from __future__ import annotations

import torch

from spc_fast.bench.harness import Row, measure
from spc_fast.kernels import dispatch, nft_loss, nft_loss_reference, optimality_from_advantage

BASELINES = ("diffusionnft-eager", "diffusionnft-eager+compile")
ERROR_KIND = "max(relative error of the per-sample loss, gradient error / max |gradient|) vs float64"
BETA = 0.1


def public_code_loss(v_theta, v_old, v_target, t, r, beta, adaptive):
    """The official loss as the training loop runs it: inputs at their precision, adaptive weights in float64."""
    return nft_loss_reference(v_theta, v_old, v_target, t, r, beta, adaptive, dtype=None)


def torch_path_loss(v_theta, v_old, v_target, t, r, beta, adaptive):
    with dispatch.torch_fallback():
        return nft_loss(v_theta, v_old, v_target, t, r, beta, adaptive)


def fused_bytes(numel: int, itemsize: int, adaptive: bool, kl: bool = False) -> int:
    """Bytes the fused passes move for ``numel`` elements per velocity field (forward + backward)."""
    accesses = (7 + 2 * kl) if adaptive else (6 + kl)
    return accesses * numel * itemsize


def make_inputs(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)
    batch = shape[0]
    v_old = torch.randn(shape, generator=gen, device=device)
    v_theta = v_old + 0.05 * torch.randn(shape, generator=gen, device=device)
    v_target = torch.randn(shape, generator=gen, device=device)
    t = torch.rand(batch, generator=gen, device=device) * 0.9 + 0.05
    r = optimality_from_advantage(torch.randn(batch, generator=gen, device=device) * 3)
    return dict(v_theta=v_theta.to(dtype), v_old=v_old.to(dtype), v_target=v_target.to(dtype), t=t, r=r)


def forward_backward(loss_fn, inputs: dict, adaptive: bool):
    """fn() -> (loss, ∂Σloss/∂v_θ) of ``loss_fn`` at ``inputs``."""
    v_theta = inputs["v_theta"].detach().requires_grad_()
    rest = {k: v for k, v in inputs.items() if k != "v_theta"}

    def fn():
        loss = loss_fn(v_theta, **rest, beta=BETA, adaptive=adaptive)
        return loss, torch.autograd.grad(loss.sum(), v_theta)[0]

    return fn


def error(result, truth) -> float:
    (loss, grad), (true_loss, true_grad) = result, truth
    loss_error = ((loss.double() - true_loss).abs() / true_loss.abs()).max().item()
    grad_error = ((grad.double() - true_grad).abs().max() / true_grad.abs().max()).item()
    return max(loss_error, grad_error)


def cases(device: torch.device, quick: bool) -> list[tuple[tuple[int, ...], torch.dtype, bool]]:
    if device.type == "cuda":
        shapes = [(2, 16, 64, 64)] if quick else [(8, 16, 128, 128), (64, 16, 128, 128)]
        dtype = torch.bfloat16
    else:
        shapes = [(2, 16, 32, 32)] if quick else [(4, 16, 64, 64)]
        dtype = torch.float32
    forms = (True,) if quick else (True, False)
    return [(shape, dtype, adaptive) for shape in shapes for adaptive in forms]


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    for shape, dtype, adaptive in cases(device, quick):
        inputs = make_inputs(shape, dtype, device)
        form = "adaptive" if adaptive else "plain"
        case = f"{'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')} {form}"
        truth = forward_backward(nft_loss_reference, {**inputs, "v_theta": inputs["v_theta"].double()}, adaptive)()

        providers = {"diffusionnft-eager": public_code_loss}
        if not quick:
            providers["diffusionnft-eager+compile"] = torch.compile(public_code_loss, dynamic=False)
        providers["spc-fast torch"] = torch_path_loss
        if dispatch.use_triton(inputs["v_theta"]):
            providers[f"spc-fast {dispatch.backend_name(inputs['v_theta'])}"] = nft_loss

        for name, loss_fn in providers.items():
            fn = forward_backward(loss_fn, inputs, adaptive)
            fused = name.startswith("spc-fast triton")
            v_theta = inputs["v_theta"]
            nbytes = fused_bytes(v_theta.numel(), v_theta.element_size(), adaptive) if fused else None
            p20, p50, p80 = measure(fn, device)
            rows.append(Row(
                bench="nft_loss", case=case, provider=name, p20_ms=p20, p50_ms=p50, p80_ms=p80, bytes_moved=nbytes,
                gb_per_s=None if nbytes is None else nbytes / p50 / 1e6, max_error=error(fn(), truth),
                note="forward + backward",
            ))
    return rows
