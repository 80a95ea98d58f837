"""How close the editor brings constructed inputs to their originals, against the obvious baselines (quality).

The bundled photographs are the originals (as in ``enhance_quality``). From each, ``--pairs`` inputs of each kind are
made by the training-data synthesis (``spc_fast.training.data.synthesis``, seeded per photo and pair): ``retouch``
(1-3 tone/colour perturbations at the critic's steps), ``restore`` (one degradation of ``spc_fast.degrade``:
blur, motion blur, haze, noise, low light or JPEG) and ``stack`` (1-2 perturbations, then a degradation). Every
method edits every input, its output is rounded to 8 bits (as a saved file would be) and scored against the
original with ``spc-fast evaluate``'s metrics (``spc_fast.evaluate``): PSNR, SSIM and mean ΔE2000 (scikit-image's
definitions), plus LPIPS and DISTS when their weights are in the weights folder.

Methods, all measured in the same run on the same inputs:

- ``identity``: the input unchanged (how far the construction moved the photo).
- ``gray-world``: each channel scaled so its mean equals the mean of the three channel means (sRGB values).
- ``auto-levels``: each channel stretched so its 0.5th and 99.5th percentiles map to 0 and 1
  (``skimage.exposure.rescale_intensity``).
- ``pipeline``: ``spc-fast enhance``'s pipeline: analytic critic + rule executor, or the neural critic and artist
  with ``--critic DIR --artist DIR``.
- ``executor + truth``: the rule executor running the pair's ground-truth corrective suggestions (the ceiling of the
  rule executor: restoration suggestions are not executed by it).

The analytic critic's limits and targets were tuned on the reference photos (``spc_fast/critic/rules.py``); the
held-out photo (``enhance_quality.HELD_OUT``) took no part in any tuning and is reported separately.

``python -m spc_fast.bench.edit_quality [--pairs N] [--size PX] [--critic DIR --artist DIR] [--json FILE]``
(defaults: 3 pairs of each kind per photo, photos area-resized to 256 px on the long side).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spc_fast import retouch
from spc_fast.bench.enhance_quality import HELD_OUT, REFERENCES, load_photos
from spc_fast.evaluate import METRICS, build_scorers, weights_folder
from spc_fast.evaluate.weights import require
from spc_fast.images import from_unit_float, to_unit_float
from spc_fast.pipeline import Pipeline
from spc_fast.training.data.synthesis import KINDS, corrective_parameters, pair_generator, synthesise

ALL_PHOTOS = REFERENCES + HELD_OUT
BASE_METRICS = ("psnr", "ssim", "deltae")
OPTIONAL_METRICS = ("lpips", "dists")  # scored when their weights are in the weights folder
STRETCH_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class ConstructedPair:
    photo: str
    kind: str
    index: int
    input: torch.Tensor  # uint8 [3, H, W]
    target: torch.Tensor  # uint8 [3, H, W], the original photo
    suggestions: tuple[str, ...]  # the ground-truth corrective suggestions


def constructed_pairs(photos: dict[str, torch.Tensor], per_kind: int, seed: int = 0) -> list[ConstructedPair]:
    """``per_kind`` pairs of each kind per photo; pair (photo, kind, j) always draws the same stream, whichever
    photos are in the run."""
    pairs = []
    for name, photo in photos.items():
        target = from_unit_float(photo, torch.uint8)
        for k, kind in enumerate(KINDS):
            for j in range(per_kind):
                index = (ALL_PHOTOS.index(name) * len(KINDS) + k) * 1000 + j
                made = synthesise(target, kind, pair_generator(seed, index))
                pairs.append(ConstructedPair(name, kind, index, made.image, target, made.suggestions))
    return pairs


def gray_world(image: torch.Tensor) -> torch.Tensor:
    """Gray-world white balance: channel means made equal (float [3, H, W] in [0, 1])."""
    means = image.mean(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return (image * (means.mean() / means)).clamp(0, 1)


def auto_levels(image: torch.Tensor) -> torch.Tensor:
    """Per-channel percentile stretch (``STRETCH_PERCENTILES`` to 0 and 1), scikit-image's rescale_intensity."""
    from skimage.exposure import rescale_intensity

    channels = []
    for channel in image.double().numpy():
        low, high = np.percentile(channel, STRETCH_PERCENTILES)
        stretched = rescale_intensity(channel, in_range=(low, high), out_range=(0.0, 1.0)) if high > low else channel
        channels.append(stretched)
    return torch.from_numpy(np.stack(channels)).float()


def executor_with_truth(image: torch.Tensor, suggestions: tuple[str, ...]) -> torch.Tensor:
    """The rule executor running the ground-truth suggestions (tone and colour only; restoration is not executed)."""
    return retouch.apply(image, **corrective_parameters(suggestions))


def methods(pipeline: Pipeline) -> dict[str, Callable[[list[torch.Tensor], list[ConstructedPair]], list]]:
    """Method name -> (float inputs, their pairs) -> float outputs."""
    return {
        "identity": lambda images, pairs: images,
        "gray-world": lambda images, pairs: [gray_world(x) for x in images],
        "auto-levels": lambda images, pairs: [auto_levels(x) for x in images],
        "pipeline": lambda images, pairs: pipeline.enhance(images).images,
        "executor + truth": lambda images, pairs: [
            executor_with_truth(x, p.suggestions) for x, p in zip(images, pairs, strict=True)
        ],
    }


def available_metrics(folder: Path) -> list[str]:
    """The base metrics, and the optional ones whose weights are in ``folder``."""
    names = list(BASE_METRICS)
    for name in OPTIONAL_METRICS:
        try:
            require(name, folder)
        except FileNotFoundError:
            continue
        names.append(name)
    return names


def score_methods(pairs: list[ConstructedPair], pipeline: Pipeline, metric_names: list[str]) -> list[dict]:
    """One row per (pair, method): the pair, the method, each metric's value, the method's seconds per image."""
    device = torch.device("cpu")
    scorers = build_scorers([METRICS[n] for n in metric_names], device, weights_folder())
    inputs = [to_unit_float(p.input) for p in pairs]
    rows = []
    for method, edit in methods(pipeline).items():
        start = time.perf_counter()
        outputs = edit(inputs, pairs)
        seconds = (time.perf_counter() - start) / len(pairs)
        for pair, output in zip(pairs, outputs, strict=True):
            pred = from_unit_float(output.clamp(0, 1), torch.uint8).float()[None]
            ref = pair.target.float()[None]
            values = {name: float(scorers[name](pred, ref)[0]) for name in metric_names}
            rows.append(
                {
                    "photo": pair.photo,
                    "kind": pair.kind,
                    "index": pair.index,
                    "method": method,
                    "suggestions": list(pair.suggestions),
                    "seconds": seconds,
                    **values,
                }
            )
    return rows


def _cell(rows: list[dict], metric_names: list[str]) -> str:
    means = []
    for name in metric_names:
        value = statistics.fmean(r[name] for r in rows)
        means.append(f"{value:.2f}" if name == "psnr" else f"{value:.3f}" if name != "deltae" else f"{value:.2f}")
    return " / ".join(means)


def markdown_table(rows: list[dict], metric_names: list[str]) -> str:
    """Methods down, kinds (and all) across; each cell the means of the metrics in ``metric_names`` order."""
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    counts = {k: len({(r["photo"], r["index"]) for r in rows if r["kind"] == k}) for k in kinds}
    header = [f"{k} ({counts[k]})" for k in kinds] + [f"all ({sum(counts.values())})"]
    lines = [f"| method | {' | '.join(header)} |", "|---" * (len(header) + 1) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        own = [r for r in rows if r["method"] == method]
        cells = [_cell([r for r in own if r["kind"] == k], metric_names) for k in kinds] + [_cell(own, metric_names)]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def build_pipeline(critic: str | None, artist: str | None) -> Pipeline:
    if critic is None and artist is None:
        return Pipeline(rescore=False)
    from spc_fast.config import resolve

    config = resolve("analytic")
    config = dataclasses.replace(
        config,
        critic=dataclasses.replace(config.critic, weights=critic),
        artist=dataclasses.replace(config.artist, weights=artist),
    )
    return Pipeline.from_config(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spc_fast.bench.edit_quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pairs", type=int, default=3, help="pairs of each kind per photo (default 3)")
    parser.add_argument(
        "--size", type=int, default=256, help="resize photos to this long side, 0: as bundled (default 256)"
    )
    parser.add_argument("--seed", type=int, default=0, help="synthesis seed (default 0)")
    parser.add_argument("--critic", help="neural critic weights (release layout, or 'tiny')")
    parser.add_argument("--artist", help="neural artist weights (needs --critic; or 'tiny')")
    parser.add_argument("--json", metavar="FILE", help="write every scored row as JSON")
    args = parser.parse_args(argv)
    from spc_fast.bench.harness import environment

    env = environment(torch.device("cpu"))
    pipeline = build_pipeline(args.critic, args.artist)
    metric_names = available_metrics(weights_folder())
    label = "analytic critic + rule executor" if args.critic is None else f"critic {args.critic}, artist {args.artist}"
    print(
        f"device: {env['device']}  commit: {env['git_commit']}  size: {args.size or 'as bundled'} px  pipeline: {label}"
    )
    print(f"cells: mean {' / '.join(metric_names)} (PSNR dB and SSIM higher is better; ΔE2000 lower)")
    payload = {"environment": env, "config": vars(args), "metrics": metric_names, "splits": {}}
    for split, names in (("tuning photos", REFERENCES), ("held out", HELD_OUT)):
        pairs = constructed_pairs(load_photos(names, args.size or None), args.pairs, args.seed)
        rows = score_methods(pairs, pipeline, metric_names)
        print(f"\n{split}: {', '.join(n.split('.')[0] for n in names)}\n")
        print(markdown_table(rows, metric_names))
        payload["splits"][split] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
