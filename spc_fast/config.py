"""Every default of spc-fast in one place: keyword-only dataclasses for the critic, the artist and the pipeline,
named presets, TOML files and ``key=value`` overrides.

A run's configuration is resolved once, at the boundary (``resolve``: preset, then file, then overrides), and
logged with the run; the command line only maps its flags onto these fields. Nothing here imports torch: dtypes
and devices are names (``"bfloat16"``, ``"cuda:1"``) that the model factory turns into torch objects.

TOML mirrors the dataclass tree::

    rescore = true
    [critic]
    weights = "/models/smartphotocrafter"
    max_new_tokens = 1280
    [artist]
    weights = "/models/Qwen-Image-Edit-2509"
    steps = 20

and an override names a field by its path, its value in TOML syntax (bare strings allowed):
``critic.attention=sdpa``, ``artist.steps=8``, ``critic.device=none``.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from spc_fast.critic.prompts import ANALYSIS_PROMPT, SYSTEM_PROMPT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "xformers")
DTYPES = ("bfloat16", "float16", "float32")
TINY = "tiny"  # a weights value: the tiny random-weight model of the real class (tests, benchmarks, demos)
RELEASE_PIXELS = 1024 * 1024  # the artist works at about 1 MP (SPEC.md §6)
FULL_RES = ("transfer", "resize")  # how the artist's working-size edit reaches the input size

Config = TypeVar("Config")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_model_options(section: str, attention: str, dtype: str | None) -> None:
    _check(
        attention in ATTENTION_BACKENDS, f"{section}.attention must be one of {ATTENTION_BACKENDS}, got {attention!r}"
    )
    _check(dtype is None or dtype in DTYPES, f"{section}.dtype must be one of {DTYPES} or none, got {dtype!r}")


@dataclass(frozen=True, kw_only=True)
class CriticConfig:
    """The image critic. ``weights``: a release directory (``vlm/``, optional ``vlm_lora/``), ``"tiny"``, or None for
    the weight-free analytic critic. Decoding follows the release: greedy, at most 1280 new tokens (SPEC.md §6)."""

    weights: str | None = None
    max_new_tokens: int = 1280
    bucket: int = 64  # prompts are left-padded to a multiple of this, so prefill shapes repeat
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    attention: str = "auto"
    compile: bool = False
    device: str | None = None  # None: cuda when available
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on the CPU
    system_prompt: str = SYSTEM_PROMPT
    instruction: str = ANALYSIS_PROMPT

    def __post_init__(self) -> None:
        _check(self.max_new_tokens >= 1, f"critic.max_new_tokens must be at least 1, got {self.max_new_tokens}")
        _check(self.bucket >= 1, f"critic.bucket must be at least 1, got {self.bucket}")
        _check(self.temperature >= 0, f"critic.temperature must be >= 0 (0 is greedy), got {self.temperature}")
        _check(0 < self.top_p <= 1, f"critic.top_p must be in (0, 1], got {self.top_p}")
        _check_model_options("critic", self.attention, self.dtype)


@dataclass(frozen=True, kw_only=True)
class ArtistConfig:
    """The photographic artist. ``weights``: a diffusers Qwen-Image-Edit-2509 directory (``release``: where
    ``dit.safetensors``/``dit_lora/`` are, default ``weights``), ``"tiny"``, or None for the rule executor.
    ``release_mlp``: the DiT's feed-forwards apply the release's (DiffSynth's) ``x · σ(1.702 x)`` instead of Qwen's
    tanh-GELU, so the same weights give the release's velocities (``spc_fast.artist.use_release_mlp``).
    ``engine``: a directory ``spc-fast export`` wrote; its compiled DiT step samples in place of the DiT, whose
    weights are then never loaded. The VAE and scheduler still come from ``weights`` (a directory or ``"tiny"``),
    and the manifest must match this config (DiT inputs, ``release_mlp``, the resolved dtype and device)."""

    weights: str | None = None
    release: str | None = None
    steps: int = 20
    guidance: float = 1.0
    strength: float = 1.0  # 1: from pure noise (the release); s < 1: from the photo noised to time s (SDEdit)
    pixels: int = RELEASE_PIXELS  # generated at about this many pixels, sides multiples of 16
    seed: int = 0  # each image's noise comes from this and the image's pixels
    attention: str = "auto"
    compile: bool = False
    real_rope: bool = True  # complex-free RoPE: compiles and exports
    release_mlp: bool = False  # x·σ(1.702x) feed-forwards, as the release's DiffSynth DiT (default: tanh-GELU)
    tiled_decode_pixels: int = 2 * RELEASE_PIXELS  # larger outputs are VAE-decoded in tiles
    device: str | None = None
    dtype: str | None = None
    full_res: str = "transfer"  # transfer: the edit's colour transform applied at full size; resize: bicubic
    engine: str | None = None  # an exported DiT step (spc-fast export --out DIR) instead of the DiT's weights

    def __post_init__(self) -> None:
        if self.engine is not None:
            _check(
                self.weights is not None,
                f"artist.engine {self.engine!r} replaces the DiT only: set artist.weights (--artist) too, the "
                "directory or 'tiny' the engine was exported from, which gives the VAE and the scheduler",
            )
            _check(
                not self.compile,
                "artist.compile and artist.engine exclude each other: the exported engine is already compiled; "
                "drop --compile (or artist.compile=true)",
            )
            _check(
                self.release is None,
                f"artist.release {self.release!r} names DiT weights and LoRA, which artist.engine replaces (the "
                "export merged them); drop --release",
            )
        # the release scheduler's terminal stretch needs two sigmas
        _check(self.steps >= 2, f"artist.steps must be at least 2, got {self.steps}")
        _check(
            0 < self.strength <= 1,
            f"artist.strength must be in (0, 1] (1 samples from pure noise, as the release), got {self.strength}",
        )
        _check(
            self.guidance == 1.0,
            f"artist.guidance must be 1.0 (the release's), got {self.guidance}: classifier-free guidance needs a "
            "negative prompt's H_c, which the pipeline does not produce (PhotoArtist.edit takes one directly)",
        )
        _check(self.pixels >= 256, f"artist.pixels must be at least 256, got {self.pixels}")
        _check(self.full_res in FULL_RES, f"artist.full_res must be {' or '.join(FULL_RES)}, got {self.full_res!r}")
        _check_model_options("artist", self.attention, self.dtype)


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """Critic + artist. ``rescore`` runs the critic again on every edit (for the score after and the rank reward):
    with the neural critic that is a second 7B generation per image, so it is opt-in."""

    critic: CriticConfig = field(default_factory=CriticConfig)
    artist: ArtistConfig = field(default_factory=ArtistConfig)
    rescore: bool = False
    batch_size: int = 1  # files that go through the pipeline together

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        _check(
            self.artist.weights is None or self.critic.weights is not None,
            "the diffusion artist is conditioned on the neural critic's hidden states: set critic.weights too",
        )


PRESETS: dict[str, PipelineConfig] = {
    "analytic": PipelineConfig(),
    TINY: PipelineConfig(
        critic=CriticConfig(weights=TINY, max_new_tokens=32, device="cpu", dtype="float32"),
        artist=ArtistConfig(weights=TINY, steps=2, pixels=64 * 64, device="cpu", dtype="float32"),
    ),
}


# ---- reading and overriding -----------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's type, or a ValueError naming the field and the type it takes."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    options = typing.get_args(hint) if union else ()
    if options:
        none = value is None or (isinstance(value, str) and value.lower() == "none")
        if none and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(path, value, option)
            except ValueError:
                continue
        raise ValueError(f"{path}: {value!r} is not a {' or '.join(getattr(o, '__name__', str(o)) for o in options)}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a table of {hint.__name__} fields, got {value!r}")
        return from_dict(hint, value, prefix=f"{path}.")
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{path}: unsupported field type {hint!r}")
    raise ValueError(f"{path}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")


def from_dict(cls: type[Config], data: Mapping[str, Any], *, prefix: str = "") -> Config:
    """A ``cls`` from a (nested) mapping of its fields; unknown keys and wrong types are errors naming the key."""
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ValueError(f"unknown setting {prefix}{unknown[0]}; {cls.__name__} has {', '.join(sorted(hints))}")
    return cls(**{name: _coerce(prefix + name, value, hints[name]) for name, value in data.items()})


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain data (what a run logs, and what ``from_dict`` reads back)."""
    return dataclasses.asdict(config)


def load_toml(cls: type[Config], path: str | Path) -> Config:
    """A ``cls`` from a TOML file (tables for nested configs); ``dict`` gives the file's table as it is."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read the config file ({error.strerror or error})") from error
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error
    if cls is dict:
        return data
    try:
        return from_dict(cls, data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def _parse_value(text: str, hint: Any) -> Any:
    """``text`` in TOML syntax; a bare string (paths, backend names) as it is, and a string field's value as written
    unless quoted (``critic.weights=2509`` is the folder "2509", not a number)."""
    string_field = hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                                   and str in typing.get_args(hint))
    if string_field and not text.startswith(('"', "'")) and text.lower() != "none":
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values laid over it, tables merged key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def override(config: Config, assignments: Iterable[str]) -> Config:
    """``config`` with each ``dotted.path=value`` applied in order (values in TOML syntax, bare strings allowed)."""
    data = to_dict(config)
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {assignment!r}: write it as key=value, e.g. artist.steps=8")
        *parents, name = key.strip().split(".")
        node, cls = data, type(config)
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {assignment!r}: {part!r} is not a section of {type(config).__name__}")
            node, cls = node[part], _hints(cls)[part]
        if isinstance(node.get(name), dict):
            raise ValueError(f"override {assignment!r}: {key.strip()!r} is a section; set one of its fields")
        if name not in node:
            raise ValueError(f"override {assignment!r}: no setting {key.strip()!r}; known: {', '.join(sorted(node))}")
        node[name] = _parse_value(text.strip(), _hints(cls)[name])
    return from_dict(type(config), data)


def resolve(
    preset: str = "analytic", *, file: str | Path | None = None, overrides: Iterable[str] = ()
) -> PipelineConfig:
    """The pipeline config of a named preset, with the settings of ``file`` laid over it, then ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return layered(PRESETS[preset], file=file, overrides=overrides)


def layered(base: Config, *, file: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """``base`` (any config dataclass) with the settings of the TOML ``file`` laid over it, then ``overrides``."""
    config = base
    if file is not None:
        try:
            config = from_dict(type(base), _merge(to_dict(base), load_toml(dict, file)))
        except ValueError as error:
            raise ValueError(f"{file}: {error}") from error
    return override(config, overrides)


def read_prompts(path: str | Path) -> dict[str, str]:
    """The critic's instruction texts from a TOML or JSON file holding ``system`` and ``instruction`` strings, as
    ``CriticConfig`` fields (``system_prompt``, ``instruction``)."""
    import json

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: cannot read the prompt file ({error.strerror or error})") from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ValueError(f"{path}: not valid {kind}: {error}") from error
    fields = {"system": "system_prompt", "instruction": "instruction"}
    if set(data) != set(fields) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise ValueError(f"{path}: a prompt file holds exactly two non-empty strings, 'system' and 'instruction'; "
                         f"found {sorted(data)}")
    return {fields[key]: value for key, value in data.items()}
