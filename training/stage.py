"""What a training stage gives the trainer: its models, its data pipeline and its loss (``Stage``), and what one
micro-batch's loss reports (``StepLoss``).

The trainer owns everything a stage should not have to think about: ranks, sharding, precision, accumulation,
clipping, the optimizer, checkpoints, metrics and stopping. A stage draws its randomness (flow timesteps, noise) per
sample from a generator seeded by (seed, step, sample id) — never from the global RNG — so that a step's result does
not depend on the number of ranks or on a resume; the trainer sets ``stage.step`` before each ``loss`` call.

The trainer moves every tensor of a collated batch (in nested dicts, lists, tuples) to the device before ``loss``.
A stage may also define ``records(config) -> Sequence`` to supply or filter its own records (synthetic data, only
the records with a target); without it the trainer reads the manifest at ``config.data``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from spc_fast.training.config import TrainConfig
    from spc_fast.training.data.manifest import Record


@dataclass
class StepLoss:
    """One micro-batch's loss: ``loss`` is the differentiable mean over the micro-batch's samples; ``terms`` are
    detached scalars logged beside it; ``tokens`` counts what the model processed (critic: text + image tokens,
    artist: image tokens)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    samples: int
    tokens: int


class Stage(Protocol):
    """A training stage (``spc_fast.training.stages.STAGES`` maps the command line's names to these classes)."""

    name: str

    def build(self, config: TrainConfig, device: torch.device) -> None:
        """Load the models, add LoRA, freeze what is not trained."""

    def trainable(self) -> torch.nn.Module:
        """The module the optimizer, FSDP/DDP and the checkpoints handle."""

    def blocks(self) -> list[torch.nn.Module]:
        """Its transformer blocks: the FSDP units and the activation-checkpointing units."""

    def bucket(self, record: Record) -> Hashable:
        """The working size the record's batch will have (a batch holds records of one bucket)."""

    def sample(self, record: Record) -> dict:
        """One training sample, on the CPU in a loader worker: decode, resize, tokenise."""

    def collate(self, samples: list[dict]) -> dict:
        """A batch from samples of one bucket."""

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        """The micro-batch's loss; ``model`` is ``trainable()`` as wrapped (FSDP in place, or a DDP wrapper)."""

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """On rank 0: write the trained weights in the release layout from the full, unsharded trainable state dict."""

    def flops_per_sample(self, batch: dict) -> float:
        """Model FLOPs per sample of ``batch`` for a forward and backward pass (6·N·tokens style), for MFU."""


STAGE_METHODS = ("build", "trainable", "blocks", "bucket", "sample", "collate", "loss", "export", "flops_per_sample")


def stack_samples(samples: list[dict]) -> dict:
    """A batch of one bucket's samples: tensors stacked (one size), everything else as lists."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return batch


def check_stage(stage: object) -> None:
    """Raise a ValueError naming what ``stage`` lacks of the Stage protocol (before any model loads)."""
    missing = [name for name in STAGE_METHODS if not callable(getattr(stage, name, None))]
    if not isinstance(getattr(stage, "name", None), str):
        missing.insert(0, "name")
    if missing:
        raise ValueError(f"{type(stage).__name__} is not a training stage: it lacks {', '.join(missing)}")
