"""The enhancer: a critic judges each image, an artist executes its suggestions.

Critic and artist are interchangeable behind two small protocols. The default pair needs no weights: the
``AnalyticCritic`` (``spc_fast.critic.analytic``) and the ``RuleArtist``, which executes the tone/colour
suggestions with the rule-based operators (``retouch.apply``). The neural pair plugs into the same ``Pipeline``:
the Qwen2.5-VL ``ImageCritic`` hands its answers and its hidden states H_c over, and the ``DiffusionArtist``
edits with the Qwen-Image-Edit ``PhotoArtist`` conditioned on H_c (``spc_fast.models`` loads both). The neural
critic may also drive the ``RuleArtist``.

``Pipeline.enhance`` returns the edited images and one ``EnhanceRecord`` per image: the critic's answer,
the executor parameters, conflicting suggestions, restoration ops that were suggested but not executed,
the photometric attributes before and after, and the rewards that need no reference image (compliance of
the edit with the image's own suggestions, the critic's format reward and, when the edit is re-scored, its
rank reward).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

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
from spc_fast.images import from_unit_float

Images = torch.Tensor | Sequence[torch.Tensor]
Conditioning = tuple[torch.Tensor, torch.Tensor]  # H_c [B, S, D] right-padded and its mask [B, S]


@runtime_checkable
class Critic(Protocol):
    def critique(self, images: Images):
        """One answer per image of a (B, 3, H, W) batch or a list of (3, H, W) images: a list of
        ``CriticOutput``, or (the neural critic) an object with ``outputs`` and H_c as ``hidden`` and ``mask``."""
        ...


@runtime_checkable
class Artist(Protocol):
    def edit(
        self, images: Images, outputs: Sequence[CriticOutput], conditioning: Conditioning | None = None
    ) -> list[torch.Tensor]:
        """Each image edited as its critic answer (and, for a neural artist, H_c) asks; (3, H, W) tensors of
        the input size and dtype."""
        ...


@dataclass
class Judgement:
    """The critic's answers for a batch, with what it computed on the way."""

    outputs: list[CriticOutput]
    attributes: torch.Tensor | None = None  # [B, 4], when the critic measured them (the analytic one)
    conditioning: Conditioning | None = None  # H_c, when the critic is a neural one


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

    def edit(
        self, images: Images, outputs: Sequence[CriticOutput], conditioning: Conditioning | None = None
    ) -> list[torch.Tensor]:
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


def image_seed(image: torch.Tensor, seed: int) -> int:
    """A 63-bit seed from ``seed`` and the image's bytes (blake2b): distinct images get distinct noise."""
    data = image.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
    digest = hashlib.blake2b(seed.to_bytes(8, "little", signed=True) + data, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DiffusionArtist:
    """Edits with a ``PhotoArtist`` (Qwen-Image-Edit) conditioned on the neural critic's H_c: images of one size go
    through the sampler as one batch (generated at about ``target_pixels``, sides multiples of 16) and come back at
    their input size and dtype. Each image's noise is seeded by ``image_seed(image, seed)``, so an image gets the
    same edit whatever batch or order it comes in (the command line enhances file by file)."""

    def __init__(self, artist, *, num_steps: int = 20, target_pixels: int | None = None, seed: int = 0) -> None:
        from spc_fast.artist.sampler import DEFAULT_PIXELS

        self.artist = artist
        self.num_steps = num_steps
        self.target_pixels = target_pixels or DEFAULT_PIXELS
        self.seed = seed

    def edit(
        self, images: Images, outputs: Sequence[CriticOutput], conditioning: Conditioning | None = None
    ) -> list[torch.Tensor]:
        image_list = as_image_list(images)
        if conditioning is None:
            raise ValueError(
                "the diffusion artist is conditioned on a neural critic's hidden states (H_c); pair it with the "
                "ImageCritic (spc-fast enhance --critic DIR --artist DIR)"
            )
        hidden, mask = conditioning
        if len(outputs) != len(image_list) or hidden.shape[0] != len(image_list):
            raise ValueError(f"got {len(outputs)} answers and {hidden.shape[0]} H_c rows for {len(image_list)} images")
        edited: list[torch.Tensor | None] = [None] * len(image_list)
        for indices in _same_size_groups(image_list, range(len(image_list))):
            rows = torch.tensor(indices, device=hidden.device)
            width = int(mask[rows].sum(1).max())  # the group's longest H_c
            batch = torch.stack([image_list[i] for i in indices])
            out = self.artist.edit(
                batch,
                hidden[rows, :width],
                mask[rows, :width],
                num_steps=self.num_steps,
                target_pixels=self.target_pixels,
                generator=[torch.Generator().manual_seed(image_seed(image_list[i], self.seed)) for i in indices],
            ).images
            if out.shape[-2:] != batch.shape[-2:]:
                out = F.interpolate(out, size=batch.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
            out = from_unit_float(out.clamp(0, 1).to(batch.device), batch.dtype)
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

    def judge(self, images: list[torch.Tensor]) -> Judgement:
        """The critic's answers. A critic that measures the attributes anyway (the analytic one, through
        ``analyse``) hands them over, so each image is measured once; a neural critic hands over H_c."""
        analyse = getattr(self.critic, "analyse", None)
        if analyse is not None:
            critiques = analyse(images)
            names = photometric.ATTRIBUTE_NAMES
            measured = [[c.measured[name] for name in names] for c in critiques]
            return Judgement([c.output for c in critiques], torch.tensor(measured, dtype=torch.float32))
        answer = self.critic.critique(images)
        hidden = getattr(answer, "hidden", None)
        if hidden is None:
            return Judgement(list(answer))
        return Judgement(list(answer.outputs), conditioning=(hidden, answer.mask))

    def enhance(self, images: Images) -> EnhanceResult:
        """Critique and edit images: a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        image_list = as_image_list(images)
        before = self.judge(image_list)
        outputs = before.outputs
        edited = self.artist.edit(image_list, outputs, before.conditioning)
        scores_after: list[float | None] = [None] * len(image_list)
        a_after = None
        if self.rescore:
            after = self.judge(edited)
            a_after = after.attributes
            scores_after = [o.score for o in after.outputs]
            ranks = rewards.rank_reward([o.score for o in outputs], scores_after)
        a_before = _attributes(image_list) if before.attributes is None else before.attributes
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
