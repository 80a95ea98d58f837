"""``spc-fast train plot RUN [--out DIR]``: charts of a run's ``metrics.jsonl``, PNG and SVG, into ``RUN/plots``.

- ``loss``: ``loss`` and its parts (``loss/*`` of stage III, ``terms/*`` of stages I–II) against the step;
- ``rewards``: every ``reward/*`` (stage III: r_PA and the critic's reward, bold, with their terms);
- ``time``: where a step's time goes, stacked per step, and each part's share of the run (``time/*`` of stage III,
  ``time_data_s`` / ``time_fwd_bwd_s`` / ``time_optim_s`` of stages I–II; the rest of ``time/step`` is "other").

Nested objects are flattened with ``/`` (as TensorBoard gets them). A step written twice (a resumed run) keeps its
last line; a last line cut short by a kill is left out. TensorBoard stays the live view; this draws a finished or
running run for a report. matplotlib draws through its object interface on the Agg canvas (no display needed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from spc_fast.training.metrics import METRICS

PROG = "spc-fast train plot"
FORMATS = ("png", "svg")
_STAGE_TIMES = {"time_data_s": "data", "time_fwd_bwd_s": "forward + backward", "time_optim_s": "optimizer"}
_TOTAL, _SMOOTH_FROM = "time/step", 40  # the step's wall time; steps from which a running mean is drawn over the raw


def _flatten(record: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The lines of a ``metrics.jsonl`` as flat ``{name: value}`` per step, in step order (the last line of a
    step written twice wins). A bad line is a ValueError naming FILE:LINE, except a last line cut short."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise ValueError(
            f"{path}: cannot read it ({error.strerror or error}); give a run folder or its {METRICS}"
        ) from None
    steps: dict[int, dict[str, float]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # a kill during the write; metrics.truncate drops it on resume too
                print(f"{PROG}: {path}:{number}: last line cut short, left out", file=sys.stderr)
                continue
            raise ValueError(f"{path}:{number}: not JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{number}: a metrics line is a JSON object with a whole-number 'step'")
        steps[record["step"]] = _flatten(record)
    if not steps:
        raise ValueError(f"{path}: no steps recorded yet")
    return [steps[step] for step in sorted(steps)]


def _figure(*args, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("train plot needs matplotlib: pip install matplotlib") from None
    return Figure(*args, **kwargs, layout="constrained")


def _series(metrics: list[dict[str, float]], name: str) -> tuple[list[float], list[float]]:
    points = [(m["step"], m[name]) for m in metrics if name in m]
    return [p[0] for p in points], [p[1] for p in points]


def _running_mean(values: list[float], window: int) -> np.ndarray:
    """The mean of the finite values among the last ``window`` at each step (NaN where there are none)."""
    samples = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(samples)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, samples, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    end = np.arange(1, len(samples) + 1)
    start = np.maximum(0, end - window)
    count = counts[end] - counts[start]
    return np.where(count > 0, (sums[end] - sums[start]) / np.maximum(count, 1), np.nan)


def _lines(axes, metrics: list[dict[str, float]], names: list[str], bold: set[str]) -> None:
    """One line per metric (NaN steps left as gaps); past ``_SMOOTH_FROM`` steps the raw values fade and a running
    mean over a twentieth of the run is drawn on top."""
    window = max(1, len(metrics) // 20)
    for name in names:
        steps, values = _series(metrics, name)
        width = 2.0 if name in bold else 1.1
        if len(steps) >= _SMOOTH_FROM:
            (raw,) = axes.plot(steps, values, linewidth=0.6, alpha=0.3)
            axes.plot(steps, _running_mean(values, window), color=raw.get_color(), linewidth=width, label=name)
        else:
            axes.plot(steps, values, linewidth=width, label=name, marker="o" if len(steps) < 12 else None, markersize=3)
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def loss_figure(metrics: list[dict[str, float]], run: str):
    names = ["loss", *sorted({k for m in metrics for k in m if k.startswith(("loss/", "terms/"))})]
    names = [n for n in names if any(n in m for m in metrics)]
    if not names:
        return None
    figure = _figure(figsize=(9, 4.5))
    axes = figure.subplots()
    _lines(axes, metrics, names, bold={"loss"})
    axes.set_ylabel("loss")
    axes.set_title(f"loss — {run}", fontsize=11)
    return figure


def reward_figure(metrics: list[dict[str, float]], run: str):
    names = sorted({k for m in metrics for k in m if k.startswith("reward/")})
    if not names:
        return None
    figure = _figure(figsize=(9, 4.5))
    axes = figure.subplots()
    _lines(axes, metrics, names, bold={n for n in names if n.count("/") == 1})
    axes.set_ylabel("reward (batch mean)")
    axes.set_title(f"rewards — {run}", fontsize=11)
    return figure


def time_parts(metrics: list[dict[str, float]]) -> dict[str, list[float]]:
    """Seconds per step of each part of the step, in step order; "other": what ``time/step`` holds beyond them."""
    keys = sorted({k for m in metrics for k in m if k.startswith("time/") and k != _TOTAL and "fraction" not in k})
    names = {k: k.removeprefix("time/") for k in keys} or {
        k: v for k, v in _STAGE_TIMES.items() if any(k in m for m in metrics)
    }
    parts = {label: [max(0.0, m.get(key, 0.0)) for m in metrics] for key, label in names.items()}
    if parts and any(_TOTAL in m for m in metrics):
        counted = [sum(values) for values in zip(*parts.values(), strict=True)]
        other = [max(0.0, m.get(_TOTAL, 0.0) - c) for m, c in zip(metrics, counted, strict=True)]
        if sum(other) > 1e-3 * sum(counted):
            parts["other"] = other
    return parts


def time_figure(metrics: list[dict[str, float]], run: str):
    parts = time_parts(metrics)
    if not parts:
        return None
    steps = [m["step"] for m in metrics]
    figure = _figure(figsize=(11, 4.5))
    left, right = figure.subplots(1, 2, width_ratios=(2.2, 1))
    left.stackplot(steps, *parts.values(), labels=list(parts), alpha=0.85)
    left.set_xlabel("step")
    left.set_ylabel("seconds per step")
    left.set_title(f"time split — {run}", fontsize=11)
    left.grid(alpha=0.3)
    totals = {label: sum(values) for label, values in parts.items()}
    whole = sum(totals.values()) or 1.0
    shares = [100 * t / whole for t in totals.values()]
    colours = [p.get_facecolor() for p in left.collections]
    bars = right.barh(list(totals)[::-1], shares[::-1], color=colours[::-1])
    right.bar_label(bars, [f"{s:.1f} %" for s in shares[::-1]], fontsize=8, padding=2)
    right.set_xlim(0, max(shares) * 1.3)
    right.set_xlabel("share of the run's step time (%)")
    right.tick_params(axis="y", labelsize=8)
    return figure


def plot_run(run: str | Path, out: str | Path | None = None) -> list[Path]:
    """Draw the charts of ``run`` (a run folder or its ``metrics.jsonl``) into ``out`` (default ``RUN/plots``,
    created if missing); returns the files written."""
    run = Path(run)
    path = run / METRICS if run.is_dir() else run
    folder = Path(out) if out is not None else path.parent / "plots"
    metrics = read_metrics(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder}: is a file; name a folder")
    _figure()  # matplotlib missing: say so before creating anything
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("loss", loss_figure), ("rewards", reward_figure), ("time", time_figure)):
        figure = draw(metrics, path.parent.name)
        if figure is None:
            continue
        for fmt in FORMATS:
            written.append(folder / f"{name}.{fmt}")
            figure.savefig(written[-1], dpi=150, metadata={"Date": None} if fmt == "svg" else None)
    return written


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast train plot``; returns the exit status (bad input: ValueError naming the fix)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, metavar="RUN", help=f"a run folder (or its {METRICS})")
    parser.add_argument("--out", type=Path, metavar="DIR", help="folder for the charts (default RUN/plots)")
    args = parser.parse_args(argv)
    written = plot_run(args.run, args.out)
    if not written:
        print(f"{PROG}: {args.run}: no loss, reward or time metrics to draw", file=sys.stderr)
        return 1
    charts = ", ".join(dict.fromkeys(path.stem for path in written))
    print(f"wrote {charts} ({' and '.join(f.upper() for f in FORMATS)}) to {written[0].parent}")
    return 0
