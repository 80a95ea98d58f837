"""One forward of the artist's DiT (Qwen-Image-Edit MMDiT) at one megapixel: diffusers' own model in eager mode
against ours (real-valued RoPE) in eager mode, compiled, and under each attention backend that can run.

CUDA: the release width (24 heads x 128, joint dim 3584) with ``CUDA_LAYERS`` layers and random bf16 weights (cost
is per layer and does not depend on weight values); 1024² output = 64 x 64 latent patches, so 4096 noisy + 4096
source image tokens, and 1024 H_c tokens. CPU: the tiny model (float32) at 256² (256 + 256 tokens, 64 H_c tokens).
FLOPs (the GEMMs and attention, ``dit_step_flops`` from the config and token counts; a test keeps it equal to torch's
FlopCounterMode) are reported against the dense matmul throughput measured in the same run
(``harness.matmul_peak``); per-layer figures divide the transformer blocks' share of the FLOPs and time by the layer
count. Each row also carries its FLOPs and the least bytes a forward moves (weights once, inputs and output), the
roofline's coordinates.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch

from spc_fast import attention
from spc_fast.artist.rope import use_real_rope
from spc_fast.bench.harness import Row, matmul_peak, measure
from spc_fast.models import qwen_image

BASELINES = ("diffusers eager",)
ERROR_KIND = "max |v - v_diffusers| / max |v_diffusers| (the velocity of diffusers' eager model)"
CUDA_LAYERS = 4
TEXT_TOKENS = {"cuda": 1024, "cpu": 64}


def build(device: torch.device, quick: bool) -> tuple[torch.nn.Module, str, int]:
    """(diffusers' DiT, description, output side in pixels) for this device."""
    if device.type == "cuda" and not quick:
        model = qwen_image.build_dit(CUDA_LAYERS, torch.bfloat16, device)
        return model, f"release width, {CUDA_LAYERS} layers", 1024
    model, _, _ = qwen_image.tiny_artist_components(0)
    return model.to(device), "tiny", 128 if quick else 256


def inputs(model, side: int, text_tokens: int, device: torch.device, batch: int = 1) -> dict:
    """DiT keyword arguments for a ``side``² edit: noisy + source tokens, H_c, timestep, image shapes."""
    g = torch.Generator(device=device).manual_seed(0)
    patches = side // 16
    dtype = model.dtype
    width = model.config.joint_attention_dim
    return dict(
        hidden_states=torch.randn(batch, 2 * patches * patches, 64, generator=g, device=device).to(dtype),
        encoder_hidden_states=torch.randn(batch, text_tokens, width, generator=g, device=device).to(dtype),
        encoder_hidden_states_mask=None,
        timestep=torch.full((batch,), 0.6, device=device, dtype=dtype),
        img_shapes=[[(1, patches, patches), (1, patches, patches)]] * batch,
        return_dict=False,
    )


def dit_step_flops(config: Mapping, batch: int, image_tokens: int, text_tokens: int) -> tuple[int, int]:
    """(total FLOPs, FLOPs inside the transformer blocks) of one DiT forward: every linear layer (2 per
    multiply-add) and attention's two batched products over the joint sequence; norms, RoPE and activations are
    not counted. ``image_tokens`` is noisy plus source tokens; ``config`` is the DiT's (``model.config``)."""
    width = config["num_attention_heads"] * config["attention_head_dim"]
    patch_out = config["patch_size"] ** 2 * config["out_channels"]
    tokens = image_tokens + text_tokens
    embed = image_tokens * config["in_channels"] * width + text_tokens * config["joint_attention_dim"] * width
    embed += 256 * width + width * width  # the timestep MLP (sinusoid of 256 channels), once per sample
    # per token: q, k, v and output projections (4 D²) and the 4x MLP (8 D²); per sample: the two 6 D modulations
    block = tokens * 12 * width * width + 2 * width * 6 * width
    attention = 2 * tokens * tokens * width  # QKᵀ and PV
    head = width * 2 * width + image_tokens * width * patch_out  # the output norm's modulation, proj_out
    blocks = 2 * batch * config["num_layers"] * (block + attention)
    return 2 * batch * (embed + head) + blocks, blocks


def least_bytes(model: torch.nn.Module, tensors: Iterable[torch.Tensor]) -> int:
    """The bytes a forward cannot avoid moving: every weight read once, plus ``tensors`` (its inputs and output)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights + sum(t.numel() * t.element_size() for t in tensors)


def providers(model, device: torch.device, quick: bool) -> dict[str, torch.nn.Module]:
    """Name -> callable module: diffusers' eager DiT (pinned to SDPA), then ours per backend, eager and compiled."""
    attention.set_dit_attention(model, "sdpa")
    out = {"diffusers eager": model}
    for backend in attention.runnable(device, model.dtype):
        ours = use_real_rope(copy.deepcopy(model))
        attention.set_dit_attention(ours, backend)
        out[f"spc-fast eager {backend}"] = ours
        if not quick:
            out[f"spc-fast compile {backend}"] = torch.compile(ours, fullgraph=True)
    return out


def run(device: torch.device, quick: bool = False) -> list[Row]:
    model, what, side = build(device, quick)
    text = TEXT_TOKENS[device.type] // (4 if quick else 1)
    kwargs = inputs(model, side, text, device)
    tokens = kwargs["hidden_states"].shape[1]
    flops, block_flops = dit_step_flops(model.config, 1, tokens, text)
    layers = model.config.num_layers
    peak = matmul_peak(device, model.dtype)
    dtype = str(model.dtype).removeprefix("torch.")
    case = f"{what} {side}² {tokens}+{text} tok {dtype}"
    rows = []
    with torch.no_grad():
        reference = model(**kwargs)[0].float()
        scale = float(reference.abs().max())
        # the velocity comes out in the shape and dtype of hidden_states
        tensors = [kwargs["hidden_states"], kwargs["encoder_hidden_states"], kwargs["timestep"]]
        nbytes = least_bytes(model, [*tensors, kwargs["hidden_states"]])
        for name, fn in providers(model, device, quick).items():
            out = fn(**kwargs)[0].float()  # the first call also compiles
            p20, p50, p80 = measure(lambda fn=fn: fn(**kwargs), device, budget_s=2.0 if quick else 4.0)
            tflops = flops / (p50 * 1e-3) / 1e12
            per_layer = p50 * (block_flops / flops) / layers
            rows.append(
                Row(
                    bench="artist_step",
                    case=case,
                    provider=name,
                    p20_ms=p20,
                    p50_ms=p50,
                    p80_ms=p80,
                    max_error=float((out - reference).abs().max()) / scale,
                    flops=flops,
                    bytes_moved=nbytes,
                    note=f"{tflops:.3g} TFLOP/s = {tflops / peak:.0%} of the measured {dtype} matmul peak "
                    f"({peak:.3g}); {per_layer:.3g} ms/layer; {flops / 1e12:.3g} TFLOP/forward",
                )
            )
    return rows
