"""``spc-fast evaluate``: score a folder of predictions against references (and inputs) with the paper's metrics.

``main(argv)`` parses its own arguments (``spc-fast evaluate`` hands it everything after the word) and returns the
exit status: 0 when every pair was scored or skipped with ``--skip-bad``, 1 on an error (one line on stderr naming
the file and the fix), 130 on Ctrl-C. The table goes to stdout; the progress bar, skipped pairs and library
messages to stderr.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch

from spc_fast.evaluate.metrics import DEFAULT_METRICS, METRICS, Metric, parse_metrics
from spc_fast.evaluate.pairs import FIVEK_SHORT_SIDE, EvaluationError, pair_folders
from spc_fast.evaluate.run import Report, evaluate_pairs, needed_folders
from spc_fast.evaluate.weights import WEIGHTS_ENV, weights_folder

PROG = "spc-fast evaluate"
PRESETS = {"fivek": FIVEK_SHORT_SIDE}


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score predictions against references with library "
        "metrics; files pair by name without the extension.",
    )
    parser.add_argument("--pred", type=Path, required=True, metavar="DIR", help="the predictions (edited images)")
    parser.add_argument(
        "--ref",
        type=Path,
        metavar="DIR",
        help="the references (ground truth), for psnr, ssim, deltae, lpips, dists and fid",
    )
    parser.add_argument(
        "--input",
        type=Path,
        metavar="DIR",
        help="the photos that were edited, for clip and dino (similarity of each edit to its input)",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        metavar="LIST",
        help=f"comma-separated, from {', '.join(METRICS)} (default {','.join(DEFAULT_METRICS)})",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="write metrics.<name>.{mean,median,count}, the skipped pairs and the settings as JSON",
    )
    parser.add_argument("--per-image", type=Path, metavar="CSV", help="write one row per scored image")
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out pairs that cannot be scored (missing "
        "partner, size mismatch, undecodable file): each is listed, all counted",
    )
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        help="fivek: the MIT-Adobe FiveK protocol (--ref holds expert "
        "C's retouches): predictions, references and inputs whose short side is not 480 px are "
        "resized to it, PIL bicubic (antialiased), the long side scaled and rounded",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="DIR",
        help=f"the folder of the networks' weights (default "
        f"${WEIGHTS_ENV}, else $TORCH_HOME/hub/checkpoints); nothing is downloaded",
    )
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument(
        "--batch-size",
        type=_whole,
        default=16,
        metavar="N",
        help="pairs read and scored together (default 16); memory holds two batches",
    )
    return parser


def _device(name: str | None) -> torch.device:
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise EvaluationError(f"--device {name!r}: {error}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EvaluationError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def _check_folders(metrics: list[Metric], args: argparse.Namespace) -> None:
    for role in ("ref", "input"):
        users = [m.name for m in metrics if m.needs == role]
        if users and getattr(args, role) is None:
            raise EvaluationError(f"{', '.join(users)} compare(s) each prediction with its {role}; pass --{role} DIR")


def _write_atomically(path: Path, text: str) -> None:
    """The file appears whole or not at all (a temporary in its folder, renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _number(value: float | int | None, width: int = 12) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, int):
        return f"{value:>{width}d}"
    return f"{value:>{width}.4f}" if math.isfinite(value) else f"{value!s:>{width}}"


def format_table(report: Report, metrics: list[Metric]) -> str:
    lines = [f"{'metric':<8}{'mean':>12}{'median':>12}{'count':>12}  better  from"]
    for metric in metrics:
        stats = report.metrics[metric.name]
        better = "higher" if metric.higher_is_better else "lower"
        lines.append(
            f"{metric.name:<8}{_number(stats['mean'])}{_number(stats['median'])}"
            f"{_number(stats['count'])}  {better:<6}  {metric.library}"
        )
    return "\n".join(lines)


def report_json(report: Report, metrics: list[Metric], args: argparse.Namespace, device: torch.device) -> str:
    payload = {
        "metrics": {
            m.name: {**report.metrics[m.name], "higher_is_better": m.higher_is_better, "library": m.library}
            for m in metrics
        },
        "images": len(report.per_image),
        "skipped": [{"file": str(p.path), "reason": p.message} for p in report.skipped],
        "pred": str(args.pred),
        "ref": None if args.ref is None else str(args.ref),
        "input": None if args.input is None else str(args.input),
        "preset": args.preset,
        "short_side": PRESETS.get(args.preset),
        "device": str(device),
    }
    return json.dumps(payload, indent=2) + "\n"  # an infinite PSNR (identical images) is written as Infinity


def report_csv(report: Report, metrics: list[Metric]) -> str:
    columns = [m.name for m in metrics if m.per_image]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "pred", *columns])
    for name, values in report.per_image.items():
        writer.writerow([name, str(report.files[name]), *(repr(values[c]) for c in columns)])
    return out.getvalue()


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="pair", file=sys.stderr, disable=None, desc="evaluate")


def run(args: argparse.Namespace) -> int:
    metrics = parse_metrics(args.metrics)
    _check_folders(metrics, args)
    device = _device(args.device)
    needed = needed_folders(metrics)
    pairs, problems = pair_folders(
        args.pred, args.ref if "ref" in needed else None, args.input if "input" in needed else None
    )
    with _progress(len(pairs)) as bar:
        report = evaluate_pairs(
            pairs,
            metrics,
            device=device,
            weights=weights_folder(args.weights),
            batch_size=args.batch_size,
            short_side=PRESETS.get(args.preset),
            skip_bad=args.skip_bad,
            problems=problems,
            progress=bar.update,
        )
    for problem in report.skipped:
        print(f"{PROG}: skipped {problem}", file=sys.stderr)
    if report.skipped:
        print(f"{PROG}: skipped {len(report.skipped)} pair(s), scored {len(report.per_image)}", file=sys.stderr)
    if not report.per_image:
        raise EvaluationError(f"{args.pred}: no pair could be scored; see the skipped pairs above")
    print(format_table(report, metrics))
    if args.json is not None:
        _write_atomically(args.json, report_json(report, metrics, args, device))
    if args.per_image is not None:
        _write_atomically(args.per_image, report_csv(report, metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except torch.cuda.OutOfMemoryError:
        print(f"{PROG}: error: out of device memory; use a smaller --batch-size", file=sys.stderr)
        return 1
    except (ValueError, OSError) as error:  # bad input, missing weights or files
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
