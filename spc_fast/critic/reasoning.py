"""The analytic critic's answer text: numbered reasoning that cites the measured values, the plan simulated with the
rule executor, the suggestions and the score (``analytic`` decides; this module writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from spc_fast import photometric
from spc_fast.critic import measures
from spc_fast.critic.format import render, suggestion_phrase
from spc_fast.critic.rules import AnalyticCriticConfig, Decision, RestorationRule, ToneRule, held_back, severity
from spc_fast.critic.vocabulary import (
    CONTRAST,
    EXPOSURE,
    MAGNITUDES,
    SATURATION,
    TEMPERATURE,
    TONE_OPS,
    CriticOutput,
    Suggestion,
)


@dataclass
class Analysis:
    """One image's analysis: the parsed output plus what produced it (measures before and predicted after)."""

    output: CriticOutput
    measured: dict[str, float]
    predicted: dict[str, float]
    parameters: dict[str, float]
    fired: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return render(self.output)


_LABELS = {
    "exposure": ("mean L*", "{:.1f}"),
    "contrast": ("L* standard deviation", "{:.1f}"),
    "saturation": ("mean chroma C*", "{:.1f}"),
    "cct": ("gray-world CCT", "{:.0f} K"),
    "headroom_ev": ("highlight headroom", "{:.2f} EV"),
    "highlight_clip": ("clipped highlights", "{:.2%}"),
    "black_point": ("black point L*", "{:.1f}"),
    "white_point": ("white point L*", "{:.1f}"),
    "span": ("L* span (1st to 99th percentile)", "{:.1f}"),
    "black_lift": ("black point / mean L*", "{:.2f}"),
    "crushed_and_clipped": ("crushed-and-clipped pixels", "{:.2%}"),
    "gamut_saturation": ("gamut-relative chroma (99th percentile)", "{:.2f}"),
    "gamut_saturation_p90": ("gamut-relative chroma (90th percentile)", "{:.2f}"),
    "colour_clip": ("colours clipped to a primary", "{:.2%}"),
    "illuminant_shift": ("shades-of-grey illuminant", "{:+.0f} mired from D65"),
    "colour_variety": ("colour variety (C* off the tone curve)", "{:.1f}"),
    "sharpness": ("Laplacian variance", "{:.4f}"),
    "noise_sigma": ("noise sigma", "{:.4f}"),
    "haze": ("dark-channel median", "{:.3f}"),
}
_ASPECTS = (
    (EXPOSURE, "Exposure", ("exposure", "headroom_ev", "highlight_clip")),
    (CONTRAST, "Contrast", ("contrast", "black_lift", "crushed_and_clipped", "span")),
    (SATURATION, "Saturation", ("saturation", "gamut_saturation", "colour_clip", "colour_variety")),
    (TEMPERATURE, "Colour temperature", ("cct", "illuminant_shift")),
)
_PARAMETER_FORMATS = {EXPOSURE: "{:+.2f} EV", CONTRAST: "x{:.3g}", SATURATION: "x{:.3g}", TEMPERATURE: "{:+.0f} mired"}


def _value(name: str, value: float) -> str:
    return _LABELS[name][1].format(value)


def _cited(name: str, value: float) -> str:
    return f"{_LABELS[name][0]} {_value(name, value)}"


def _verdict(rule: ToneRule | RestorationRule) -> str:
    side = "above" if rule.above else "below"
    label = _LABELS[rule.measure][0]
    problem = rule.name if isinstance(rule, ToneRule) else rule.op.replace("_", " ")
    return f"{problem} ({label} {side} the limit {_value(rule.measure, rule.limit)})"


def _left_alone(rule: ToneRule, values: dict[str, float]) -> str:
    # a rule whose measure is past its limit but that an ``only_if`` measure holds back
    reasons = [f"{_cited(name, values[name])} is not above {_value(name, limit)}"
               for name, limit in rule.only_if if not values[name] > limit]
    return f"{_verdict(rule)} left alone: {', '.join(reasons)}"


def _magnitude(s: float) -> str:
    return MAGNITUDES[0 if s < 1.0 else 1 if s < 2.5 else 2]


def _penalty(s: float) -> float:
    return min(30.0, 10.0 + 5.0 * s)


def op_attribute(op: str) -> str:
    """The photometric attribute a tone op moves (exposure -> exposure, temperature -> cct, ...)."""
    return photometric.ATTRIBUTE_NAMES[TONE_OPS.index(op)]


def _one(values: dict[str, float], rule: ToneRule | RestorationRule) -> dict[str, torch.Tensor]:
    names = [rule.measure, *(name for name, _ in rule.unless + rule.only_if)]
    return {name: torch.tensor([values[name]]) for name in names}


def write_answer(
    config: AnalyticCriticConfig,
    image: torch.Tensor,
    measured: dict[str, float],
    predicted: dict[str, float],
    parameters: dict[str, float],
    decisions: dict[str, Decision],
) -> Analysis:
    """One image's answer: numbered reasoning citing ``measured`` (tone measures and attributes; the degradation
    measures of ``image`` are added), the suggestions of ``decisions`` (one per tone op) and restoration rules, and
    the score (module docstring of ``analytic``)."""
    fired_tone = [r for r in config.rules if float(severity(r, _one(measured, r))) > 0]
    held = [r for r in config.rules if bool(held_back(r, _one(measured, r)))]
    lines, penalties, suggestions = [], [], []
    for op, title, names in _ASPECTS:
        cited = ", ".join(_cited(name, measured[name]) for name in names)
        problems = [_verdict(r) for r in fired_tone if r.op == op]
        problems += [_left_alone(r, measured) for r in held if r.op == op]
        lines.append(f"{title}: {cited}; {'; '.join(problems) if problems else 'within range'}.")
    restoration = []
    if config.restore:
        degradation = {k: float(v[0]) for k, v in measures.degradation_measures(image[None]).items()}
        measured.update(degradation)
        cited = ", ".join(_cited(name, value) for name, value in degradation.items())
        for rule in config.restoration:
            s = float(severity(rule, _one(measured, rule)))
            if s > 0:
                restoration.append((rule, s))
                suggestions.append(Suggestion(rule.op, 1, _magnitude(s)))
                penalties.append((rule.op.replace("_", " "), _penalty(s)))
        found = "; ".join(_verdict(rule) for rule, _ in restoration)
        lines.append(f"Degradations: {cited}; {found or 'none found'}.")
    for rule in fired_tone:
        penalties.append((rule.name, _penalty(float(severity(rule, _one(measured, rule))))))
    plan = []
    for op in TONE_OPS:
        decision = decisions[op]
        rule = decision.rule
        if rule is None:
            names = " and ".join(r.name for r in fired_tone if r.op == op)
            if names:
                plan.append(f"{names}: no {op} edit needed once the other edits are simulated")
            continue
        label, target = _LABELS[rule.aim][0], _value(rule.aim, rule.target)
        if not decision.magnitudes:
            plan.append(f"{rule.name}: no executor step brings the {label} closer to {target} "
                        "without creating a new problem")
            continue
        group = [Suggestion(op, rule.direction, m) for m in decision.magnitudes]
        suggestions.extend(group)
        phrases = " and ".join(suggestion_phrase(s) for s in group)
        setting = _PARAMETER_FORMATS[op].format(decision.value)
        moved = [rule.aim] if rule.aim == op_attribute(op) else [rule.aim, op_attribute(op)]
        outcome = " and ".join(f"the {_LABELS[n][0]} to {_value(n, predicted[n])}" for n in moved)
        plan.append(f"{phrases} (executor {setting}) is predicted to bring {outcome} (target {target})")
    if plan:
        lines.append("Plan, simulated with the rule executor: " + "; ".join(plan) + ".")
    else:
        lines.append("Plan: no tone or colour edit needed.")
    score = max(0.0, 100.0 - sum(p for _, p in penalties))
    if penalties:
        terms = " - ".join(f"{p:.0f} ({name})" for name, p in penalties)
        lines.append(f"Score: 100 - {terms} = {score:.0f}.")
    else:
        lines.append("Score: 100, no problem found.")
    reasoning = "\n".join(f"{k}. {line}" for k, line in enumerate(lines, 1))
    output = CriticOutput(reasoning, suggestions, float(round(score)), no_edit=not suggestions)
    fired = [r.name for r in fired_tone] + [r.op for r, _ in restoration]
    return Analysis(output=output, measured=measured, predicted=predicted, parameters=parameters, fired=fired)


