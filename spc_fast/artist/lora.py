"""Named peft LoRA adapters on the Qwen-Image DiT (the release config, SPEC.md §6).

Several adapters live on one model (the NFT trainer keeps a trainable one and an "old" one); `set_adapter` picks the
active one, and `PhotoArtist.velocity(..., adapter=name)` runs another one for a single prediction
(`spc_fast.adapters`). peft's "gaussian" init draws A from N(0, 1/r) and zeroes B, so a fresh adapter leaves outputs
unchanged.
"""

from __future__ import annotations

from diffusers import QwenImageTransformer2DModel
from peft import LoraConfig

from spc_fast.adapters import adapter_names, tuner_layers

# SPEC.md §6: the release's DiT LoRA.
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj",
                                 "to_add_out")
LORA_RANK = 32
LORA_ALPHA = 64


def lora_config(rank: int = LORA_RANK, alpha: int = LORA_ALPHA) -> LoraConfig:
    """The release's DiT LoRA config (SPEC.md §6): r=32, alpha=64, gaussian init, the eight attention projections."""
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(LORA_TARGETS))


def add_lora(
    transformer: QwenImageTransformer2DModel, name: str = "default", *, rank: int = LORA_RANK, alpha: int = LORA_ALPHA
) -> QwenImageTransformer2DModel:
    """Add a named adapter with the release config (r=32, alpha=64, gaussian init, attention projections)."""
    if name in adapter_names(transformer):
        raise ValueError(f"adapter {name!r} already exists; pick another name or delete_adapters([{name!r}])")
    if hasattr(transformer, name):
        raise ValueError(
            f"adapter name {name!r} is an attribute of the model (peft registers adapters as "
            "submodules); pick another name"
        )
    transformer.add_adapter(lora_config(rank, alpha), adapter_name=name)
    return transformer


def set_adapter(transformer: QwenImageTransformer2DModel, name: str) -> None:
    """Make `name` the active adapter (peft makes it trainable and the others frozen)."""
    if name not in adapter_names(transformer):
        raise ValueError(f"no adapter {name!r}; the model has {adapter_names(transformer)}")
    transformer.set_adapter(name)


def merge_lora(transformer: QwenImageTransformer2DModel, name: str | None = None) -> None:
    """Fold adapter `name` (default: the active one) into the base weights for inference; `unmerge_lora` undoes it."""
    name = name or transformer.active_adapters()[0]
    set_adapter(transformer, name)
    for layer in tuner_layers(transformer):
        layer.merge(adapter_names=[name])


def unmerge_lora(transformer: QwenImageTransformer2DModel) -> None:
    """Take every merged adapter back out of the base weights."""
    for layer in tuner_layers(transformer):
        layer.unmerge()
