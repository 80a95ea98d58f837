"""Critic annotations without a teacher: tagged answers (SPEC §4) written from the analytic critic's measurements.

``annotate(image, suggestions)``, for a record whose corrective suggestions are known (synthesised pairs): the
analytic critic measures the input and writes its numbered reasoning (``critic.reasoning.write_answer``: one line
per aspect citing the measured values and which of its rules fire, the degradation line, a plan line and a score
line). Its own plan is not simulated (the suggestions are replaced anyway): the plan line is rewritten to state the
known suggestions with their executor settings and the tone attributes the executor is predicted to give (the
executor run on the critic's pixel sample), so the reasoning leads to the edit block it ends in. The score is the
given one (a MOS rescaled to 0-100), else the analytic critic's penalty score of the input.

``critic_answer(image)``, for records without known suggestions whose score is the label (IQA tables): the
analytic critic's own full answer, its suggestions and plan included, with the score replaced when one is given.

MOS rescaling (``rescale_mos``): ``100 (mos - low) / (high - low)`` rounded to a whole number, where (low, high)
is a range given with the table (``--mos-range``; low > high for tables where lower is better) or, by default,
the lowest and highest MOS of the table. Records with neither known suggestions nor a score task get no
annotation (``annotate_record`` returns None): an answer saying "no edit needed" would be a false label.
"""

from __future__ import annotations

import torch

from spc_fast import photometric
from spc_fast.critic import measures
from spc_fast.critic.analytic import AnalyticCritic, simulate
from spc_fast.critic.format import parse_suggestions, render, suggestion_phrase
from spc_fast.critic.reasoning import Analysis, write_answer
from spc_fast.critic.rules import AnalyticCriticConfig, Decision
from spc_fast.critic.vocabulary import TONE_OPS, CriticOutput, Suggestion
from spc_fast.executor import NEUTRAL_PARAMETERS, retouch_parameters
from spc_fast.training.data.manifest import Record, load_image

__all__ = ["annotate", "annotate_record", "critic_answer", "rescale_mos"]

# The attribute each tone op moves, as the analytic critic's reasoning cites it.
_CITED = {
    "exposure": ("mean L*", "{:.1f}"),
    "contrast": ("L* standard deviation", "{:.1f}"),
    "saturation": ("mean chroma C*", "{:.1f}"),
    "temperature": ("gray-world CCT", "{:.0f} K"),
}
_ATTRIBUTE = dict(zip(TONE_OPS, photometric.ATTRIBUTE_NAMES, strict=True))
_SETTINGS = {"exposure": "{:+.2f} EV", "contrast": "x{:.3g}", "saturation": "x{:.3g}", "temperature": "{:+.0f} mired"}


def rescale_mos(mos: float, low: float, high: float) -> float:
    """``mos`` on [low, high] as a 0-100 score (whole number); low > high reverses the scale. ValueError outside."""
    if low == high:
        raise ValueError(f"the MOS range [{low}, {high}] is empty; give two different ends (--mos-range LOW HIGH)")
    score = 100.0 * (mos - low) / (high - low)
    if not -1e-9 <= score <= 100.0 + 1e-9:
        raise ValueError(f"MOS {mos} lies outside the range [{min(low, high)}, {max(low, high)}]")
    return float(round(score))


def _measured(image: torch.Tensor, config: AnalyticCriticConfig) -> tuple[dict[str, float], torch.Tensor]:
    # the analytic critic's input measures (as AnalyticCritic.analyse takes them) and its pixel sample [1, 3, 1, N]
    sample = measures.pixel_sample(image[None], config.sample_pixels)
    values = {**measures.tone_measures(sample, config.sample_pixels), **measures.content_measures(image[None])}
    attributes = photometric.attributes_of([image])[0]
    values.update(zip(photometric.ATTRIBUTE_NAMES, attributes.unbind(0), strict=True))
    return {name: float(v.reshape(-1)[0]) for name, v in values.items()}, sample


def _replace_line(reasoning: str, heading: str, text: str) -> str:
    # "k. <heading>..." -> "k. <text>"; the line must exist (write_answer always writes it)
    lines = reasoning.split("\n")
    for i, line in enumerate(lines):
        number, _, rest = line.partition(". ")
        if number.isdigit() and rest.startswith(heading):
            lines[i] = f"{number}. {text}"
            return "\n".join(lines)
    raise ValueError(f"the analytic critic's reasoning has no {heading!r} line to replace")


def _plan(suggestions: list[Suggestion], measured: dict[str, float], sample: torch.Tensor) -> str:
    tone = [s for s in suggestions if s.op in TONE_OPS]
    parts = []
    if tone:
        parameters, _ = retouch_parameters(tone)
        edited = measures.tone_measures(
            simulate(sample, {op: torch.tensor([value], dtype=torch.float64) for op, value in parameters.items()}),
            sample.shape[-1],
        )
        steps = []
        for s in tone:
            alone, _ = retouch_parameters([s])
            steps.append(f"{suggestion_phrase(s)} (executor {_SETTINGS[s.op].format(alone[s.op])})")
        moved = []
        for op in dict.fromkeys(s.op for s in tone):
            label, form = _CITED[op]
            name = _ATTRIBUTE[op]
            moved.append(f"the {label} from {form.format(measured[name])} to {form.format(float(edited[name][0]))}")
        verb = "is" if len(steps) == 1 else "are"
        parts.append(f"{' and '.join(steps)} {verb} predicted to bring {' and '.join(moved)}")
    parts += [suggestion_phrase(s) for s in suggestions if s.op not in TONE_OPS]
    if not parts:
        return "Plan: no edit needed."
    heading = "Plan, simulated with the rule executor: " if tone else "Plan: "
    return heading + "; ".join(parts) + "."


def _suggestions(phrases) -> list[Suggestion]:
    out = []
    for phrase in phrases:
        found, errors = parse_suggestions(phrase)
        if errors or len(found) != 1:
            raise ValueError(f"{phrase!r} is not one critic suggestion: {'; '.join(errors) or len(found)}")
        out.append(found[0])
    # the analytic critic's order: restoration first, then the tone ops
    return [s for s in out if s.op not in TONE_OPS] + [s for s in out if s.op in TONE_OPS]


def annotate(
    image: torch.Tensor, suggestions, *, score: float | None = None, config: AnalyticCriticConfig | None = None
) -> str:
    """The tagged answer for ``image`` (uint8 or float [3, H, W]) whose ideal suggestions (critic phrases) are known:
    the analytic critic's reasoning with the plan of those suggestions, and ``score`` or the critic's own score."""
    config = config or AnalyticCriticConfig()
    chosen = _suggestions(suggestions)
    measured, sample = _measured(image, config)
    neutral = {op: Decision() for op in TONE_OPS}
    analysis: Analysis = write_answer(config, image, measured, {}, dict(NEUTRAL_PARAMETERS), neutral)
    reasoning = _replace_line(analysis.output.reasoning, "Plan", _plan(chosen, measured, sample))
    final = analysis.output.score if score is None else float(score)
    if score is not None:
        reasoning = _replace_line(reasoning, "Score", f"Score: {final:.0f}.")
    return render(CriticOutput(reasoning, chosen, final, no_edit=not chosen))


def critic_answer(image: torch.Tensor, *, score: float | None = None, critic: AnalyticCritic | None = None) -> str:
    """The analytic critic's own answer for ``image`` (its suggestions), with ``score`` in place of its score."""
    output = (critic or AnalyticCritic()).analyse([image])[0].output
    if score is not None:
        output.reasoning = _replace_line(output.reasoning, "Score", f"Score: {float(score):.0f}.")
        output.score = float(score)
    return render(output)


def annotate_record(
    record: Record,
    *,
    mos_range: tuple[float, float] | None = None,
    image: torch.Tensor | None = None,
    config: AnalyticCriticConfig | None = None,
) -> str | None:
    """The annotation of ``record`` (module docstring): known suggestions -> ``annotate``; a score task ->
    ``critic_answer``; otherwise None. ``mos_range`` rescales the record's MOS (required when it has one);
    ``config`` configures the analytic critic (default: its default rules and search)."""
    score = None
    if record.mos is not None:
        if mos_range is None:
            raise ValueError(f"record {record.id!r} has a MOS; give the MOS range to rescale it to 0-100")
        score = rescale_mos(record.mos, *mos_range)
    if not record.suggestions and record.task != "score":
        return None
    image = load_image(record.input) if image is None else image
    if record.suggestions:
        return annotate(image, record.suggestions, score=score, config=config)
    return critic_answer(image, score=score, critic=AnalyticCritic(config))
