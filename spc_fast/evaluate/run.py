"""An evaluation: pairs in, batches scored on the device by every metric, per-image values and summaries out.

Within a batch, images of one size are stacked and scored together (``images.same_size_groups``); sets of mixed
sizes are scored group by group. A pair that cannot be scored (missing partner, size mismatch, undecodable file,
smaller than a metric's window) stops the run with its file named, or with ``skip_bad`` is left out and listed.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spc_fast.evaluate.metrics import Metric, build_scorers
from spc_fast.evaluate.pairs import EvaluationError, LoadedPair, Pair, Problem, batches
from spc_fast.images import same_size_groups

MAX_LISTED = 10


@dataclass
class Report:
    """What an evaluation measured. ``metrics``: name -> {"mean", "median", "count"} (FID: its value as the
    mean, no median, the pair count); ``per_image``: image name -> {metric: value} for per-image metrics;
    ``files``: image name -> the prediction's path; ``skipped``: the pairs left out (``skip_bad``)."""

    metrics: dict[str, dict[str, float | int | None]]
    per_image: dict[str, dict[str, float]]
    files: dict[str, Path]
    skipped: list[Problem] = field(default_factory=list)


def refuse(problems: list[Problem]) -> None:
    """An EvaluationError listing the problems (the first MAX_LISTED), with the way past them."""
    if problems:
        listed = "; ".join(str(p) for p in problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        raise EvaluationError(
            f"{listed}{more}; fix the files, or pass --skip-bad to leave such pairs out and count them"
        )


def summary(values: list[float]) -> dict[str, float | int | None]:
    """Mean, median and count of per-image values (an infinite PSNR of identical images makes the mean infinite)."""
    if not values:
        return {"mean": None, "median": None, "count": 0}
    return {"mean": sum(values) / len(values), "median": statistics.median(values), "count": len(values)}


def _too_small(pair: LoadedPair, metrics: list[Metric], pred_path: Path) -> Problem | None:
    side = min(pair.pred.shape[-2:])
    for metric in metrics:
        if side < metric.min_side:
            return Problem(
                pred_path,
                f"{pair.pred.shape[2]}x{pair.pred.shape[1]} pixels; {metric.name} needs at "
                f"least {metric.min_side} per side (leave {metric.name} out or skip it with --skip-bad)",
            )
    return None


def evaluate_pairs(
    pairs: list[Pair],
    metrics: list[Metric],
    *,
    device: torch.device,
    weights: Path,
    batch_size: int = 16,
    short_side: int | None = None,
    skip_bad: bool = False,
    problems: list[Problem] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Score ``pairs`` with ``metrics`` (``problems`` found while pairing are refused or, with ``skip_bad``,
    reported as skipped). ``progress`` is called with the number of pairs each batch finished."""
    skipped = list(problems or [])
    if not skip_bad:
        refuse(skipped)
    scorers = build_scorers(metrics, device, weights)
    per_image: dict[str, dict[str, float]] = {}
    files = {p.name: p.pred for p in pairs}
    for batch in batches(pairs, batch_size, short_side):
        loaded: list[LoadedPair] = []
        for item in batch:
            bad = item if isinstance(item, Problem) else _too_small(item, metrics, files[item.name])
            if bad is not None and not skip_bad:
                refuse([bad])
            if bad is None:
                loaded.append(item)
            else:
                skipped.append(bad)
        _score(loaded, metrics, scorers, device, per_image)
        if progress is not None:
            progress(len(batch))
    results = {}
    for metric in metrics:
        if metric.per_image:
            results[metric.name] = summary([values[metric.name] for values in per_image.values()])
        else:
            results[metric.name] = {"mean": scorers[metric.name].compute(), "median": None, "count": len(per_image)}
    return Report(results, per_image, {name: files[name] for name in per_image}, skipped)


def _score(
    loaded: list[LoadedPair],
    metrics: list[Metric],
    scorers: dict,
    device: torch.device,
    per_image: dict[str, dict[str, float]],
) -> None:
    preds = [pair.pred for pair in loaded]
    for group in same_size_groups(preds):
        pred = torch.stack([preds[i] for i in group]).to(device)
        with_ref = loaded[group[0]].ref is not None
        ref = torch.stack([loaded[i].ref for i in group]).to(device) if with_ref else None
        inputs = [loaded[i].input.to(device) for i in group] if loaded[group[0]].input is not None else None
        for i in group:
            per_image.setdefault(loaded[i].name, {})
        for metric in metrics:
            other = {"ref": ref, "input": inputs, "": None}[metric.needs]
            if not metric.per_image:
                scorers[metric.name].update(pred, other)
                continue
            values = scorers[metric.name](pred, other).double().cpu().tolist()
            for i, value in zip(group, values, strict=True):
                per_image[loaded[i].name][metric.name] = value


def needed_folders(metrics: list[Metric]) -> set[str]:
    """Which of "ref" and "input" the metrics compare with."""
    return {metric.needs for metric in metrics if metric.needs}
