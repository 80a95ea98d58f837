"""Charts of a benchmark run, PNG and SVG: per benchmark the providers' p50 times with p20–p80 whiskers for every
case and, for the kernels (rows that know the bytes they move), the achieved fraction of the copy bandwidth measured
in the same run; and a roofline when a GPU ran and rows carry their FLOPs.

``spc-fast bench ... --plot DIR`` draws the run it just measured; ``python -m spc_fast.bench.plots bench.json --out
DIR`` draws a run recorded with ``--json``. matplotlib draws through its object interface on the Agg canvas (no
display, no pyplot state).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMATS = ("png", "svg")
_BAR_WIDTH = 0.8  # of a case's slot, shared by its providers


def check_available() -> None:
    """Raise ValueError naming the fix when matplotlib is missing (before a run spends minutes measuring)."""
    _figure_class()


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install matplotlib") from None
    return Figure


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _grouped_bars(axes, rows: list[dict], value, *, whiskers=None, labels: str | None = None) -> None:
    """One slot per case, one bar per provider inside it (``value(row)``; None: no bar); ``whiskers(row)`` gives
    the (below, above) extents of an error bar; ``labels``: the format of a value written above each bar."""
    cases, providers = _ordered([r["case"] for r in rows]), _ordered([r["provider"] for r in rows])
    by_key = {(r["case"], r["provider"]): r for r in rows}
    width = _BAR_WIDTH / len(providers)
    for j, provider in enumerate(providers):
        xs, heights, errors = [], [], [[], []]
        for i, case in enumerate(cases):
            row = by_key.get((case, provider))
            if row is None or value(row) is None:
                continue
            xs.append(i - _BAR_WIDTH / 2 + (j + 0.5) * width)
            heights.append(value(row))
            below, above = whiskers(row) if whiskers else (0.0, 0.0)
            errors[0].append(below)
            errors[1].append(above)
        if xs:
            bars = axes.bar(xs, heights, width * 0.92, label=provider, yerr=errors if whiskers else None, capsize=3)
            if labels:
                axes.bar_label(bars, [labels.format(h) for h in heights], fontsize=7, padding=2)
    axes.set_xticks(range(len(cases)), [c.replace(" ", "\n", 1) for c in cases], fontsize=8)
    axes.grid(axis="y", alpha=0.3)


def _log_scale(axes) -> None:
    """A log axis labelled 0.1, 1, 10, 100 rather than in powers of ten."""
    from matplotlib.ticker import FuncFormatter

    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def _measured(row: dict) -> bool:
    """The row has a positive p50 (rows of providers that did not run carry NaN, or null once in JSON)."""
    p50 = row.get("p50_ms")
    return p50 is not None and math.isfinite(p50) and p50 > 0


def _percent_of_copy(row: dict) -> float | None:
    return None if row.get("fraction_of_copy_bw") is None else 100 * row["fraction_of_copy_bw"]


def bench_figure(bench: str, rows: list[dict], device: str):
    """The figure of one benchmark: times, and the fraction of the copy bandwidth when rows have it."""
    bandwidth = [r for r in rows if r.get("fraction_of_copy_bw") is not None]
    panels = 2 if bandwidth else 1
    figure = _figure_class()(
        figsize=(max(7.0, 2.2 * len(_ordered([r["case"] for r in rows]))), 3.6 * panels + 0.8), layout="constrained"
    )
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    _grouped_bars(
        axes[0],
        rows,
        lambda r: r["p50_ms"] if _measured(r) else None,
        whiskers=lambda r: (r["p50_ms"] - r["p20_ms"], r["p80_ms"] - r["p50_ms"]),
    )
    times = [r["p50_ms"] for r in rows if _measured(r)]
    if times and max(times) / min(times) > 30:
        _log_scale(axes[0])
    axes[0].set_ylabel("time per call (ms)\nbar p50, whiskers p20–p80")
    axes[0].set_title(f"{bench} — {device}", fontsize=11)
    if bandwidth:  # log scale: CPU rows sit near 1 %, tuned GPU kernels near 100 %
        _grouped_bars(axes[1], rows, _percent_of_copy, labels="{:.2g}")
        axes[1].axhline(100, color="black", linewidth=1, linestyle="--")
        _log_scale(axes[1])
        fractions = [100 * r["fraction_of_copy_bw"] for r in bandwidth if r["fraction_of_copy_bw"] > 0]
        axes[1].set_ylim(min([*fractions, 50.0]) / 2, max([*fractions, 100.0]) * 2)
        axes[1].set_ylabel("% of the copy bandwidth\nmeasured in the run")
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def roofline_figure(rows: list[dict], environment: dict):
    """Achieved TFLOP/s against arithmetic intensity (FLOP per byte moved) under the roofs measured in the run:
    the copy bandwidth and the matmul peak. None when no row carries both ``flops`` and ``bytes_moved`` or a roof
    was not measured."""
    bandwidth = environment.get("copy_bandwidth_gb_per_s")
    peak = environment.get("matmul_peak_tflops")
    points = [r for r in rows if r.get("flops") and r.get("bytes_moved") and _measured(r)]
    if not points or not bandwidth or not peak:
        return None
    intensity = [r["flops"] / r["bytes_moved"] for r in points]
    achieved = [r["flops"] / (r["p50_ms"] * 1e-3) / 1e12 for r in points]
    low, high = min(intensity + [peak * 1e3 / bandwidth]) / 4, max(intensity + [peak * 1e3 / bandwidth]) * 4
    xs = [low * (high / low) ** (k / 200) for k in range(201)]
    figure = _figure_class()(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    axes.plot(
        xs,
        [min(peak, bandwidth * x / 1e3) for x in xs],
        color="black",
        linewidth=1.5,
        label=f"roof: {bandwidth:.0f} GB/s copy, {peak:.0f} TFLOP/s matmul (measured)",
    )
    for row, x, y in zip(points, intensity, achieved, strict=True):
        axes.scatter([x], [y], label=f"{row['bench']}: {row['provider']} ({row['case']})", zorder=3)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("arithmetic intensity (FLOP / byte)")
    axes.set_ylabel("achieved TFLOP/s (p50)")
    axes.set_title(f"roofline — {environment.get('device', '?')}", fontsize=11)
    axes.grid(which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def _save(figure, folder: Path, name: str) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = folder / f"{name}.{fmt}"
        # no dates in the files: the same run draws the same bytes
        figure.savefig(path, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    return paths


def plot_run(rows: list[dict[str, Any]], environment: dict[str, Any], folder: str | Path, *, gpu: bool) -> list[Path]:
    """Draw every chart of a run into ``folder`` (created if missing) and return the files written. ``rows`` are
    ``harness.Row`` as dicts, ``environment`` what ``harness.environment`` gave plus the measured roofs; ``gpu``:
    the run was on a CUDA device (the roofline is drawn for GPU runs only)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--plot {folder}: is a file; name a folder")
    folder.mkdir(parents=True, exist_ok=True)
    device = str(environment.get("device", "?"))
    written = []
    for bench in _ordered([r["bench"] for r in rows]):
        written += _save(bench_figure(bench, [r for r in rows if r["bench"] == bench], device), folder, bench)
    if gpu:
        figure = roofline_figure(rows, environment)
        if figure is None:
            print("roofline: not drawn (no row carries its FLOPs and bytes, or a roof was not measured)")
        else:
            written += _save(figure, folder, "roofline")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spc_fast.bench.plots", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json", type=Path, help="a run written by spc-fast bench --json FILE")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the charts")
    args = parser.parse_args(argv)
    try:
        payload = json.loads(args.json.read_text(encoding="utf-8"))
        rows, environment = payload["rows"], payload["environment"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        print(f"{args.json}: not a benchmark run written by spc-fast bench --json ({error})", file=sys.stderr)
        return 1
    gpu = str(payload.get("config", {}).get("device", "")).startswith("cuda")
    written = plot_run(rows, environment, args.out, gpu=gpu)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
