"""Model FLOPs of a training step, for MFU: the matmuls of the trained model, counted the way torchtitan counts
them, and stated here so the numbers can be checked.

- A weight of N parameters applied to n tokens costs 2·N·n in the forward pass, another 2·N·n for the gradient of
  its input when gradients flow through it (every layer at or after the first trained one), another 2·N·n for its
  own gradient when it is trained (LoRA: the base weights are frozen, their weight gradients are not computed; the
  adapters' own cost, r/width of the layer's, is left out). Full fine-tuning is the familiar 6·N·n.
- Attention over a sequence of S positions costs 4·S²·width per layer forward (Q·Kᵀ and the weighted sum of V,
  the causal mask not discounted, as in torchtitan) and twice that backward.
- Not counted: the frozen models a stage calls besides the trained one (the VAE, the critic that gives H_c), norms,
  activations, embeddings lookups and the per-sample modulation of the DiT.
"""

from __future__ import annotations

import torch


def linear_parameters(module: torch.nn.Module, keep=lambda name: True) -> int:
    """Parameters of the ``torch.nn.Linear`` weights (biases included) under ``module`` whose name passes ``keep``:
    LoRA's A and B are left out, their base layers counted."""
    total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and ".lora_" not in f".{name}" and keep(name):
            total += sub.weight.numel() + (sub.bias.numel() if sub.bias is not None else 0)
    return total


def matmul_flops(parameters: int, tokens: float, *, input_grad: bool, weight_grad: bool) -> float:
    """2·N·n forward, plus 2·N·n per gradient computed (of the input, of the weight)."""
    return 2.0 * parameters * tokens * (1 + int(input_grad) + int(weight_grad))


def attention_flops(layers: int, sequence: float, width: int, *, backward: bool) -> float:
    """4·S²·width per layer forward, three times that with the backward pass."""
    return 4.0 * layers * sequence**2 * width * (3 if backward else 1)


def dit_streams(transformer: torch.nn.Module) -> tuple[int, int, int, int]:
    """(image-stream, text-stream, attention width, layers) of a Qwen-Image DiT: its blocks' linear parameters split
    into those that act on image tokens and those on text tokens (the ``txt_``/``add_`` projections), the modulation
    left out (one token per sample), plus the input and output projections of each stream."""

    def text(name: str) -> bool:
        return "txt_" in name or ".add_" in f".{name}" or "to_add_out" in name

    blocks = transformer.transformer_blocks
    image = linear_parameters(blocks, lambda n: "_mod" not in n and not text(n))
    image += linear_parameters(transformer.img_in) + linear_parameters(transformer.proj_out)
    words = linear_parameters(blocks, lambda n: "_mod" not in n and text(n)) + linear_parameters(transformer.txt_in)
    config = transformer.config
    return image, words, config.num_attention_heads * config.attention_head_dim, len(blocks)
