"""The enhancer: a critic judges each image, an artist executes its judgement (``roles``).

``Pipeline()`` needs no weights: the ``AnalyticCritic`` and the ``RuleArtist``. ``Pipeline.from_config`` builds the
neural parts a ``PipelineConfig`` names (the Qwen2.5-VL ``ImageCritic``, the Qwen-Image-Edit ``DiffusionArtist``);
the neural critic may also drive the rule artist.

``enhance`` returns the edited images and one ``EnhanceRecord`` per image: the critic's answer, the executor
parameters, conflicting suggestions, restoration ops that were suggested but not executed, how the edit reached the
input size (``full_res``), the photometric attributes before and after, and the rewards that need no reference image
(compliance of the edit with the image's own suggestions, the critic's format reward and, when the edit is re-scored,
its rank reward).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from spc_fast import photometric, rewards
from spc_fast.artists import DiffusionArtist, RuleArtist
from spc_fast.config import PipelineConfig
from spc_fast.critic.analytic import AnalyticCritic
from spc_fast.critic.format import suggestion_phrase
from spc_fast.critic.vocabulary import CriticOutput
from spc_fast.executor import retouch_parameters
from spc_fast.images import as_image_list
from spc_fast.roles import Artist, Critic, Images


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
    truncated: bool = False
    full_res: str = "none"  # how the edit reached the input size: "transfer", "resize", or "none" (edited there)

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


class Pipeline:
    """Critic + artist (defaults: ``AnalyticCritic()`` and ``RuleArtist()``, no weights needed).

    rescore: run the critic again on the edits, for ``score_after`` and the rank reward (eq. 14). With the neural
    critic that is a second generation per image, so it is off by default.
    """

    def __init__(
        self, critic: Critic | None = None, artist: Artist | None = None, *, rescore: bool = PipelineConfig.rescore
    ):
        self.critic = critic if critic is not None else AnalyticCritic()
        self.artist = artist if artist is not None else RuleArtist()
        self.rescore = rescore

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Pipeline:
        """The critic and artist that ``config`` names (``weights`` None: the analytic critic / rule artist)."""
        critic: Critic = AnalyticCritic()
        artist: Artist = RuleArtist()
        if config.critic.weights is not None or config.artist.weights is not None:
            from spc_fast.models import factory

            # an engine's artist loads in seconds (VAE and manifest, no DiT): its mismatches are reported before the
            # critic's minutes of loading; without one the critic, the smaller model, loads first
            engine_first = config.artist.engine is not None
            if engine_first:
                artist = DiffusionArtist(factory.build_artist(config.artist))
            critic = factory.build_critic(config.critic)
            if config.artist.weights is not None and not engine_first:
                artist = DiffusionArtist(factory.build_artist(config.artist))
        return cls(critic, artist, rescore=config.rescore)

    def enhance(self, images: Images) -> EnhanceResult:
        """Critique and edit images: a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        image_list = as_image_list(images)
        before = self.critic.critique(image_list)
        edited = self.artist.edit(image_list, before)
        full_res = list(self.artist.last_full_res)
        executes = self.artist.executes
        outputs = before.outputs
        scores_after: list[float | None] = [None] * len(image_list)
        a_after = None
        if self.rescore:
            after = self.critic.critique(edited)
            a_after = after.attributes
            scores_after = [o.score for o in after.outputs]
            ranks = rewards.rank_reward([o.score for o in outputs], scores_after)
        a_before = photometric.attributes_of(image_list) if before.attributes is None else before.attributes
        a_after = photometric.attributes_of(edited) if a_after is None else a_after
        compliance = rewards.compliance_from_attributes(a_before, a_after, [o.suggestions for o in outputs])
        formats = rewards.format_reward(outputs)
        names = photometric.ATTRIBUTE_NAMES
        records = []
        for i, output in enumerate(outputs):
            params, conflicts = retouch_parameters(output.suggestions)
            reward_values = {"compliance": float(compliance[i]), "format": float(formats[i])}
            if self.rescore:
                reward_values["rank"] = float(ranks[i])
            records.append(
                EnhanceRecord(
                    critic_text=before.texts[i],
                    critique=output,
                    parameters=params,
                    conflicts=conflicts,
                    not_executed=[suggestion_phrase(s) for s in output.suggestions if s.op not in executes],
                    attributes_before=dict(zip(names, a_before[i].tolist(), strict=True)),
                    attributes_after=dict(zip(names, a_after[i].tolist(), strict=True)),
                    rewards=reward_values,
                    score_after=scores_after[i],
                    truncated=before.truncated[i],
                    full_res=full_res[i],
                )
            )
        return EnhanceResult(images=edited, records=records)
