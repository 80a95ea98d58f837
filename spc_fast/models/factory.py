"""Ready-to-run critic and artist from a config: ``build_critic(CriticConfig)`` and ``build_artist(ArtistConfig)``
resolve the weights (a local directory, or ``"tiny"`` for tiny random weights of the same classes), the device and
the dtype, and wrap the models as ``ImageCritic``/``PhotoArtist``. ``load_critic``/``load_artist`` (a directory)
and ``tiny_critic``/``tiny_artist`` (the tiny models, the ``tiny`` preset's settings) call the same code.

Defaults follow the device: CUDA when there is one, bfloat16 there and float32 on the CPU. ``compile`` compiles the
critic's decode step and the artist's DiT; on CUDA with CUDA graphs (``mode="reduce-overhead"``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

from spc_fast.artist.lora import merge_lora
from spc_fast.artist.model import PhotoArtist
from spc_fast.config import PRESETS, TINY, ArtistConfig, CriticConfig, read_prompts
from spc_fast.critic.format import render
from spc_fast.critic.model import ImageCritic
from spc_fast.critic.prompts import ANALYSIS_PROMPT, SYSTEM_PROMPT
from spc_fast.critic.vocabulary import MAGNITUDES, OPS, RESTORATION_OPS, CriticOutput, Suggestion
from spc_fast.export.manifest import read_manifest
from spc_fast.models import qwen_image, qwen_vl
from spc_fast.notices import say_once

DEFAULT_CRITIC = CriticConfig()
DEFAULT_ARTIST = ArtistConfig()
# the DiT config fields that fix an exported step's inputs and outputs: the rest lives inside the artifact
ENGINE_DIT_FIELDS = ("patch_size", "in_channels", "out_channels", "joint_attention_dim")


logger = logging.getLogger(__name__)

def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on CUDA (the release's precision); float32 on the CPU, where bfloat16 matmuls are slow."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def resolve_device(name: str | None) -> torch.device:
    """A config's device name as a torch device; None: CUDA when there is one, else the CPU."""
    return torch.device(name) if name is not None else default_device()


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """A config's dtype name (``spc_fast.config.DTYPES``) as a torch dtype; None: ``default_dtype(device)``."""
    return getattr(torch, name) if name is not None else default_dtype(device)


def _placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    # diffusers warns on every dtype cast through .to(); the tiny models are built where they usually run
    if module.device == device and module.dtype == dtype:
        return module
    return module.to(device, dtype)


def _compile_mode(device: torch.device) -> str | None:
    return "reduce-overhead" if device.type == "cuda" else None


def _weights(config: CriticConfig | ArtistConfig, role: str) -> str:
    if config.weights is None:
        raise ValueError(
            f"{role}.weights is not set: name a local model directory or {TINY!r} (tiny random weights); without "
            f"weights the pipeline uses the weight-free {'analytic critic' if role == 'critic' else 'rule artist'}"
        )
    return config.weights


def critic_from(model, processor, config: CriticConfig = DEFAULT_CRITIC) -> ImageCritic:
    """``ImageCritic`` around a Qwen2.5-VL already on its device and dtype, and its processor."""
    return ImageCritic(model, processor, config, compile_mode=_compile_mode(model.device))


def artist_from(transformer, vae, scheduler, config: ArtistConfig = DEFAULT_ARTIST) -> PhotoArtist:
    """``PhotoArtist`` around components already on their device and dtype."""
    return PhotoArtist(transformer, vae, scheduler, config, compile_mode=_compile_mode(transformer.device))


def _check_prompt(config: CriticConfig, directory: Path) -> None:
    """Say once when the critic runs with other instruction texts than it was trained with: those a spc-fast
    export records in ``qwen_vl.PROMPT_FILE``, else (the release's checkpoint) the release's own wording."""
    record = directory / qwen_vl.PROMPT_FILE
    running = {"system_prompt": config.system_prompt, "instruction": config.instruction}
    if record.is_file():
        if read_prompts(record) != running:
            say_once(logger, f"the critic was trained with the instruction texts in {record} and runs with others "
                     f"now; pass --critic-prompt {record} to run it as it was trained")
    elif (config.system_prompt, config.instruction) == (SYSTEM_PROMPT, ANALYSIS_PROMPT):
        say_once(logger, "the critic's checkpoint was trained with the release's own system line and analysis "
                 "instruction, and it runs with spc-fast's wording now; pass the release's text with "
                 "--critic-prompt FILE (TOML or JSON with 'system' and 'instruction', see the README)")


def _critic(config: CriticConfig, seed: int) -> ImageCritic:
    weights = _weights(config, "critic")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if weights == TINY:
        model, processor = qwen_vl.build_tiny_critic(seed, corpus=tiny_critic_corpus())
        model = _placed(model, device, dtype)
    else:
        _check_prompt(config, Path(weights))
        model, processor = qwen_vl.load_critic(weights, dtype=dtype, device=device)
    return critic_from(model, processor, config)


def _artist(config: ArtistConfig, seed: int) -> PhotoArtist:
    weights = _weights(config, "artist")
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.engine is not None:
        return _engine_artist(config, weights, device, dtype)
    if weights == TINY:
        transformer, vae, scheduler = qwen_image.tiny_artist_components(seed)
        transformer, vae = _placed(transformer, device, dtype), _placed(vae, device, dtype)
    else:
        transformer, vae, scheduler = qwen_image.load_artist(weights, dtype, release=config.release, device=device)
        if getattr(transformer, "peft_config", None):
            merge_lora(transformer)
    return artist_from(transformer, vae, scheduler, config)


def _engine_artist(config: ArtistConfig, weights: str, device: torch.device, dtype: torch.dtype) -> PhotoArtist:
    """The artist whose DiT step is the exported engine ``config.engine``: the DiT built on the meta device (its
    config only), the VAE and scheduler loaded, the manifest checked against them and the config."""
    from spc_fast.export.runtime import load_engine

    if weights == TINY:
        transformer, vae, scheduler = qwen_image.tiny_components_without_dit()
        vae = _placed(vae, device, dtype)
    else:
        transformer, vae, scheduler = qwen_image.load_components_without_dit(weights, dtype, device=device)
    check_engine(read_manifest(config.engine), config, transformer.config, device, dtype)
    engine = load_engine(config.engine, str(device))
    return PhotoArtist(transformer, vae, scheduler, config, engine=engine)


def check_engine(manifest: dict, config: ArtistConfig, dit_config, device: torch.device, dtype: torch.dtype) -> None:
    """Raise ValueError naming each way the exported step in ``config.engine`` (its ``manifest``) does not fit the
    artist ``config`` describes: the DiT's input and output layout, ``release_mlp``, dtype, device, pixels."""
    exported = manifest["model"]["config"]
    problems = [
        f"{name} {exported.get(name)} in the engine, {getattr(dit_config, name)} in {config.weights}"
        for name in ENGINE_DIT_FIELDS
        if exported.get(name) != getattr(dit_config, name)
    ]
    fix = f"export the engine again from these weights (spc-fast export --artist {config.weights})"
    if manifest["model"]["release_mlp"] != config.release_mlp:
        problems.append(f"release_mlp {manifest['model']['release_mlp']} in the engine, {config.release_mlp} here")
        fix += ", or " + ("add" if manifest["model"]["release_mlp"] else "drop") + " --release-mlp as the export did"
    if manifest["dtype"] != str(dtype).removeprefix("torch."):
        problems.append(f"dtype {manifest['dtype']} in the engine, {str(dtype).removeprefix('torch.')} here")
        fix += f", or pass --dtype {manifest['dtype']}"
    if torch.device(manifest["device"]).type != device.type:
        problems.append(f"device {manifest['device']} in the engine, {device} here")
        fix += f", or pass --device {manifest['device']}"
    low, high = manifest["ranges"]["pixels"]
    if not low <= config.pixels <= high:
        problems.append(f"the artist works at {config.pixels} pixels, outside the engine's {low}..{high}")
        fix += f", or pass --pixels between {low} and {high}"
    parity = manifest.get("parity")
    if not (parity and parity.get("passed")):
        if parity:
            found = f"a failed parity check (max rel {parity['max_rel']:.3g} > {parity['threshold']:.3g})"
        else:
            found = "no parity check (the export did not finish)"
        problems.append(f"the engine's manifest records {found}")
        fix += f", or check it again with spc-fast export --verify {config.engine}"
    if problems:
        raise ValueError(f"the engine {config.engine} does not fit this artist: {'; '.join(problems)}. Fix: {fix}")


def build_critic(config: CriticConfig) -> ImageCritic:
    """The critic ``config`` names: ``weights`` a release directory (``vlm/``, optional ``vlm_lora/``, merged) or
    ``"tiny"``, on ``config.device`` in ``config.dtype``. Never downloads."""
    return _critic(config, seed=0)


def build_artist(config: ArtistConfig) -> PhotoArtist:
    """The artist ``config`` names: ``weights`` a diffusers Qwen-Image-Edit-2509 directory (plus ``dit.safetensors``/
    ``dit_lora/`` from ``config.release``, default the same directory; a LoRA is merged for inference) or ``"tiny"``,
    on ``config.device`` in ``config.dtype``. With ``config.engine`` the exported step samples instead of the DiT,
    whose weights are not read (``check_engine`` says why an engine does not fit). Never downloads."""
    return _artist(config, seed=0)


def load_critic(path: str | Path, config: CriticConfig | None = None) -> ImageCritic:
    """The critic of a release directory, with ``config``'s other settings (default ``CriticConfig()``)."""
    return _critic(dataclasses.replace(config or DEFAULT_CRITIC, weights=os.fspath(path)), seed=0)


def load_artist(path: str | Path, config: ArtistConfig | None = None) -> PhotoArtist:
    """The artist of a diffusers directory, with ``config``'s other settings (default ``ArtistConfig()``)."""
    return _artist(dataclasses.replace(config or DEFAULT_ARTIST, weights=os.fspath(path)), seed=0)


def tiny_critic_corpus() -> list[str]:
    """What the tiny critic's tokenizer is trained on: the critic's prompts and rendered answers over every op and
    magnitude, so that prompts and answers take few tokens."""
    answers = []
    for i, op in enumerate(OPS):
        direction = 1 if op in RESTORATION_OPS or i % 2 == 0 else -1
        for j, magnitude in enumerate(MAGNITUDES):
            reasoning = f"1. The exposure is {magnitude} off. 2. Colours look {'warm' if j else 'cool'}."
            output = CriticOutput(reasoning, [Suggestion(op, direction, magnitude)], float(10 * i + j), [])
            answers.append(render(output))
    return [SYSTEM_PROMPT, ANALYSIS_PROMPT, *answers, "0123456789 /100 %.,;:!?"] * 4


def tiny_critic(seed: int = 0, config: CriticConfig | None = None) -> ImageCritic:
    """A tiny random-weight Qwen2.5-VL critic (weights drawn from ``seed``) with its offline tokenizer and processor;
    ``config`` defaults to the ``tiny`` preset's (float32 on the CPU, short answers)."""
    return _critic(dataclasses.replace(config or PRESETS[TINY].critic, weights=TINY), seed)


def tiny_artist(seed: int = 0, config: ArtistConfig | None = None) -> PhotoArtist:
    """A tiny Qwen-Image-Edit artist (random DiT, the VAE a block-mean codec that keeps a photo's colours:
    ``spc_fast.models.tiny_vae``) that takes ``tiny_critic``'s H_c; ``config`` defaults to the
    ``tiny`` preset's (float32 on the CPU, few steps, small images)."""
    return _artist(dataclasses.replace(config or PRESETS[TINY].artist, weights=TINY), seed)
