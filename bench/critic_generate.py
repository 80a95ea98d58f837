"""Critic decoding: tokens/s of transformers' eager ``generate`` (dynamic cache) against our static-cache loop, and
on CUDA the same loop with the decode step compiled (``mode="reduce-overhead"``: CUDA graphs).

CPU: the tiny random-weight critic. CUDA: Qwen2.5-VL-7B at full width (hidden 3584, 28 heads, 4 KV heads) with a
stated number of text layers and random bf16 weights; decode cost is per layer and independent of the weights.
Prompts are text tokens (the vision tower runs once in prefill and is not what is measured); every provider
generates exactly ``new`` tokens (no stop), greedy.
"""

from __future__ import annotations

import torch

from spc_fast.bench.harness import Row, measure
from spc_fast.critic.generate import StaticGenerator
from spc_fast.models import qwen_vl
from spc_fast.models.factory import tiny_critic_corpus

BASELINES = ("transformers generate",)
ERROR_KIND = "fraction of generated tokens that differ from eager generate (greedy)"
CUDA_LAYERS = 4


def _model(device: torch.device, quick: bool):
    if device.type == "cuda" and not quick:
        config = qwen_vl.qwen2_5_vl_7b_config(num_layers=CUDA_LAYERS, vision_depth=1)
        config._attn_implementation = "sdpa"
        with torch.device(device):
            model = qwen_vl.Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
        return model.eval(), f"7B width, {CUDA_LAYERS} layers"
    model, _ = qwen_vl.build_tiny_critic(seed=0, corpus=tiny_critic_corpus())
    return model.to(device).eval(), "tiny"


def cases(device: torch.device, quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(2, 64, 16)]
    if device.type == "cuda":
        return [(1, 256, 128), (8, 256, 128)]
    return [(1, 128, 64), (4, 128, 64)]


def run(device: torch.device, quick: bool = False) -> list[Row]:
    model, what = _model(device, quick)
    # regular tokens only: a random special token (<|vision_start|>, <|image_pad|>) would make both sides look
    # for an image
    regular = model.config.text_config.bos_token_id  # <|endoftext|>, the first special token
    rows = []
    for batch, prompt, new in cases(device, quick):
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, regular, (batch, prompt), generator=g).to(device)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "mm_token_type_ids": torch.zeros_like(ids),
        }
        case = f"{what} B={batch} prompt={prompt} new={new} {str(model.dtype).removeprefix('torch.')}"

        def eager_generate(inputs=inputs, new=new):
            out = model.generate(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
            )
            return out[:, inputs["input_ids"].shape[1] :]

        providers = {"transformers generate": eager_generate}
        static = StaticGenerator(model, stop_ids=[], pad_id=0)
        providers["spc-fast static"] = lambda s=static, x=inputs, n=new: s(x, n).tokens
        if device.type == "cuda" and not quick:
            compiled = StaticGenerator(model, stop_ids=[], pad_id=0, compile=True, mode="reduce-overhead")
            providers["spc-fast static+compile"] = lambda s=compiled, x=inputs, n=new: s(x, n).tokens

        with torch.inference_mode():
            reference = eager_generate()
            for name, fn in providers.items():
                tokens = fn()
                p20, p50, p80 = measure(fn, device, budget_s=2.0 if quick else 6.0)
                mismatch = float((tokens != reference).float().mean())
                rate = batch * new / (p50 * 1e-3)
                rows.append(
                    Row(
                        bench="critic_generate",
                        case=case,
                        provider=name,
                        p20_ms=p20,
                        p50_ms=p50,
                        p80_ms=p80,
                        max_error=mismatch,
                        note=f"{rate:.1f} tokens/s (prefill included)",
                    )
                )
    return rows
