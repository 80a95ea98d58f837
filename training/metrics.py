"""What a run reports: ``RUN/metrics.jsonl`` (one line per step), TensorBoard events when ``tensorboard`` is
installed, and a progress bar with ETA on rank 0.

Per-rank values are combined over the ranks before they are written: the loss and its terms are the mean over ranks
(each rank's value is the mean over its micro-batches, so this is the objective the step optimised); samples, tokens
and FLOPs are summed; times and peak memory are the slowest rank's. ``peak_mem_bytes`` is CUDA's peak allocated memory
on a GPU and the process's resident-set high-water mark on the CPU (``peak_mem_kind`` says which).
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from spc_fast.training.distributed import World, all_reduce

METRICS = "metrics.jsonl"
PEAK_FLOPS_ENV = "SPC_FAST_PEAK_FLOPS"  # the accelerator's dense bf16 peak, FLOP/s, where the table lacks it
# Dense bf16 tensor-core peaks from the vendors' data sheets (no sparsity), by device name.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "B200": 2250e12, "L40S": 362e12}


def peak_memory(device: torch.device) -> tuple[int, str]:
    """The peak memory of this rank so far, in bytes, and what was measured."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_allocated"
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return kilobytes * 1024, "cpu_max_rss"


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when unknown (no MFU is reported then)."""
    if device.type != "cuda":
        return None
    if os.environ.get(PEAK_FLOPS_ENV):
        return float(os.environ[PEAK_FLOPS_ENV])
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def combine(world: World, *, means: dict[str, float], sums: dict[str, float], maxes: dict[str, float]) -> dict:
    """The values of every rank combined (two all-reduces); every rank gets the result. Keys must agree across
    ranks."""
    names = sorted(means) + sorted(sums)
    device = world.device if world.device.type == "cuda" else torch.device("cpu")
    totals = torch.tensor([means[k] for k in sorted(means)] + [sums[k] for k in sorted(sums)], dtype=torch.float64,
                          device=device)
    largest = torch.tensor([maxes[k] for k in sorted(maxes)], dtype=torch.float64, device=device)
    totals, largest = all_reduce(totals, "sum").tolist(), all_reduce(largest, "max").tolist()
    out = {name: value / world.size if name in means else value for name, value in zip(names, totals, strict=True)}
    out.update(zip(sorted(maxes), largest, strict=True))
    return out


def truncate(path: Path, step: int) -> None:
    """Keep only the lines of steps up to ``step`` (a resumed run writes the later ones again); a line cut short by
    a kill is dropped. Atomic."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(kept), encoding="utf-8")
    os.replace(temporary, path)


def _tensorboard_writer(run: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(run / "tensorboard"))


class MetricsLog:
    """Rank 0 writes; the other ranks only take part in ``combine``."""

    def __init__(self, run: Path, world: World, *, steps: int, start_step: int, log_every: int, description: str):
        self.world, self.log_every = world, log_every
        self.file = self.writer = self.bar = None
        if not world.main:
            return
        path = run / METRICS
        truncate(path, start_step)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's lifetime
        self.writer = _tensorboard_writer(run)
        from tqdm import tqdm

        self.bar = tqdm(total=steps, initial=start_step, desc=description, unit="step", file=sys.stderr,
                        dynamic_ncols=True, mininterval=1.0)

    def write(self, record: dict[str, Any]) -> None:
        """One step's line; the bar moves, TensorBoard gets the scalars every ``log_every`` steps."""
        if not self.world.main:
            return
        self.file.write(json.dumps(record, allow_nan=True) + "\n")
        self.file.flush()
        step = record["step"]
        if self.writer is not None and step % self.log_every == 0:
            for key, value in _scalars(record):
                self.writer.add_scalar(key, value, step)
        self.bar.update(1)
        if step % self.log_every == 0:
            self.bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}", refresh=False)

    def close(self) -> None:
        for thing in (self.bar, self.writer, self.file):
            if thing is not None:
                thing.close()
        self.file = self.writer = self.bar = None


def _scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    out = []
    for key, value in record.items():
        if isinstance(value, dict):
            out += [(f"{key}/{k}", v) for k, v in value.items() if isinstance(v, (int, float))]
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            out.append((key, value))
    return [(k, v) for k, v in out if math.isfinite(v)]
