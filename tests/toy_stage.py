"""A tiny training stage for the trainer's own tests: residual MLP blocks learning a fixed random teacher over
synthetic token sequences of two lengths (two buckets), with or without a LoRA-style adapter on a frozen base.

It follows the Stage protocol the real stages follow: randomness inside ``loss`` (an input jitter) comes from a
generator seeded by (seed, step, sample id), never from the global RNG, so a step gives the same loss on any number of
ranks and after a resume. ``TOY_STAGE_SLEEP_S`` makes every loss call wait, so that a test can kill a run mid-way.
Run it from the command line as ``toy_stage:ToyStage`` with ``tests/`` on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from spc_fast.training.stage import StepLoss

WIDTH, FEATURES, OUTPUTS, DEPTH = 16, 8, 4, 3
LENGTHS = (4, 6)  # tokens per sample: the two buckets
RECORDS = 16
SLEEP_ENV = "TOY_STAGE_SLEEP_S"


@dataclass(frozen=True)
class ToyRecord:
    id: str
    index: int
    length: int


def _generator(*keys: int) -> torch.Generator:
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + key) % 2**63
    return torch.Generator().manual_seed(seed)


class ToyBlock(torch.nn.Module):
    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.norm = torch.nn.LayerNorm(WIDTH)
        self.up = torch.nn.Linear(WIDTH, 2 * WIDTH)
        self.down = torch.nn.Linear(2 * WIDTH, WIDTH)
        for layer in (self.up, self.down):
            torch.nn.init.normal_(layer.weight, std=layer.in_features**-0.5, generator=generator)
            torch.nn.init.zeros_(layer.bias)
        self.adapter_a = self.adapter_b = None

    def add_adapter(self, rank: int, generator: torch.Generator) -> None:
        """A low-rank update of ``up`` (B starts at zero: the output is unchanged until it trains)."""
        self.adapter_a = torch.nn.Parameter(torch.randn(rank, WIDTH, generator=generator) / rank**0.5)
        self.adapter_b = torch.nn.Parameter(torch.zeros(2 * WIDTH, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, WIDTH]
        h = self.norm(x)
        up = self.up(h)
        if self.adapter_a is not None:
            up = up + h @ self.adapter_a.T @ self.adapter_b.T
        return x + self.down(torch.nn.functional.gelu(up))


class ToyModel(torch.nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        generator = _generator(seed)
        self.embed = torch.nn.Linear(FEATURES, WIDTH)
        self.blocks = torch.nn.ModuleList(ToyBlock(generator) for _ in range(DEPTH))
        self.head = torch.nn.Linear(WIDTH, OUTPUTS)
        for layer, gain in ((self.embed, 1.0), (self.head, 0.1)):  # a small head: the first loss is about E[y²]
            torch.nn.init.normal_(layer.weight, std=gain * layer.in_features**-0.5, generator=generator)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, FEATURES] -> [B, L, OUTPUTS]
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h).clone()  # not a view of the matmul: FSDP warns about views it cannot hook


class ToyStage:
    name = "toy"

    def records(self, config) -> list[ToyRecord]:
        return [ToyRecord(f"toy-{i:02d}", i, LENGTHS[i % 2]) for i in range(RECORDS)]

    def build(self, config, device: torch.device) -> None:
        self.seed, self.model = config.seed, ToyModel(config.seed).to(device)
        if config.lora:
            self.model.requires_grad_(False)
            generator = _generator(config.seed, 1)
            for block in self.model.blocks:
                block.add_adapter(config.lora_rank, generator)
            self.model.to(device)
        teacher = _generator(1234)
        self.teacher = torch.randn(FEATURES, OUTPUTS, generator=teacher)

    def trainable(self) -> torch.nn.Module:
        return self.model

    def blocks(self) -> list[torch.nn.Module]:
        return list(self.model.blocks)

    def bucket(self, record: ToyRecord) -> int:
        return record.length

    def sample(self, record: ToyRecord) -> dict:
        x = torch.randn(record.length, FEATURES, generator=_generator(7, record.index))
        return {"index": record.index, "x": x, "y": torch.tanh(x @ self.teacher)}

    def collate(self, samples: list[dict]) -> dict:
        return {"index": torch.tensor([s["index"] for s in samples]), "x": torch.stack([s["x"] for s in samples]),
                "y": torch.stack([s["y"] for s in samples])}

    def loss(self, model: torch.nn.Module, batch: dict) -> StepLoss:
        if os.environ.get(SLEEP_ENV):
            time.sleep(float(os.environ[SLEEP_ENV]))
        x = batch["x"]
        jitter = torch.stack([torch.randn(x.shape[1:], generator=_generator(self.seed, self.step, int(i)))
                              for i in batch["index"].tolist()]).to(x.device)
        error = (model(x + 0.01 * jitter) - batch["y"]).square()  # [B, L, OUTPUTS]
        loss = error.mean()
        return StepLoss(loss, {"mse_first_output": error[..., 0].mean().detach()}, x.shape[0], x.shape[0] * x.shape[1])

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state_dict.items()}, directory / "toy.safetensors")

    def flops_per_sample(self, batch: dict) -> float:
        parameters = sum(p.numel() for p in self.model.parameters())
        return 6.0 * parameters * batch["x"].shape[1]
