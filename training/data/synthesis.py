"""Synthetic training pairs from one good photo: the photo is the target, the input is the photo spoiled in a known
way, and the ideal suggestions are the critic phrases that undo it.

- ``retouch``: 1-3 tone/colour ops, each with a random direction and magnitude (SPEC §4 steps). Their corrective
  parameters ``p = executor.retouch_parameters(suggestions)`` are inverted (ev and mired negated, contrast and
  saturation factors reciprocated) and applied to the photo with ``retouch.apply`` one op at a time in the reverse
  of the executor's chain order (saturation, contrast, exposure, temperature), so executing the suggestions on the
  input, ``retouch.apply(input, **p)``, undoes the chain step by step. It is exact up to: pixels the inverse edit
  pushes out of [0, 1] (clipped: brightening, contrast and saturation boosts lose highlights and gamut), the mean
  L* a contrast step pivots on moving when pixels clip, the temperature matrices (``T(-d)`` is the inverse of
  ``T(d)`` only to first order: the daylight locus is not straight in mired), and rounding the input to 8 bits.
  A draw is kept only when the executed corrective edit leaves at most ``RESTORED_FRACTION`` of the input's
  attribute distance to the photo (``attribute_distance``: sum of |a_k - a_k(photo)| / tau_k with SPEC §5's tau);
  otherwise the ops are drawn again, at most ``MAX_DRAWS`` times. ``tests/test_training_data.py`` checks the
  distance falls on every pair.
- ``restore``: one degradation of ``degrade.DEGRADATIONS`` with parameters drawn from ``DEGRADATION_RANGES``; the
  suggestion is its corrective op, at a magnitude that grows with the drawn severity.
- ``stack``: the retouch inverse (1-2 ops; no exposure op under low light, which is itself an exposure problem),
  then a degradation; suggestions are the restoration op followed by the tone ops. Its record's task is
  ``restore``: the target is the clean photo.

Everything random comes from the generator handed in (``pair_generator(seed, index)``), degradations' noise from a
torch generator seeded from it (the seed is kept in the record), so a pair depends on (seed, index, photo) only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from spc_fast import photometric, retouch
from spc_fast.critic.format import parse_suggestions, suggestion_phrase
from spc_fast.critic.vocabulary import EXPOSURE, MAGNITUDES, TONE_OPS, Suggestion
from spc_fast.degrade import DEGRADATIONS
from spc_fast.executor import retouch_parameters
from spc_fast.images import from_unit_float, to_unit_float
from spc_fast.rewards.artist import DEFAULT_TAU

KINDS = ("retouch", "restore", "stack")
# Per degradation, each parameter's (mildest, most severe) values; the first parameter sets the severity u in
# [0, 1) and the suggestion's magnitude (thirds of u). Pixel sizes are for photos of about 1024 px on the long side.
DEGRADATION_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "gaussian_blur": {"sigma": (0.8, 3.0)},
    "motion_blur": {"length": (5.0, 21.0), "angle": (0.0, 180.0)},
    "haze": {"t": (0.8, 0.45), "airlight": (0.75, 0.95)},
    "gaussian_noise": {"sigma": (0.02, 0.08)},
    "poisson_noise": {"photons": (200.0, 20.0)},
    "low_light": {"ev": (-1.2, -3.0), "noise": (0.002, 0.01)},
    "jpeg": {"quality": (35.0, 8.0)},
}
# A retouch draw is kept when executing its suggestions on the (8-bit) input leaves at most this fraction of the
# input's attribute distance to the photo; else it is drawn again, at most MAX_DRAWS times (the last draw is kept).
RESTORED_FRACTION = 0.5
MAX_DRAWS = 8
_WHOLE = {("jpeg", "quality")}  # parameters that are whole numbers
_INVERSE_ORDER = ("saturation", "contrast", "exposure", "temperature")  # the executor's chain, reversed


@dataclass(frozen=True)
class Pair:
    """A synthesised input (uint8 [3, H, W]), its corrective suggestions (phrases), the retouch parameters that made
    it from the photo ({} when none) and its degradations."""

    kind: str
    image: torch.Tensor
    suggestions: tuple[str, ...]
    parameters: dict[str, float]
    degradations: tuple[dict, ...]


def pair_generator(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair ``index`` of a build seeded ``seed``: independent of every other pair's."""
    return np.random.default_rng([seed, index])


def _tone_suggestions(rng: np.random.Generator, count: int, ops: tuple[str, ...]) -> list[Suggestion]:
    chosen = set(rng.choice(ops, size=count, replace=False).tolist())
    return [Suggestion(op, int(rng.choice((1, -1))), str(rng.choice(MAGNITUDES))) for op in TONE_OPS if op in chosen]


def corrective_parameters(phrases: tuple[str, ...] | list[str]) -> dict[str, float]:
    """``retouch.apply`` parameters that execute the tone/colour ``phrases`` (the rule executor)."""
    suggestions = [s for phrase in phrases for s in parse_suggestions(phrase)[0]]
    return retouch_parameters(suggestions)[0]


def inverse_retouch(image: torch.Tensor, phrases: list[str]) -> tuple[torch.Tensor, dict[str, float]]:
    """The image (float [3, H, W] in [0, 1]) spoiled so that executing ``phrases`` restores it (module docstring),
    and the inverse parameters applied."""
    corrective = corrective_parameters(phrases)
    inverse = {
        "exposure": 0.0 - corrective["exposure"],
        "contrast": 1.0 / corrective["contrast"],
        "saturation": 1.0 / corrective["saturation"],
        "temperature": 0.0 - corrective["temperature"],
    }
    out = image
    for op in _INVERSE_ORDER:
        if inverse[op] != retouch.NEUTRAL[op]:
            out = retouch.apply(out, **{op: inverse[op]})
    return out, inverse


def attribute_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Sum over the four attributes of |a_k(a) - a_k(b)| / tau_k (SPEC §5 tolerances, CCT in mired)."""
    both = photometric.attributes(torch.stack([to_unit_float(a), to_unit_float(b)])).double()
    both[:, 3] = 1e6 / both[:, 3]
    return float(((both[0] - both[1]).abs() / torch.tensor(DEFAULT_TAU, dtype=torch.float64)).sum())


def _retouch_draw(
    rng: np.random.Generator, image: torch.Tensor, ops: tuple[str, ...], most: int
) -> tuple[torch.Tensor, list[str], dict[str, float]]:
    # 1..most tone ops drawn until the corrective edit undoes the inverse one (RESTORED_FRACTION)
    for _ in range(MAX_DRAWS):
        count = int(rng.integers(1, most + 1))
        tone = [suggestion_phrase(s) for s in _tone_suggestions(rng, count, ops)]
        spoiled, parameters = inverse_retouch(image, tone)
        saved = from_unit_float(spoiled, torch.uint8)
        restored = retouch.apply(saved, **corrective_parameters(tone))
        if attribute_distance(restored, image) <= RESTORED_FRACTION * attribute_distance(saved, image):
            break
    return spoiled, tone, parameters


def draw_degradation(rng: np.random.Generator, name: str | None = None) -> tuple[dict, str]:
    """A degradation record ``{"name", params..., ["seed"]}`` (``name`` random when None) and the magnitude of its
    corrective suggestion."""
    names = tuple(DEGRADATIONS)
    name = names[int(rng.integers(len(names)))] if name is None else name
    record: dict = {"name": name}
    severity = 0.0
    for position, (param, (mild, severe)) in enumerate(DEGRADATION_RANGES[name].items()):
        u = float(rng.random())
        severity = u if position == 0 else severity
        value = mild + u * (severe - mild)
        record[param] = int(round(value)) if (name, param) in _WHOLE else round(value, 4)
    if DEGRADATIONS[name].random:
        record["seed"] = int(rng.integers(2**62))
    return record, MAGNITUDES[min(2, int(3 * severity))]


def degrade(image: torch.Tensor, degradation: dict) -> torch.Tensor:
    """Apply one degradation record (as ``draw_degradation`` makes them) to a float [3, H, W] image."""
    params = {k: v for k, v in degradation.items() if k not in ("name", "seed")}
    generator = torch.Generator().manual_seed(degradation["seed"]) if "seed" in degradation else None
    return DEGRADATIONS[degradation["name"]](image, generator=generator, **params)


def _restoration_phrase(name: str, magnitude: str) -> str:
    (suggestion,), _ = parse_suggestions(DEGRADATIONS[name].corrective_op)
    return suggestion_phrase(Suggestion(suggestion.op, 1, magnitude))


def synthesise(photo: torch.Tensor, kind: str, rng: np.random.Generator) -> Pair:
    """One pair of ``kind`` (``KINDS``) from ``photo`` (uint8 [3, H, W]), drawing from ``rng``."""
    if kind not in KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; use one of {', '.join(KINDS)}")
    image = to_unit_float(photo)
    phrases: list[str] = []
    parameters: dict[str, float] = {}
    degradations: tuple[dict, ...] = ()
    if kind in ("restore", "stack"):
        degradation, magnitude = draw_degradation(rng)
        degradations = (degradation,)
        phrases.append(_restoration_phrase(degradation["name"], magnitude))
    if kind in ("retouch", "stack"):
        low_light = any(d["name"] == "low_light" for d in degradations)
        ops = tuple(op for op in TONE_OPS if not (low_light and op == EXPOSURE))
        image, tone, parameters = _retouch_draw(rng, image, ops, 3 if kind == "retouch" else 2)
        phrases.extend(tone)
    for degradation in degradations:
        image = degrade(image, degradation)
    return Pair(kind, from_unit_float(image, torch.uint8), tuple(phrases), parameters, degradations)
