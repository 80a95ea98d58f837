"""Named peft LoRA adapters on the Qwen-Image DiT (the release config, SPEC.md §6).

Several adapters live on one model (the NFT trainer keeps a trainable one and an "old" one); `set_adapter` picks the
active one. peft's "gaussian" init draws A from N(0, 1/r) and zeroes B, so a fresh adapter leaves outputs unchanged.
"""

from __future__ import annotations

from diffusers import QwenImageTransformer2DModel
from peft.tuners.tuners_utils import BaseTunerLayer

from spc_fast.models.qwen_image import LORA_ALPHA, LORA_RANK, lora_config


def add_lora(
    transformer: QwenImageTransformer2DModel, name: str = "default", *, rank: int = LORA_RANK, alpha: int = LORA_ALPHA
) -> QwenImageTransformer2DModel:
    """Add a named adapter with the release config (r=32, alpha=64, gaussian init, attention projections)."""
    if name in getattr(transformer, "peft_config", {}):
        raise ValueError(f"adapter {name!r} already exists; pick another name or delete_adapters([{name!r}])")
    if hasattr(transformer, name):
        raise ValueError(
            f"adapter name {name!r} is an attribute of the model (peft registers adapters as "
            "submodules); pick another name"
        )
    transformer.add_adapter(lora_config(rank, alpha), adapter_name=name)
    return transformer


def set_adapter(transformer: QwenImageTransformer2DModel, name: str) -> None:
    """Make `name` the active adapter (its weights keep their requires_grad setting)."""
    if name not in getattr(transformer, "peft_config", {}):
        raise ValueError(f"no adapter {name!r}; the model has {list(getattr(transformer, 'peft_config', {}))}")
    transformer.set_adapter(name)


def _tuner_layers(transformer: QwenImageTransformer2DModel) -> list[BaseTunerLayer]:
    return [m for m in transformer.modules() if isinstance(m, BaseTunerLayer)]


def merge_lora(transformer: QwenImageTransformer2DModel, name: str | None = None) -> None:
    """Fold adapter `name` (default: the active one) into the base weights for inference; `unmerge_lora` undoes it."""
    name = name or transformer.active_adapters()[0]
    set_adapter(transformer, name)
    for layer in _tuner_layers(transformer):
        layer.merge(adapter_names=[name])


def unmerge_lora(transformer: QwenImageTransformer2DModel) -> None:
    """Take every merged adapter back out of the base weights."""
    for layer in _tuner_layers(transformer):
        layer.unmerge()
