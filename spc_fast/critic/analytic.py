"""The analytic critic: a weight-free critic that measures an image and answers in the release's tag format.

It reads the tone measures of ``measures.tone_measures`` and the degradation measures of
``measures.degradation_measures``, checks them against the rules of an ``AnalyticCriticConfig``
(``critic.rules``, which also says where their numbers come from) and writes a ``CriticOutput``: numbered
reasoning citing the measured values, suggestions, and a 0-100 score.

Choosing magnitudes by simulation. The executor's step per magnitude is fixed (``format.STEPS``), but what a
step does to a measure depends on the image (clipping, where its tones sit). So the critic simulates: it
runs ``retouch.apply`` on a pixel sample of the image (``config.sample_pixels``, 16384 by default) for every
candidate (one magnitude, or two different magnitudes in one direction, which ``retouch_parameters`` adds or
multiplies) and keeps the candidate whose simulated aim measure lands closest to the rule's target. A
candidate pays extra for pushing a measure past the rule's ``cap``, for making a rule fire that did not fire
before, and a little for its size (no edit wins ties). An op only moves when one of its own rules fires, and
only in that rule's direction. Ops are decided in the order exposure, contrast, saturation, temperature, each
with the ops decided before it simulated in place; a second sweep re-decides every op given the others, so a
combined problem (dark *and* flat) is resolved by both ops and a problem another edit already fixes is left.

Score = 100 - sum of penalties, at least 0: each rule firing on the input costs ``min(30, 10 + 5 s)``, with
``s`` how far its measure is past the limit in units of the rule's ``spread``. No detected problem: 100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from spc_fast import photometric, retouch
from spc_fast.critic import measures
from spc_fast.critic.format import (
    CONTRAST,
    EXPOSURE,
    MAGNITUDES,
    NEUTRAL_PARAMETERS,
    SATURATION,
    TEMPERATURE,
    TONE_OPS,
    CriticOutput,
    Suggestion,
    render,
    suggestion_phrase,
)
from spc_fast.critic.rules import (
    DECISION_ORDER,
    AnalyticCriticConfig,
    RestorationRule,
    ToneRule,
    candidates,
    severity,
)
from spc_fast.images import check_batch


@dataclass
class _Decision:
    rule: ToneRule | None = None
    magnitudes: tuple[str, ...] = ()
    value: float = 0.0


@dataclass
class Critique:
    """One image's analysis: the parsed output plus what produced it (measures before and predicted after)."""

    output: CriticOutput
    measured: dict[str, float]
    predicted: dict[str, float]
    parameters: dict[str, float]
    fired: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return render(self.output)


# ---- reasoning text ----------------------------------------------------------------------------------------

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
    "sharpness": ("Laplacian variance", "{:.4f}"),
    "noise_sigma": ("noise sigma", "{:.4f}"),
    "haze": ("dark-channel median", "{:.3f}"),
}
_ASPECTS = (
    (EXPOSURE, "Exposure", ("exposure", "headroom_ev", "highlight_clip")),
    (CONTRAST, "Contrast", ("contrast", "black_lift", "crushed_and_clipped", "span")),
    (SATURATION, "Saturation", ("saturation", "gamut_saturation", "colour_clip")),
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


def _magnitude(s: float) -> str:
    return MAGNITUDES[0 if s < 1.0 else 1 if s < 2.5 else 2]


def _penalty(s: float) -> float:
    return min(30.0, 10.0 + 5.0 * s)


def check_config(config: AnalyticCriticConfig) -> None:
    """Raise ValueError naming the first rule that refers to an unknown op or measure."""
    tone, every = set(measures.TONE_MEASURES), set(measures.TONE_MEASURES) | set(measures.DEGRADATION_MEASURES)
    for rule in config.rules:
        names = [rule.measure, rule.aim, *(n for n, _ in rule.unless), *([rule.cap[0]] if rule.cap else [])]
        if rule.op not in TONE_OPS or rule.direction not in (1, -1):
            raise ValueError(f"rule {rule.name!r}: op must be one of {TONE_OPS} with direction +1 or -1")
        if not set(names) <= tone:
            raise ValueError(f"rule {rule.name!r}: unknown measure in {names}; use {measures.TONE_MEASURES}")
    for rule in config.restoration:
        names = [rule.measure, *(n for n, _ in rule.unless)]
        if not set(names) <= every:
            raise ValueError(f"restoration rule for {rule.op}: unknown measure in {names}")
    if config.sample_pixels < 1 or config.sweeps < 1:
        raise ValueError("sample_pixels and sweeps must be at least 1")


# ---- the critic --------------------------------------------------------------------------------------------


def as_image_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A (B, 3, H, W) batch or a sequence of (3, H, W) / (1, 3, H, W) images (any sizes) as validated
    (3, H, W) tensors."""
    if isinstance(images, torch.Tensor):
        return list(check_batch(images)[0].unbind(0))
    out = []
    for image in images:
        batch, unbatched = check_batch(image)
        if batch.shape[0] != 1:
            raise ValueError(
                f"an image in the list is a batch of {batch.shape[0]}; pass (3, H, W) images, or one "
                "(B, 3, H, W) tensor"
            )
        out.append(image if unbatched else batch[0])
    if not out:
        raise ValueError("no images to critique; pass at least one")
    return out


def simulate(sample: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
    """The rule executor (``retouch.apply``) on a pixel sample with per-image parameters [B]."""
    return retouch.apply(sample, **{op: parameters[op] for op in TONE_OPS})


class AnalyticCritic:
    """The weight-free critic (module docstring). ``critique(images)`` -> one ``CriticOutput`` per image."""

    def __init__(self, config: AnalyticCriticConfig | None = None) -> None:
        self.config = config or AnalyticCriticConfig()
        check_config(self.config)

    def critique(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[CriticOutput]:
        """Critic outputs for a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        return [c.output for c in self.analyse(images)]

    def analyse(self, images: torch.Tensor | Sequence[torch.Tensor]) -> list[Critique]:
        """``critique`` with the measures behind each answer and the executor parameters it predicts."""
        config = self.config
        image_list = as_image_list(images)
        n = config.sample_pixels
        sample = torch.cat([measures.pixel_sample(x, n) for x in image_list])  # [B, 3, 1, N]
        batch = sample.shape[0]
        params = {
            op: torch.full((batch,), NEUTRAL_PARAMETERS[op], dtype=torch.float64, device=sample.device)
            for op in TONE_OPS
        }
        decisions = {op: [_Decision() for _ in range(batch)] for op in TONE_OPS}
        before = measures.tone_measures(sample, n)
        active = torch.arange(batch, device=sample.device)
        for sweep in range(config.sweeps):
            if sweep > 0:
                edited = [i for i in range(batch) if any(decisions[op][i].magnitudes for op in TONE_OPS)]
                if not edited:
                    break
                active = torch.tensor(edited, device=sample.device)
            for op in DECISION_ORDER:
                self._decide(op, sample, params, decisions, active, before if sweep == 0 else None)
        after = measures.tone_measures(simulate(sample, params), n)
        return [
            self._answer(i, image_list[i], before, after, params, decisions) for i in range(batch)
        ]

    def _decide(self, op, sample, params, decisions, active, neutral_measures) -> None:
        # Re-decide ``op`` for the images in ``active`` with every other op's parameter simulated in place.
        config = self.config
        rules = [r for r in config.rules if r.op == op]
        if not rules:
            return
        p0 = {k: v[active].clone() for k, v in params.items()}
        p0[op].fill_(NEUTRAL_PARAMETERS[op])
        if neutral_measures is not None and all(torch.all(p0[k] == NEUTRAL_PARAMETERS[k]) for k in TONE_OPS):
            m0 = {k: v[active] for k, v in neutral_measures.items()}
        else:
            m0 = measures.tone_measures(simulate(sample[active], p0), config.sample_pixels)
        severities = torch.stack([severity(r, m0) for r in rules])  # [R, b]
        strongest = severities.argmax(0)
        fired = severities.amax(0) > 0
        quiet = [severity(r, m0) == 0 for r in config.rules]  # [b] per rule: not a problem before this op
        for j, index in enumerate(active.tolist()):
            if not fired[j]:
                params[op][index] = NEUTRAL_PARAMETERS[op]
                decisions[op][index] = _Decision()
        for r, rule in enumerate(rules):
            chosen = (fired & (strongest == r)).nonzero()[:, 0]  # positions within ``active``
            if chosen.numel() == 0:
                continue
            options = candidates(op, rule.direction)
            k = len(options)
            trial = {name: v[chosen].repeat_interleave(k) for name, v in p0.items()}
            trial[op] = torch.tensor([value for _, value in options], dtype=torch.float64,
                                     device=sample.device).repeat(chosen.numel())
            trial_sample = sample[active[chosen]].repeat_interleave(k, dim=0)
            mk = measures.tone_measures(simulate(trial_sample, trial), config.sample_pixels)
            neutral = {name: v[chosen] for name, v in m0.items()}
            repeated = {name: v.repeat_interleave(k) for name, v in neutral.items()}
            quiet_k = [q[chosen].repeat_interleave(k) for q in quiet]
            rank = torch.arange(1, k + 1, dtype=torch.float32, device=sample.device).repeat(chosen.numel())
            cost_k = self._cost(rule, mk, repeated, quiet_k) + config.prior_weight * rank
            cost_0 = self._cost(rule, neutral, neutral, [q[chosen] for q in quiet])
            costs = torch.cat([cost_0[:, None], cost_k.view(-1, k)], dim=1)  # [c, 1 + K]
            best = costs.argmin(1).tolist()
            for c, position in enumerate(chosen.tolist()):
                index = int(active[position])
                if best[c] == 0:
                    params[op][index] = NEUTRAL_PARAMETERS[op]
                    decisions[op][index] = _Decision(rule=rule)
                else:
                    magnitudes, value = options[best[c] - 1]
                    params[op][index] = value
                    decisions[op][index] = _Decision(rule=rule, magnitudes=magnitudes, value=value)

    def _cost(self, rule: ToneRule, m, neutral, quiet) -> torch.Tensor:
        # Aim distance in scale units, plus cap and new-problem guards (module docstring).
        config = self.config
        distance = (m[rule.aim] - rule.target) / rule.scale
        if rule.one_sided:
            side = torch.sign(neutral[rule.aim] - rule.target)
            distance = (distance * side).clamp_min(0.0)
        cost = distance.abs()
        if rule.cap is not None:
            name, value = rule.cap
            over = ((m[name] - value) * rule.direction).clamp_min(0.0)
            cost = cost + torch.where(over > 0, config.guard_weight + over, torch.zeros_like(over))
        for other, was_quiet in zip(config.rules, quiet, strict=True):
            if other is rule:
                continue
            s = severity(other, m)
            cost = cost + torch.where(was_quiet & (s > 0), config.guard_weight * (1.0 + s), 0.0)
        return cost

    def _answer(self, i, image, before, after, params, decisions) -> Critique:
        config = self.config
        measured = {name: float(v[i]) for name, v in before.items()}
        attributes = photometric.attributes(image).tolist()
        measured.update(zip(photometric.ATTRIBUTE_NAMES, attributes, strict=True))
        predicted = {name: float(v[i]) for name, v in after.items()}
        fired_tone = [r for r in config.rules if float(severity(r, _one(measured, r))) > 0]
        lines, penalties, suggestions = [], [], []
        for op, title, names in _ASPECTS:
            cited = ", ".join(_cited(name, measured[name]) for name in names)
            problems = [_verdict(r) for r in fired_tone if r.op == op]
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
            decision = decisions[op][i]
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
        output = CriticOutput(reasoning=reasoning, suggestions=suggestions, score=float(round(score)))
        parameters = {op: float(params[op][i]) for op in TONE_OPS}
        fired = [r.name for r in fired_tone] + [r.op for r, _ in restoration]
        return Critique(output=output, measured=measured, predicted=predicted, parameters=parameters, fired=fired)


def op_attribute(op: str) -> str:
    """The photometric attribute a tone op moves (exposure -> exposure, temperature -> cct, ...)."""
    return photometric.ATTRIBUTE_NAMES[TONE_OPS.index(op)]


def _one(values: dict[str, float], rule: ToneRule | RestorationRule) -> dict[str, torch.Tensor]:
    names = [rule.measure, *(name for name, _ in rule.unless)]
    return {name: torch.tensor([values[name]]) for name in names}
