"""The enhancer: a critic judges each image, an artist executes its suggestions.

Critic and artist are interchangeable behind two small protocols. The default pair needs no weights: the
``AnalyticCritic`` (``spc_fast.critic.analytic``) and the ``RuleArtist``, which executes the tone/colour
suggestions with the rule-based operators (``retouch.apply``). The neural critic (Qwen2.5-VL) and artist
(Qwen-Image-Edit) plug into the same ``Pipeline``.

``Pipeline.enhance`` returns the edited images and one ``EnhanceRecord`` per image: the critic's answer,
the executor parameters, conflicting suggestions, restoration ops that were suggested but not executed,
the photometric attributes before and after, and the rewards that need no reference image (compliance of
the edit with the image's own suggestions, the critic's format reward and, when the edit is re-scored, its
rank reward).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch

from spc_fast import photometric, retouch, rewards
from spc_fast.critic.analytic import AnalyticCritic, as_image_list
from spc_fast.critic.format import (
    NEUTRAL_PARAMETERS,
    TONE_OPS,
    CriticOutput,
    render,
    retouch_parameters,
    suggestion_phrase,
)

Images = torch.Tensor | Sequence[torch.Tensor]


@runtime_checkable
class Critic(Protocol):
    def critique(self, images: Images) -> list[CriticOutput]:
        """One answer per image of a (B, 3, H, W) batch or a list of (3, H, W) images."""
        ...


@runtime_checkable
class Artist(Protocol):
    def edit(self, images: Images, outputs: Sequence[CriticOutput]) -> list[torch.Tensor]:
        """Each image edited as its critic answer asks; (3, H, W) tensors of the input dtype."""
        ...


def executor_parameters(output: CriticOutput) -> tuple[dict[str, float], list[str]]:
    """``retouch.apply`` keyword values executing an answer's tone/colour suggestions, and its conflicts
    (``format.retouch_parameters``, which also clamps the temperature shift to the operator's range)."""
    return retouch_parameters(output.suggestions)


def _same_size_groups(images: Sequence[torch.Tensor], indices: Iterable[int]) -> list[list[int]]:
    # the given indices grouped by (shape, dtype, device): each group stacks into one batch
    groups: dict[tuple, list[int]] = {}
    for i in indices:
        groups.setdefault((tuple(images[i].shape), images[i].dtype, images[i].device), []).append(i)
    return list(groups.values())


class RuleArtist:
    """Executes tone/colour suggestions with ``retouch.apply`` (batched per image size, per-image parameters).

    Restoration, depth-of-field and bokeh suggestions are not executed (``EnhanceRecord.not_executed``).
    """

    def edit(self, images: Images, outputs: Sequence[CriticOutput]) -> list[torch.Tensor]:
        image_list = as_image_list(images)
        if len(outputs) != len(image_list):
            raise ValueError(f"got {len(outputs)} critic answers for {len(image_list)} images; pass one per image")
        params = [executor_parameters(o)[0] for o in outputs]
        edited: list[torch.Tensor | None] = [
            image if p == NEUTRAL_PARAMETERS else None for image, p in zip(image_list, params, strict=True)
        ]
        for indices in _same_size_groups(image_list, [i for i, e in enumerate(edited) if e is None]):
            batch = torch.stack([image_list[i] for i in indices])
            values = {
                op: torch.tensor([params[i][op] for i in indices], dtype=torch.float64) for op in TONE_OPS
            }
            out = retouch.apply(batch, **values)
            for i, image in zip(indices, out.unbind(0), strict=True):
                edited[i] = image
        return edited


@dataclass
class EnhanceRecord:
    """What the pipeline did to one image (``to_json`` for reports)."""

    critic_text: str | None
    critique: CriticOutput
    parameters: dict[str, float]
    conflicts: list[str]
    not_executed: list[str]
    attributes_before: dict[str, float]
    attributes_after: dict[str, float]
    rewards: dict[str, float]
    score_after: float | None = None

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["critique"] = {
            "reasoning": self.critique.reasoning,
            "suggestions": [suggestion_phrase(s) for s in self.critique.suggestions],
            "score": self.critique.score,
            "errors": list(self.critique.errors),
        }
        return out


@dataclass
class EnhanceResult:
    images: list[torch.Tensor]
    records: list[EnhanceRecord]


def _rendered(output: CriticOutput) -> str | None:
    try:
        return render(output)
    except ValueError:
        return None


def _attributes(images: list[torch.Tensor]) -> torch.Tensor:
    # per-image attributes [B, 4] of images of any sizes (one batched call per size)
    out = torch.empty(len(images), photometric.NUM_ATTRIBUTES)
    for indices in _same_size_groups(images, range(len(images))):
        out[indices] = photometric.attributes(torch.stack([images[i] for i in indices])).cpu()
    return out


class Pipeline:
    """Critic + artist. Defaults: ``AnalyticCritic()`` and ``RuleArtist()`` (no weights needed).

    rescore: run the critic again on the edits, for ``score_after`` and the rank reward (eq. 14).
    """

    def __init__(self, critic: Critic | None = None, artist: Artist | None = None, *, rescore: bool = True):
        self.critic = critic if critic is not None else AnalyticCritic()
        self.artist = artist if artist is not None else RuleArtist()
        self.rescore = rescore

    def _critique(self, images: list[torch.Tensor]) -> tuple[list[CriticOutput], torch.Tensor | None]:
        # A critic that measures the attributes anyway (the analytic one, through ``analyse``) hands them over,
        # so each image is measured once; any other critic gets its attributes measured here.
        analyse = getattr(self.critic, "analyse", None)
        if analyse is None:
            return self.critic.critique(images), None
        critiques = analyse(images)
        names = photometric.ATTRIBUTE_NAMES
        attributes = torch.tensor([[c.measured[name] for name in names] for c in critiques], dtype=torch.float32)
        return [c.output for c in critiques], attributes

    def enhance(self, images: Images) -> EnhanceResult:
        """Critique and edit images: a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        image_list = as_image_list(images)
        outputs, a_before = self._critique(image_list)
        edited = self.artist.edit(image_list, outputs)
        scores_after: list[float | None] = [None] * len(image_list)
        a_after = None
        if self.rescore:
            outputs_after, a_after = self._critique(edited)
            scores_after = [o.score for o in outputs_after]
            ranks = rewards.rank_reward([o.score for o in outputs], scores_after)
        a_before = _attributes(image_list) if a_before is None else a_before
        a_after = _attributes(edited) if a_after is None else a_after
        suggestions = [o.suggestions for o in outputs]
        compliance = rewards.compliance_from_attributes(a_before, a_after, suggestions)
        formats = rewards.format_reward(outputs)
        records = []
        for i, output in enumerate(outputs):
            params, conflicts = executor_parameters(output)
            reward_values = {"compliance": float(compliance[i]), "format": float(formats[i])}
            if self.rescore:
                reward_values["rank"] = float(ranks[i])
            names = photometric.ATTRIBUTE_NAMES
            records.append(
                EnhanceRecord(
                    critic_text=_rendered(output),
                    critique=output,
                    parameters=params,
                    conflicts=conflicts,
                    not_executed=[suggestion_phrase(s) for s in output.suggestions if s.op not in TONE_OPS],
                    attributes_before=dict(zip(names, a_before[i].tolist(), strict=True)),
                    attributes_after=dict(zip(names, a_after[i].tolist(), strict=True)),
                    rewards=reward_values,
                    score_after=scores_after[i],
                )
            )
        return EnhanceResult(images=edited, records=records)
