"""Trained weights in the release layout, so that ``spc-fast enhance --critic RUN/final --artist RUN/final`` loads
them: a critic directory holds ``vlm/`` (and ``vlm_lora/``), an artist directory the diffusers layout
(``transformer/``, ``vae/``, ``scheduler/``) with ``dit_lora/`` or ``dit.safetensors`` beside it.

The trainer hands over the full, unsharded state dict of the trainable parameters only (frozen ones are left out).
So a LoRA run writes its adapter from that dict, and the base it was trained on is made part of the directory too:
written out when it exists nowhere on disk (the tiny model, or a base whose own adapter was merged at load), linked
(a symbolic link to the base's folder or file, not a copy of many gigabytes) when it is a directory already. A full
fine-tune writes every weight.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

from spc_fast.models import qwen_image, qwen_vl
from spc_fast.models.weights import build_empty

# Names that wrappers (activation checkpointing, torch.compile, FSDP1, DDP) put into parameter names.
_WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def module_state(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of a trainable module's state dict under its child ``prefix`` (e.g. ``"vlm."``), named as that
    child names them, with wrapper artefacts removed."""
    out = {}
    for key, value in state_dict.items():
        for part in _WRAPPER_PARTS:
            key = key.replace(part, "")
        key = key.removeprefix("module.")
        if not key.startswith(prefix):
            raise ValueError(f"state dict key {key!r} is not under {prefix!r}: not this stage's trainable module")
        out[key[len(prefix) :]] = value
    return out


def link(target: Path, name: Path) -> None:
    """``name`` becomes a symbolic link to ``target`` (absolute), replacing what was there."""
    if not target.exists():
        raise FileNotFoundError(f"cannot link {name} to {target}: it does not exist")
    if name.is_symlink() or name.is_file():
        name.unlink()
    elif name.is_dir():
        shutil.rmtree(name)
    name.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), name, target_is_directory=target.is_dir())


def _fresh(directory: Path) -> Path:
    if directory.is_symlink() or directory.is_file():
        directory.unlink()
    elif directory.is_dir():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def write_adapter(
    model: torch.nn.Module, state: dict[str, torch.Tensor], directory: Path, adapter: str = "default"
) -> None:
    """peft's adapter layout (``adapter_config.json``, ``adapter_model.safetensors``) of ``model``'s adapter with the
    LoRA weights taken from ``state`` (named as ``model`` names its parameters); ``model`` supplies the config."""
    weights = get_peft_model_state_dict(model, state_dict=state, adapter_name=adapter)
    if not weights:
        raise ValueError(f"the state dict holds no weights of LoRA adapter {adapter!r}; was the run trained with lora?")
    _fresh(directory)
    model.peft_config[adapter].save_pretrained(str(directory))
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    save_file(tensors, str(directory / "adapter_model.safetensors"))


def _filled(
    build: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor], dtype: torch.dtype, what: str
) -> torch.nn.Module:
    """A CPU model built without memory and filled from ``state`` (every parameter must be there)."""
    model = build_empty(build)
    result = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    missing = [k for k in result.missing_keys if k in dict(model.named_parameters())]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"the trained {what} weights do not fill the model: {len(missing)} missing {missing[:5]}, "
            f"{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def _as(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    # diffusers warns on every dtype cast, needed or not
    return model if next(model.parameters()).dtype == dtype else model.to(dtype)


def export_critic(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    *,
    vlm: torch.nn.Module,
    processor,
    lora: bool,
    base: Path | Callable[[], torch.nn.Module],
    dtype: torch.dtype,
    prompt: tuple[str, str],
) -> None:
    """Write a critic directory. ``vlm``: the live model (a ``PeftModel`` when ``lora``), for its config and names;
    ``state_dict``: the trainable module's (keys under ``vlm.``); ``base``: a release directory whose ``vlm/`` is
    linked, or a function that builds the base model (CPU) to write to ``vlm/``; ``dtype``: of written weights;
    ``prompt``: the system line and instruction it was trained with (recorded in ``qwen_vl.PROMPT_FILE``)."""
    state = module_state(state_dict, "vlm.")
    directory.mkdir(parents=True, exist_ok=True)
    qwen_vl.write_prompt(directory, *prompt)
    if lora:
        # PeftModel.save_pretrained takes its weights from the given state dict: the live (maybe sharded) ones unused
        _fresh(directory / qwen_vl.VLM_LORA_DIR)
        vlm.save_pretrained(str(directory / qwen_vl.VLM_LORA_DIR), state_dict=state)
        if isinstance(base, Path):
            link(base / qwen_vl.VLM_DIR, directory / qwen_vl.VLM_DIR)
        else:
            _fresh(directory / qwen_vl.VLM_DIR)
            qwen_vl.save_critic(_as(base(), dtype), processor, directory)
        return
    if (directory / qwen_vl.VLM_LORA_DIR).exists():  # a LoRA export's adapter would be merged into these weights
        shutil.rmtree(directory / qwen_vl.VLM_LORA_DIR)
    config = vlm.config
    model = _filled(lambda: qwen_vl.Qwen2_5_VLForConditionalGeneration(config), state, dtype, "critic")
    model.generation_config = vlm.generation_config
    _fresh(directory / qwen_vl.VLM_DIR)
    qwen_vl.save_critic(model, processor, directory)


def export_artist(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    *,
    transformer: torch.nn.Module,
    lora: bool,
    base: tuple[Path, Path] | Callable[[], tuple],
    dtype: torch.dtype,
) -> None:
    """Write an artist directory. ``transformer``: the live DiT (with its peft adapter when ``lora``), for config
    and names; ``state_dict``: the trainable module's (keys under ``transformer.``); ``base``: (diffusers directory,
    release directory) whose folders and ``dit.safetensors`` are linked, or a function building (transformer, vae,
    scheduler) on the CPU, written out; ``dtype``: of written weights."""
    state = module_state(state_dict, "transformer.")
    directory.mkdir(parents=True, exist_ok=True)
    if lora:
        write_adapter(transformer, state, directory / "dit_lora")
    elif (directory / "dit_lora").exists():
        shutil.rmtree(directory / "dit_lora")
    if isinstance(base, tuple):
        weights, release = base
        for part in ("transformer", "vae", "scheduler"):
            link(weights / part, directory / part)
        if lora and (release / "dit.safetensors").is_file():
            link(release / "dit.safetensors", directory / "dit.safetensors")
        if not lora:
            trained = _filled(lambda: type(transformer).from_config(transformer.config), state, dtype, "DiT")
            path = directory / "dit.safetensors"
            path.unlink(missing_ok=True)  # a link to the base's file must not be written through
            save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
        return
    base_transformer, vae, scheduler = base()
    if not lora:
        base_transformer = _filled(lambda: type(transformer).from_config(transformer.config), state, dtype, "DiT")
    for part in ("transformer", "vae", "scheduler"):
        _fresh(directory / part)
    (directory / "dit.safetensors").unlink(missing_ok=True)
    qwen_image.save_artist(directory, _as(base_transformer, dtype), _as(vae, dtype), scheduler)
