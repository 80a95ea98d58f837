"""peft LoRA adapters switched for one block of code, on any model that carries them (the critic's Qwen2.5-VL, the
artist's DiT): the RL trainers' reference policy is the model with its adapters disabled, and the artist's old policy
is a second adapter made active for one prediction.

Both switches leave every adapter's ``requires_grad`` as it was, inside the block and after it (peft's own switches
set it as a side effect: a frozen "old" adapter made active would otherwise start collecting gradients), and put the
active adapters and the enabled flag back on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTunerLayer


def tuner_layers(model: torch.nn.Module) -> list[BaseTunerLayer]:
    """The modules of ``model`` that hold adapters (empty for a model without any)."""
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(model: torch.nn.Module) -> list[str]:
    """The names of the adapters on ``model`` (diffusers, transformers and peft models keep them in ``peft_config``)."""
    return list(getattr(model, "peft_config", None) or {})


def _adapter_parameters(layer: BaseTunerLayer) -> list[torch.nn.Parameter]:
    return [p for name in layer.adapter_layer_names for p in getattr(layer, name, torch.nn.ModuleDict()).parameters()]


@contextmanager
def _switched(model: torch.nn.Module, switch: Callable[[BaseTunerLayer], None]) -> Iterator[None]:
    """``switch`` applied to every adapter layer inside the block, the adapters' requires_grad flags kept, and the
    active adapters and enabled flags put back on exit."""
    layers = tuner_layers(model)
    if any(layer.merged for layer in layers):
        raise ValueError(
            "the adapters are merged into the base weights (an inference load); switching them needs unmerged "
            "adapters: unmerge them first (spc_fast.artist.unmerge_lora, or peft's unmerge_adapter)"
        )
    states = [(layer, list(layer.active_adapters), layer.disable_adapters) for layer in layers]
    grads = [(p, p.requires_grad) for layer in layers for p in _adapter_parameters(layer)]
    try:
        for layer in layers:
            switch(layer)
        _restore_grads(grads)
        yield
    finally:
        for layer, active, disabled in states:
            layer.set_adapter(active)
            layer.enable_adapters(not disabled)
        _restore_grads(grads)


def _restore_grads(grads: list[tuple[torch.nn.Parameter, bool]]) -> None:
    for p, flag in grads:
        p.requires_grad_(flag)


def _enable_only(name: str) -> Callable[[BaseTunerLayer], None]:
    def switch(layer: BaseTunerLayer) -> None:
        layer.set_adapter(name)
        layer.enable_adapters(True)

    return switch


@contextmanager
def adapters_disabled(model: torch.nn.Module) -> Iterator[None]:
    """Run ``model`` as its base model inside the block (no copy); a no-op for a model without adapters."""
    with _switched(model, lambda layer: layer.enable_adapters(False)):
        yield


@contextmanager
def adapter_active(model: torch.nn.Module, name: str) -> Iterator[None]:
    """Run ``model`` with adapter ``name`` (alone, enabled) inside the block."""
    names = adapter_names(model)
    if name not in names:
        raise ValueError(f"no adapter {name!r}; the model has {names or 'none'}")
    with _switched(model, _enable_only(name)):
        yield
