"""The two roles of the editor and what passes between them: a ``Critic`` judges images into a ``Judgement``, an
``Artist`` edits images as a judgement asks.

Critics: ``AnalyticCritic`` (weight-free; measures the attributes on the way) and ``ImageCritic`` (Qwen2.5-VL; hands
over its reasoning latent H_c). Artists: ``RuleArtist`` (the retouch operators) and ``DiffusionArtist``
(Qwen-Image-Edit conditioned on H_c). Any critic drives the rule artist; the diffusion artist needs H_c.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from spc_fast.critic.vocabulary import CriticOutput

Images = torch.Tensor | Sequence[torch.Tensor]  # a (B, 3, H, W) batch or (3, H, W) images of any sizes


@dataclass
class Judgement:
    """A critic's answers for a batch of B images, with what it computed on the way.

    texts: each answer as written (the analytic critic renders its own); outputs: each answer parsed;
    hidden, mask: H_c [B, S, D] right-padded and its mask [B, S] (neural critic); attributes: the photometric
    attributes [B, 4] of the images (analytic critic, which measures them anyway).
    """

    texts: list[str]
    outputs: list[CriticOutput]
    hidden: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    attributes: torch.Tensor | None = None
    truncated: list[bool] = field(default_factory=list)  # answers cut off by the token limit (neural critic)

    def __post_init__(self) -> None:
        n = len(self.outputs)
        if len(self.texts) != n:
            raise ValueError(f"a judgement needs one text per answer, got {len(self.texts)} for {n}")
        if (self.hidden is None) != (self.mask is None):
            raise ValueError("H_c and its mask come together: pass both hidden and mask, or neither")
        if self.hidden is not None and (self.hidden.shape[0] != n or self.mask.shape != self.hidden.shape[:2]):
            raise ValueError(f"H_c must be [B={n}, S, D] with a [B, S] mask, got {tuple(self.hidden.shape)} and "
                             f"{tuple(self.mask.shape)}")
        if self.attributes is not None and self.attributes.shape[0] != n:
            raise ValueError(f"attributes must be [B={n}, 4], got {tuple(self.attributes.shape)}")
        if not self.truncated:
            self.truncated = [False] * n
        if len(self.truncated) != n:
            raise ValueError(f"a judgement needs one truncation flag per answer, got {len(self.truncated)} for {n}")

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def scores(self) -> torch.Tensor:
        """(B,) float32 parsed scores in [0, 100], NaN where an answer has none."""
        return torch.tensor([float("nan") if o.score is None else o.score for o in self.outputs], dtype=torch.float32)

    def select(self, indices: Sequence[int]) -> Judgement:
        """The judgement of the images at ``indices`` (H_c cut to their longest row)."""
        if not indices:
            raise ValueError("select needs at least one index")
        hidden = mask = None
        if self.hidden is not None:
            rows = torch.as_tensor(list(indices), device=self.hidden.device)
            mask = self.mask[rows]
            width = int(mask.sum(1).max())
            hidden, mask = self.hidden[rows, :width], mask[:, :width]
        return Judgement(
            texts=[self.texts[i] for i in indices],
            outputs=[self.outputs[i] for i in indices],
            hidden=hidden,
            mask=mask,
            attributes=None if self.attributes is None else self.attributes[list(indices)],
            truncated=[self.truncated[i] for i in indices],
        )


@runtime_checkable
class Critic(Protocol):
    def critique(self, images: Images) -> Judgement:
        """One answer per image of a (B, 3, H, W) batch or a list of (3, H, W) images of any sizes."""
        ...


@runtime_checkable
class Artist(Protocol):
    executes: frozenset[str]  # the critic ops (``critic.vocabulary.OPS``) this artist carries out
    last_full_res: list[str]  # per image of the last ``edit``: how it reached its input size (FULL_RES, or "none")

    def edit(self, images: Images, judgement: Judgement) -> list[torch.Tensor]:
        """Each image edited as its answer in ``judgement`` asks: (3, H, W) tensors of the input size and dtype."""
        ...
