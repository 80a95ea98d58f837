"""One training step of each supervised stage (``critic-sft``, ``artist-sft``, ``adapt``), as the trainer runs it.

Each stage's ``tiny`` preset trains for ``steps`` steps in this process on a data folder built by ``spc-fast data
build`` from scikit-image's bundled photos (square crops, ``--max-side 64``: one working size, one bucket); the rows
are read back from the run's ``metrics.jsonl``, the first two steps left out as warm-up (allocator, H_c cache fill
for ``adapt``). p20/p50/p80 are of the whole step (data + forward/backward + optimizer); the note holds the median
split, samples/s, tokens/s and, on CUDA, model FLOPs utilisation against the device's bf16 peak
(``spc_fast.training.metrics.peak_flops``). Peak memory: CUDA's peak allocated, or the process's resident high-water
mark on the CPU (it includes the interpreter and every model loaded so far, so it only grows down the rows).

There is no baseline library to compare with in the same run; the release-width rows (a GPU, a stated layer count)
are the ones that carry the MFU goal (bench/RESULTS.md).

    python -m spc_fast.bench.train_step [--steps 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from spc_fast import imagefiles
from spc_fast.bench.harness import Row, environment, format_table, write_json

BASELINES: tuple[str, ...] = ()
ERROR_KIND = "none (the stages' numerics are tested in tests/test_training_stages.py)"
STAGES = ("critic-sft", "artist-sft", "adapt")
WARMUP_STEPS = 2


def _data(root: Path, pairs: int) -> Path:
    import skimage.data

    from spc_fast.training.data.build import build

    photos = root / "photos"
    photos.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        pixels = np.asarray(getattr(skimage.data, name)())
        side = min(pixels.shape[:2])
        imagefiles.save_image(photos / f"{name}.png", torch.from_numpy(pixels[:side, :side].copy()).permute(2, 0, 1))
    build(photos, root / "data", pairs=pairs, seed=0, max_side=64)
    return root / "data"


def _train(stage: str, data: Path, run: Path, steps: int, device: torch.device) -> list[dict]:
    from spc_fast.training.config import train_config
    from spc_fast.training.stages import STAGES as REGISTRY
    from spc_fast.training.trainer import Trainer

    overrides = [f"data={data}", f"out={run}", f"steps={steps}", f"checkpoint_every={steps}", f"device={device}",
                 f"critic.device={device}", f"artist.device={device}"]
    Trainer(REGISTRY[stage](), train_config(stage, "tiny", overrides)).run()
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _row(stage: str, lines: list[dict], batch: int) -> Row:
    timed = lines[WARMUP_STEPS:] or lines
    totals = [1e3 * (m["time_data_s"] + m["time_fwd_bwd_s"] + m["time_optim_s"]) for m in timed]
    p20, p50, p80 = np.percentile(totals, [20, 50, 80]).tolist()

    def median(key: str) -> float:
        return statistics.median(float(m[key]) for m in timed)

    split = "/".join(f"{1e3 * median(k):.0f}" for k in ("time_data_s", "time_fwd_bwd_s", "time_optim_s"))
    note = (f"data/fwd-bwd/optim {split} ms, {median('samples_per_s'):.2f} samples/s, "
            f"{median('tokens_per_s'):.0f} tokens/s, peak memory: {timed[-1].get('peak_mem_kind', '?')}")
    if timed[-1].get("mfu") is not None:
        note += f", MFU {100 * median('mfu'):.1f} %"
    peak = max(float(m["peak_mem_bytes"]) for m in timed)
    return Row(bench="train_step", case=f"tiny {stage}, batch {batch}/rank", provider="spc-fast trainer",
               p20_ms=p20, p50_ms=p50, p80_ms=p80, peak_memory_mib=peak / 2**20, note=note)


def run(device: torch.device, quick: bool = False, *, steps: int | None = None,
        stages: tuple[str, ...] = STAGES) -> list[Row]:
    """One row per stage of its tiny preset's step time (quick: 4 steps, else 10)."""
    from spc_fast.training.config import preset

    steps = steps or (4 if quick else 10)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spc-fast-train-step-") as tmp:
        data = _data(Path(tmp), pairs=8)
        for stage in stages:
            lines = _train(stage, data, Path(tmp) / stage, steps, device)
            rows.append(_row(stage, lines, preset(stage, "tiny").batch_size))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spc_fast.bench.train_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="steps per stage (the first two are warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=STAGES, action="append", help="run only this stage (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the environment as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = run(device, steps=args.steps, stages=tuple(args.only or STAGES))
    print(format_table(rows))
    if args.json:
        write_json(args.json, environment(device), {"steps": args.steps}, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
