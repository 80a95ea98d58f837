"""The public release's feed-forward activation for the Qwen-Image DiT (SPEC.md §6).

The release runs its DiT through DiffSynth's implementation: the same weight names and shapes as diffusers', but its
feed-forwards apply `x · σ(1.702 x)` (the sigmoid approximation of GELU) where diffusers, like Qwen's own model,
apply tanh-GELU. With identical weights the two DiTs differ by about 5e-3 relative after two layers (float32), so
reproducing the release's outputs needs the release's activation. tanh-GELU stays the default; `use_release_mlp`
switches a loaded `QwenImageTransformer2DModel` in place, as `use_real_rope` switches its RoPE:

- every feed-forward's first layer (`img_mlp.net.0`, `txt_mlp.net.0` of each block: diffusers' `GELU` module, a
  linear projection then tanh-GELU) -> `SigmoidGELU` holding the same projection, so the state_dict keeps its keys
  (`*.net.0.proj.weight`) and a LoRA on that projection stays where it is.

The new activation is plain tensor arithmetic: it traces under `torch.compile(fullgraph=True)` and export.
"""

from __future__ import annotations

import torch
from diffusers.models.activations import GELU
from diffusers.models.attention import FeedForward
from torch import nn

RELEASE_GELU_SCALE = 1.702  # σ(1.702 x) approximates Φ(x), the Gaussian CDF in GELU's x · Φ(x)


class SigmoidGELU(nn.Module):
    """A feed-forward's input projection followed by `x · σ(1.702 x)`, DiffSynth's activation for Qwen-Image."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(x)
        return hidden * torch.sigmoid(RELEASE_GELU_SCALE * hidden)


def _feed_forwards(transformer: nn.Module) -> list[tuple[str, FeedForward]]:
    return [(name, module) for name, module in transformer.named_modules() if isinstance(module, FeedForward)]


def uses_release_mlp(transformer: nn.Module) -> bool:
    """Whether every feed-forward of ``transformer`` applies the release's `x · σ(1.702 x)`."""
    feed_forwards = _feed_forwards(transformer)
    return bool(feed_forwards) and all(isinstance(ff.net[0], SigmoidGELU) for _, ff in feed_forwards)


def use_release_mlp(transformer: nn.Module) -> nn.Module:
    """Give every feed-forward of a Qwen-Image DiT the release's activation `x · σ(1.702 x)` in place (projection
    weights, LoRA layers and state_dict keys untouched); returns it. Calling it again changes nothing.

    Takes a ``QwenImageTransformer2DModel``, also with peft adapters or inside a peft model; switch before
    ``torch.compile`` (a compiled graph keeps the activation it was traced with).
    """
    feed_forwards = _feed_forwards(transformer)
    if not feed_forwards:
        raise ValueError(
            f"use_release_mlp found no feed-forward (diffusers FeedForward) in {type(transformer).__name__}; pass the "
            "Qwen-Image DiT (diffusers QwenImageTransformer2DModel), not the artist or a compiled wrapper of another "
            "model"
        )
    for name, ff in feed_forwards:
        activation = ff.net[0]
        if isinstance(activation, SigmoidGELU):
            continue
        if not (isinstance(activation, GELU) and activation.approximate == "tanh"):
            raise ValueError(
                f"{name}.net.0 is {type(activation).__name__}"
                f"{f'(approximate={activation.approximate!r})' if isinstance(activation, GELU) else ''}, not the "
                "tanh-GELU of Qwen-Image's feed-forwards: use_release_mlp replaces that activation only"
            )
        release = SigmoidGELU(activation.proj)
        release.train(activation.training)
        ff.net[0] = release
    return transformer
