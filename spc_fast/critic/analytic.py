"""The analytic critic: a weight-free critic that measures an image and answers in the release's tag format.

It reads the tone measures of ``measures.tone_measures``, the content measures of ``measures.content_measures``
(held fixed through simulated edits) and the degradation measures of ``measures.degradation_measures``, checks
them against the rules of an ``AnalyticCriticConfig`` (``critic.rules``, which also says where their numbers come
from) and writes a ``CriticOutput``: numbered reasoning citing the measured values, suggestions, and a 0-100
score.

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

import torch

from spc_fast import photometric, retouch
from spc_fast.critic import measures
from spc_fast.critic.reasoning import Analysis, op_attribute, write_answer
from spc_fast.critic.rules import (
    DECISION_ORDER,
    AnalyticCriticConfig,
    Decision,
    ToneRule,
    candidates,
    severity,
)
from spc_fast.critic.vocabulary import TONE_OPS
from spc_fast.executor import NEUTRAL_PARAMETERS
from spc_fast.images import as_image_list
from spc_fast.roles import Images, Judgement

__all__ = ["AnalyticCritic", "Analysis", "check_config", "op_attribute", "simulate"]


def check_config(config: AnalyticCriticConfig) -> None:
    """Raise ValueError naming the first rule that refers to an unknown op or measure."""
    tone = set(measures.TONE_MEASURES) | set(measures.CONTENT_MEASURES)
    every = tone | set(measures.DEGRADATION_MEASURES)
    for rule in config.rules:
        names = [rule.measure, rule.aim, *(n for n, _ in rule.unless + rule.only_if),
                 *([rule.cap[0]] if rule.cap else [])]
        if rule.op not in TONE_OPS or rule.direction not in (1, -1):
            raise ValueError(f"rule {rule.name!r}: op must be one of {TONE_OPS} with direction +1 or -1")
        if not set(names) <= tone:
            raise ValueError(f"rule {rule.name!r}: unknown measure in {names}; use {sorted(tone)}")
    for rule in config.restoration:
        names = [rule.measure, *(n for n, _ in rule.unless + rule.only_if)]
        if not set(names) <= every:
            raise ValueError(f"restoration rule for {rule.op}: unknown measure in {names}")
    if config.sample_pixels < 1 or config.sweeps < 1:
        raise ValueError("sample_pixels and sweeps must be at least 1")


def simulate(sample: torch.Tensor, parameters: dict[str, torch.Tensor]) -> torch.Tensor:
    """The rule executor (``retouch.apply``) on a pixel sample with per-image parameters [B]."""
    return retouch.apply(sample, **{op: parameters[op] for op in TONE_OPS})


class AnalyticCritic:
    """The weight-free critic (module docstring). ``critique(images)`` -> a ``Judgement`` carrying the measured
    attributes; ``analyse(images)`` -> one ``Analysis`` per image (the measures behind each answer)."""

    def __init__(self, config: AnalyticCriticConfig | None = None) -> None:
        self.config = config or AnalyticCriticConfig()
        check_config(self.config)

    def critique(self, images: Images) -> Judgement:
        """The answers for a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        analyses = self.analyse(images)
        names = photometric.ATTRIBUTE_NAMES
        attributes = torch.tensor([[a.measured[name] for name in names] for a in analyses], dtype=torch.float32)
        return Judgement([a.text for a in analyses], [a.output for a in analyses], attributes=attributes)

    def analyse(self, images: Images) -> list[Analysis]:
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
        decisions = {op: [Decision() for _ in range(batch)] for op in TONE_OPS}
        per_image = [measures.content_measures(x[None]) for x in image_list]
        content = {name: torch.cat([m[name] for m in per_image]).to(sample.device) for name in per_image[0]}
        before = {**measures.tone_measures(sample, n), **content}
        active = torch.arange(batch, device=sample.device)
        for sweep in range(config.sweeps):
            if sweep > 0:
                edited = [i for i in range(batch) if any(decisions[op][i].magnitudes for op in TONE_OPS)]
                if not edited:
                    break
                active = torch.tensor(edited, device=sample.device)
            for op in DECISION_ORDER:
                self._decide(op, sample, content, params, decisions, active, before if sweep == 0 else None)
        after = self._measure(sample, content, torch.arange(batch, device=sample.device), params)
        # one host transfer per table, then plain floats per image
        measured = _rows({**before, **dict(zip(photometric.ATTRIBUTE_NAMES,
                                              photometric.attributes_of(image_list).unbind(1), strict=True))})
        predicted = _rows(after)
        parameters = _rows(params)
        return [
            write_answer(config, image_list[i], measured[i], predicted[i], parameters[i],
                         {op: decisions[op][i] for op in TONE_OPS})
            for i in range(batch)
        ]

    def _measure(self, sample, content, rows, parameters) -> dict[str, torch.Tensor]:
        # Tone measures of sample[rows] edited with ``parameters`` [len(rows)], plus those images' content measures
        # (a property of the photo, held fixed through the edits).
        edited = measures.tone_measures(simulate(sample[rows], parameters), self.config.sample_pixels)
        return {**edited, **{name: v[rows] for name, v in content.items()}}

    def _decide(self, op, sample, content, params, decisions, active, neutral_measures) -> None:
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
            m0 = self._measure(sample, content, active, p0)
        severities = torch.stack([severity(r, m0) for r in rules])  # [R, b]
        strongest = severities.argmax(0)
        fired = severities.amax(0) > 0
        quiet = [severity(r, m0) == 0 for r in config.rules]  # [b] per rule: not a problem before this op
        active_list = active.tolist()  # the per-image decisions are Python objects: one transfer per call
        for index, is_fired in zip(active_list, fired.tolist(), strict=True):
            if not is_fired:
                params[op][index] = NEUTRAL_PARAMETERS[op]
                decisions[op][index] = Decision()
        for r, rule in enumerate(rules):
            chosen = (fired & (strongest == r)).nonzero()[:, 0]  # positions within ``active``
            if chosen.numel() == 0:
                continue
            options = candidates(op, rule.direction)
            k = len(options)
            trial = {name: v[chosen].repeat_interleave(k) for name, v in p0.items()}
            trial[op] = torch.tensor([value for _, value in options], dtype=torch.float64,
                                     device=sample.device).repeat(chosen.numel())
            mk = self._measure(sample, content, active[chosen].repeat_interleave(k), trial)
            neutral = {name: v[chosen] for name, v in m0.items()}
            repeated = {name: v.repeat_interleave(k) for name, v in neutral.items()}
            quiet_k = [q[chosen].repeat_interleave(k) for q in quiet]
            rank = torch.arange(1, k + 1, dtype=torch.float32, device=sample.device).repeat(chosen.numel())
            cost_k = self._cost(rule, mk, repeated, quiet_k) + config.prior_weight * rank
            cost_0 = self._cost(rule, neutral, neutral, [q[chosen] for q in quiet])
            costs = torch.cat([cost_0[:, None], cost_k.view(-1, k)], dim=1)  # [c, 1 + K]
            best = costs.argmin(1).tolist()
            for c, position in enumerate(chosen.tolist()):
                index = active_list[position]
                if best[c] == 0:
                    params[op][index] = NEUTRAL_PARAMETERS[op]
                    decisions[op][index] = Decision(rule=rule)
                else:
                    magnitudes, value = options[best[c] - 1]
                    params[op][index] = value
                    decisions[op][index] = Decision(rule=rule, magnitudes=magnitudes, value=value)

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



def _rows(columns: dict[str, torch.Tensor]) -> list[dict[str, float]]:
    # {name: [B]} -> B dicts of floats, with one transfer to the host
    names = list(columns)
    table = torch.stack([columns[name].double() for name in names], dim=1).cpu().tolist()
    return [dict(zip(names, row, strict=True)) for row in table]
