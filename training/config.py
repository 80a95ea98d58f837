"""A training run's configuration: keyword-only dataclasses over ``spc_fast.config``'s machinery (TOML files,
``key=value`` overrides), the ``tiny`` and ``release`` presets of each stage, and a small TOML writer so that the
resolved config is kept in ``RUN/config.toml`` and read back by ``--resume``.

The resolution order is fixed: the stage's preset (``release`` unless a preset name is given), then a TOML file laid
over it, then ``--set`` overrides. Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spc_fast.config import (
    RELEASE_PIXELS,
    TINY,
    ArtistConfig,
    CriticConfig,
    layered,
    load_toml,
    override,
    to_dict,
)

STAGE_NAMES = ("critic-sft", "artist-sft", "adapt", "joint")
PRESET_NAMES = ("tiny", "release")
MODES = ("auto", "fsdp", "ddp", "none")
PRECISIONS = ("bf16", "fp32")
SCHEDULES = ("constant", "cosine")
TINY_PIXELS = 64 * 64


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW over the trainable parameters; the learning rate warms up linearly over ``warmup_steps`` optimizer steps,
    then stays (``constant``) or follows a half cosine to 0 at the last step (``cosine``). ``clip`` <= 0 turns
    gradient clipping off (the norm is still logged). ``grad_accum`` micro-batches make one optimizer step."""

    lr: float = 1e-5  # SPEC.md §8: stages I and II
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    clip: float = 1.0
    grad_accum: int = 1
    beta1: float = 0.9
    beta2: float = 0.999

    def __post_init__(self) -> None:
        _check(self.lr > 0 and math.isfinite(self.lr), f"optim.lr must be a positive number, got {self.lr}")
        _check(self.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _check(self.grad_accum >= 1, f"optim.grad_accum must be at least 1, got {self.grad_accum}")
        for name in ("beta1", "beta2"):
            value = getattr(self, name)
            _check(0 <= value < 1, f"optim.{name} must be in [0, 1), got {value}")


@dataclass(frozen=True, kw_only=True)
class ParallelConfig:
    """How the trainable module is spread over the ranks. ``auto``: FSDP2 when there is more than one rank, else
    none. ``bf16``: FSDP2's mixed precision (bf16 parameters, fp32 reduction) or bf16 autocast on CUDA without it."""

    mode: str = "auto"
    precision: str = "bf16"
    activation_checkpointing: bool = True
    cpu_offload: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        _check(self.mode in MODES, f"parallel.mode must be one of {MODES}, got {self.mode!r}")
        _check(self.precision in PRECISIONS, f"parallel.precision must be one of {PRECISIONS}, got {self.precision!r}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run. ``batch_size`` is per rank and per micro-batch: a step sees batch_size x world x grad_accum
    samples. ``checkpoint_every`` 0 saves only at the end (and when stopped). ``device`` None: CUDA when available."""

    stage: str
    data: str | None = None  # a dataset folder holding manifest.jsonl (or the manifest file itself)
    out: str | None = None  # the run directory
    steps: int = 1000
    batch_size: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    keep: int = 2
    log_every: int = 10
    workers: int = 4
    prefetch: int = 2
    skip_bad: bool = False
    lora: bool = True
    lora_rank: int = 32
    lora_alpha: int = 64
    pixels: int = RELEASE_PIXELS
    hc_cache: bool = True
    device: str | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    artist: ArtistConfig = field(default_factory=ArtistConfig)

    def __post_init__(self) -> None:
        _check(bool(self.stage.strip()), "stage must be named, e.g. critic-sft")
        for name, least in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 0), ("keep", 1), ("log_every", 1),
                            ("workers", 0), ("prefetch", 1), ("lora_rank", 1), ("lora_alpha", 1), ("pixels", 256)):
            value = getattr(self, name)
            _check(value >= least, f"{name} must be at least {least}, got {value}")


def _release(stage: str) -> TrainConfig:
    """SPEC.md §8 and the release's model sizes; the weights must be given (``--set critic.weights=DIR``)."""
    return TrainConfig(stage=stage)


def _tiny(stage: str) -> TrainConfig:
    """Tiny random-weight models on the CPU in float32 at a tiny working size: a run takes seconds."""
    return TrainConfig(
        stage=stage,
        steps=12,
        batch_size=2,
        checkpoint_every=4,
        log_every=1,
        workers=0,
        lora_rank=4,
        lora_alpha=8,
        pixels=TINY_PIXELS,
        device="cpu",
        optim=OptimConfig(lr=1e-3),
        parallel=ParallelConfig(precision="fp32", activation_checkpointing=False),
        critic=CriticConfig(weights=TINY, max_new_tokens=32, device="cpu", dtype="float32"),
        artist=ArtistConfig(weights=TINY, steps=2, pixels=TINY_PIXELS, device="cpu", dtype="float32"),
    )


_PRESETS = {"tiny": _tiny, "release": _release}


def preset(stage: str, name: str) -> TrainConfig:
    """The ``name`` preset (``tiny`` or ``release``) of ``stage``; a stage outside the registry gets the generic one."""
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)} or give a TOML file")
    return _PRESETS[name](stage)


def train_config(stage: str, config: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> TrainConfig:
    """The resolved config of a run: the preset ``config`` names, or the TOML file ``config`` laid over the stage's
    release preset (default: the release preset), then ``overrides`` (``key=value``, dotted for tables)."""
    if config is None or str(config) in _PRESETS:
        resolved = layered(preset(stage, str(config or "release")), overrides=overrides)
    elif Path(config).suffix.lower() == ".toml" or Path(config).exists():
        resolved = layered(preset(stage, "release"), file=config, overrides=overrides)
    else:
        raise ValueError(f"--config {config}: neither a preset ({', '.join(PRESET_NAMES)}) nor a TOML file")
    _check(resolved.stage == stage, f"the config is for stage {resolved.stage!r}, not {stage!r}; remove its 'stage'")
    return resolved


def lr_factor(optim: OptimConfig, steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier after ``done`` optimizer steps: linear warm-up, then constant or half cosine."""

    def factor(done: int) -> float:
        if done < optim.warmup_steps:
            return (done + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = (done - optim.warmup_steps) / max(1, steps - optim.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


# ---- the TOML writer ------------------------------------------------------------------------------------------


def _toml_string(text: str) -> str:
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(key: str, value: Any) -> str:
    if value is None:
        return '"none"'  # spc_fast.config reads "none" back as None for optional fields
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # inf, nan and 1e-05 are TOML as Python writes them
    if isinstance(value, str):
        return _toml_string(value)
    raise TypeError(f"{key}: cannot write {type(value).__name__} {value!r} to TOML")


def _bare_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else _toml_string(key)


def to_toml(data: Mapping[str, Any], *, prefix: str = "") -> str:
    """``data`` (str/int/float/bool/None values and nested tables) as a TOML document: scalars first, then tables."""
    scalars = [f"{_bare_key(k)} = {_toml_value(prefix + k, v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    lines = ["\n".join(scalars)] if scalars else []
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{_bare_key(key)}"
            lines.append(f"[{name}]\n" + to_toml(value, prefix=name + ".").strip("\n"))
    return "\n\n".join(lines) + "\n"


def write_config(path: str | os.PathLike, config: TrainConfig) -> None:
    """Write ``config`` to ``path`` as TOML, atomically (a reader sees the old file or the whole new one)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(to_toml(to_dict(config)))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a config is not a secret
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> TrainConfig:
    """The config a run wrote (``RUN/config.toml``), with ``overrides`` applied."""
    return override(load_toml(TrainConfig, path), overrides)

