"""The analytic critic's configuration: which measured problems it looks for, and what correcting them aims at.

Each ``ToneRule`` ties one problem to the tone/colour op that corrects it: it *fires* when its measure (one of
``measures.TONE_MEASURES``) is past its limit, and its correction *aims* a measure at a target. Each
``RestorationRule`` records a restoration op (remove blur/noise/haze, enhance low light) when its measure is
past its limit; those are suggested, never executed by the rule executor.

Where the numbers come from (``DEFAULT_RULES``, ``DEFAULT_RESTORATION``). The *form* of each rule is common
photographic practice: highlights just below clipping ("expose to the right"), a black point near black (auto
levels), the most colourful midtones near the sRGB gamut boundary, a light source near daylight
(shades-of-grey colour constancy), a sharp, clean, haze-free image. The *limits and targets* were measured on
the four bundled reference photographs (scikit-image's astronaut, chelsea, coffee and rocket, full size, the
aesthetic references of ``bench/enhance_quality.py``; their values are in the comments, in that order):
every limit lies outside all four with a margin, so an unperturbed reference is left alone, and every target
lies inside their range. The targets were then chosen within that range by running the quality benchmark on
the same four photos, so its numbers are in-sample; ``bench/enhance_quality.py --held-out`` reports a fifth
photo that took no part. Four photographs are a starting point, not a survey of photography.

Neutral photos. A black-and-white photo, a grey card or a white page has no colour to correct, and a toned
print (sepia, selenium, cyanotype) has the one colour its maker chose: the critic must not colourise either. What
the four references have and those lack is colour *variety*: colours that differ at equal lightness
(``measures.colour_variety``, chroma off the tone curve). So every temperature and saturation rule fires only
where ``colour_variety`` is above ``NEUTRAL_VARIETY`` = 5 C*. Measured (full size): the references 30.5 / 13.1 /
14.0 / 14.1 and the held-out photo 18.5; with their chroma halved (the quality benchmark's washed-out cases) still
6.5-15.4. Grayscale versions of the references measure 0; toned with the common sepia matrix 0.3-2.8, and 1.4-3.5
after JPEG at quality 50 with 4:2:0 chroma (3.9 at 256 px); a cyanotype ramp 0.3-0.8; grey with colour noise
(sigma 0.03 per channel) 0.6-0.8. 5 C* lies between the two groups, about twice the just-noticeable colour
difference (2.3 Delta E*ab). The price: a photo whose colour follows its lightness (a grey scene under one
coloured light, a uniformly tinted image, a flat colour field) keeps that colour: the critic cannot tell a cast
from a toning there, and leaving it is the edit that cannot damage.

Why not ranges on the four attributes themselves: on the references mean L* spans 24-50, its standard
deviation 13-30, mean C* 21-43 and the gray-world CCT 2600-13000 K. Ranges wide enough to leave all four alone
would let most perturbations through, so the rules read measures that separate a photo's content from its
rendering (headroom, black point relative to the mean, gamut-relative chroma, the illuminant estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import torch

from spc_fast.critic import measures
from spc_fast.critic.vocabulary import (
    CONTRAST,
    ENHANCE_LOW_LIGHT,
    EXPOSURE,
    MAGNITUDES,
    REMOVE_BLUR,
    REMOVE_HAZE,
    REMOVE_NOISE,
    SATURATION,
    TEMPERATURE,
    Suggestion,
)
from spc_fast.executor import NEUTRAL_PARAMETERS, retouch_parameters

DECISION_ORDER = (EXPOSURE, CONTRAST, SATURATION, TEMPERATURE)


@dataclass
class Decision:
    """What the critic decided for one tone op of one image: the rule that fired (None: none did), the magnitudes
    it suggests (empty: no step helps) and the executor parameter they give."""

    rule: ToneRule | None = None
    magnitudes: tuple[str, ...] = ()
    value: float = 0.0


@dataclass(frozen=True, kw_only=True)
class ToneRule:
    """A tone/colour problem, when it fires, and what its correction aims at.

    Fires when ``measure`` is above ``limit`` (``above``) or below it, unless a measure in ``unless`` is above
    its value, and only where every measure in ``only_if`` is above its value. The correction moves ``op`` in
    ``direction`` and aims ``aim`` at ``target`` (cost ``|aim - target| / scale``; ``one_sided``: only values on
    the uncorrected side of the target cost). ``cap`` = (measure, value): the correction may not push that
    measure past value in the op's direction.
    """

    name: str
    op: str
    direction: int
    measure: str
    limit: float
    above: bool
    spread: float
    aim: str
    target: float
    scale: float
    one_sided: bool = False
    cap: tuple[str, float] | None = None
    unless: tuple[tuple[str, float], ...] = ()
    only_if: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class RestorationRule:
    """A degradation: suggests ``op`` when ``measure`` is past ``limit`` (above/below), unless a measure in
    ``unless`` is above its value, and only where every measure in ``only_if`` is above its value; magnitude by
    severity (past the limit in units of ``spread``)."""

    op: str
    measure: str
    limit: float
    above: bool
    spread: float
    unless: tuple[tuple[str, float], ...] = ()
    only_if: tuple[tuple[str, float], ...] = ()


NEUTRAL_VARIETY = 5.0  # C* off the tone curve; at or below it the colour is left alone (module docstring)
_HAS_COLOUR = (("colour_variety", NEUTRAL_VARIETY),)


# Limits lie outside all four references (values in the comments: astronaut, chelsea, coffee, rocket).
DEFAULT_RULES = (
    # highlight headroom 0.01 / 0.73 / 0.04 / 0.05 EV; mean L* 47.7 / 49.8 / 44.4 / 24.2
    ToneRule(name="under-exposed", op=EXPOSURE, direction=1, measure="headroom_ev", limit=0.85, above=True,
             spread=0.5, aim="headroom_ev", target=0.1, scale=0.15, cap=("exposure", 52.0)),
    # clipped highlights 0.15 / 0.00 / 0.42 / 0.37 %
    ToneRule(name="over-exposed", op=EXPOSURE, direction=-1, measure="highlight_clip", limit=0.02, above=True,
             spread=0.05, aim="exposure", target=48.0, scale=2.0, one_sided=True),
    # black point / mean L* 0.00 / 0.20 / 0.04 / 0.08
    ToneRule(name="flat", op=CONTRAST, direction=1, measure="black_lift", limit=0.3, above=True, spread=0.1,
             aim="black_lift", target=0.08, scale=0.03),
    # crushed-and-clipped 0.09 / 0.00 / 0.00 / 0.00 %; L* span 97.8 / 63.3 / 92.7 / 75.8
    ToneRule(name="harsh", op=CONTRAST, direction=-1, measure="crushed_and_clipped", limit=0.005, above=True,
             spread=0.02, aim="span", target=80.0, scale=4.0),
    # gamut-relative chroma p99 0.95 / 0.81 / 0.94 / 0.91
    ToneRule(name="washed-out", op=SATURATION, direction=1, measure="gamut_saturation", limit=0.65,
             above=False, spread=0.1, aim="gamut_saturation", target=0.92, scale=0.03, only_if=_HAS_COLOUR),
    # colour clipped to a primary 0.01 / 0.00 / 0.05 / 0.26 %; gamut-relative chroma p90 0.85 / 0.59 / 0.89 / 0.80
    ToneRule(name="over-saturated", op=SATURATION, direction=-1, measure="colour_clip", limit=0.08, above=True,
             spread=0.1, aim="gamut_saturation_p90", target=0.7, scale=0.03, only_if=_HAS_COLOUR),
    # shades-of-grey illuminant +15 / +55 / +31 / +30 mired from D65 (neutral white)
    ToneRule(name="too warm", op=TEMPERATURE, direction=-1, measure="illuminant_shift", limit=60.0, above=True,
             spread=20.0, aim="illuminant_shift", target=34.0, scale=4.0, only_if=_HAS_COLOUR),
    ToneRule(name="too cool", op=TEMPERATURE, direction=1, measure="illuminant_shift", limit=9.0, above=False,
             spread=20.0, aim="illuminant_shift", target=34.0, scale=4.0, only_if=_HAS_COLOUR),
)

# Laplacian variance 0.0135 / 0.0062 / 0.0061 / 0.0040; noise sigma 0.0053 / 0.0036 / 0.0069 / 0.0019;
# dark channel 0.035 / 0.184 / 0.066 / 0.070. Gaussian blur sigma 1 px, noise sigma 0.015 and haze t = 0.8
# (degrade.py) cross these limits on all four references.
DEFAULT_RESTORATION = (
    RestorationRule(op=REMOVE_BLUR, measure="sharpness", limit=0.002, above=False, spread=0.001),
    RestorationRule(op=REMOVE_NOISE, measure="noise_sigma", limit=0.01, above=True, spread=0.01),
    RestorationRule(op=REMOVE_HAZE, measure="haze", limit=0.2, above=True, spread=0.1),
    RestorationRule(op=ENHANCE_LOW_LIGHT, measure="headroom_ev", limit=2.0, above=True, spread=1.0,
                    unless=(("exposure", 30.0),)),
)


@dataclass(frozen=True, kw_only=True)
class AnalyticCriticConfig:
    """Rules and search settings of the analytic critic (see the module docstring for where they come from).

    sample_pixels: pixels per image the simulation runs on. sweeps: decision passes over the ops.
    guard_weight / prior_weight: cost of making a new rule fire / per unit of edit size, in aim-scale units.
    """

    rules: tuple[ToneRule, ...] = DEFAULT_RULES
    restoration: tuple[RestorationRule, ...] = DEFAULT_RESTORATION
    sample_pixels: int = measures.SAMPLE_PIXELS
    sweeps: int = 2
    guard_weight: float = 3.0
    prior_weight: float = 0.05
    restore: bool = True


PRESETS = {
    "default": AnalyticCriticConfig(),
    "fast": AnalyticCriticConfig(sample_pixels=4096, sweeps=1),
    "tone-only": AnalyticCriticConfig(restore=False),
}


def candidates(op: str, direction: int) -> list[tuple[tuple[str, ...], float]]:
    """Executor values reachable in one direction: each magnitude alone and each pair of different
    magnitudes (two suggestions on the attribute, combined by ``retouch_parameters``), as (magnitudes,
    parameter value), sorted by size."""
    out = []
    for count in (1, 2):
        for group in combinations(MAGNITUDES, count):
            params, _ = retouch_parameters(Suggestion(op, direction, m) for m in group)
            out.append((group, params[op]))
    return sorted(out, key=lambda item: abs(item[1] - NEUTRAL_PARAMETERS[op]))


def _past(value: torch.Tensor, limit: float, above: bool) -> torch.Tensor:
    return value - limit if above else limit - value


def severity(rule: ToneRule | RestorationRule, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """How far past its limit the rule's measure is, in spreads; 0 where the rule does not fire. [B]"""
    past = _past(m[rule.measure], rule.limit, rule.above)
    fires = past > 0
    for name, value in rule.unless:
        fires = fires & ~(m[name] > value)
    for name, value in rule.only_if:
        fires = fires & (m[name] > value)
    return torch.where(fires, past / rule.spread, torch.zeros_like(past))


def held_back(rule: ToneRule | RestorationRule, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """Where the rule's measure is past its limit but a measure of its ``only_if`` holds it back, [B] bool."""
    return (severity(replace(rule, only_if=()), m) > 0) & (severity(rule, m) == 0)
