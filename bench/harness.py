"""Timing, the row schema and the report every benchmark of spc-fast shares.

A row is one (benchmark, provider, shape, dtype) measurement: p20/p50/p80 wall times, bytes moved and the
achieved GB/s, the fraction of the device copy bandwidth measured in the same run, the error against the float64
reference, and ratios to the baselines of the same run. The report prints a table and writes JSON together with
the environment (device, versions, git commit, resolved options). A provider that cannot run here (a missing
library, no GPU) still gets its row, from ``not_run``: no timings, and a note that says why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")


@dataclasses.dataclass(kw_only=True)
class Row:
    bench: str
    case: str  # the shape and dtype in words, e.g. "1x3x3024x4032 uint8"
    provider: str
    p20_ms: float
    p50_ms: float
    p80_ms: float
    bytes_moved: int | None = None
    flops: float | None = None  # per call; with bytes_moved, the row's point on the roofline
    gb_per_s: float | None = None
    fraction_of_copy_bw: float | None = None
    max_error: float | None = None  # against the float64 reference; what kind is in the bench's ERROR_KIND
    peak_memory_mib: float | None = None  # beyond the inputs; how it is measured is in the bench's note
    speedup_vs: dict[str, float] = dataclasses.field(default_factory=dict)
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    fn: Callable[[], object], device: torch.device, *, min_reps: int = 3, budget_s: float = 2.0, warmup: bool = True
) -> tuple[float, float, float]:
    """p20/p50/p80 in milliseconds of ``fn``, after one warm-up call unless ``warmup`` is False.

    On CUDA, triton.testing.do_bench (L2 flushed between calls, CUDA events); on the CPU, wall clock repeated
    until ``budget_s`` is spent (at least ``min_reps`` times).
    """
    if device.type == "cuda":
        import triton.testing

        p20, p50, p80 = triton.testing.do_bench(fn, quantiles=[0.2, 0.5, 0.8], rep=int(budget_s * 250))
        return p20, p50, p80
    if warmup:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return q[1], statistics.median(times), q[7]


def time_once(fn: Callable[[], T]) -> tuple[T, float]:
    """Result and wall time in ms of a single call (for slow float64 references, timed once)."""
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1e3


def not_run(bench: str, case: str, provider: str, reason: str) -> Row:
    """The row of a provider that could not run in this environment: NaN timings (null in JSON), the reason."""
    return Row(bench=bench, case=case, provider=provider, p20_ms=math.nan, p50_ms=math.nan, p80_ms=math.nan,
               note=f"not run: {reason}")


def was_run(row: Row) -> bool:
    return math.isfinite(row.p50_ms)


def reference_row(bench: str, case: str, p50_ms: float, nbytes: int) -> Row:
    return Row(bench=bench, case=case, provider="numpy-reference", p20_ms=p50_ms, p50_ms=p50_ms, p80_ms=p50_ms,
               bytes_moved=nbytes, gb_per_s=nbytes / p50_ms / 1e6, max_error=0.0, note="float64, single run")


def copy_bandwidth(device: torch.device, mib: int = 512) -> float:
    """Measured device copy bandwidth in GB/s, counting bytes read plus bytes written."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    _, p50, _ = measure(lambda: dst.copy_(src), device, min_reps=5, budget_s=1.0)
    return 2 * src.numel() / (p50 * 1e-3) / 1e9


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul throughput in TFLOP/s: the compute roof that model forwards are reported against
    (8192³ on CUDA, 1024³ on the CPU)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    _, p50, _ = measure(lambda: a @ b, device, min_reps=5, budget_s=1.0)
    return 2 * n**3 / (p50 * 1e-3) / 1e12


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, object]:
    import numpy

    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for name in ("triton", "kornia", "transformers", "diffusers"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken optional package: recorded as missing
            versions[name] = None
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{cpu_model()}, {torch.get_num_threads()} threads"
    return {
        "device": device_name,
        "versions": versions,
        "git_commit": git_commit(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", ""),
    }


def fill_ratios(rows: list[Row], baselines: tuple[str, ...]) -> None:
    """speedup_vs[b] = p50 of baseline b / p50 of the row, for every baseline measured on the same case."""
    by_case: dict[tuple[str, str], dict[str, Row]] = {}
    for row in filter(was_run, rows):
        by_case.setdefault((row.bench, row.case), {})[row.provider] = row
    for providers in by_case.values():
        for row in providers.values():
            row.speedup_vs = {
                name: providers[name].p50_ms / row.p50_ms
                for name in baselines
                if name in providers and name != row.provider
            }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(rows: list[Row]) -> str:
    header = f"{'bench':<12} {'case':<26} {'provider':<22} {'p50 ms':>9} {'p20-p80 ms':>17} {'GB/s':>7} " \
             f"{'%copy':>6} {'max err':>9}  speedup"
    lines = [header, "-" * len(header)]
    for r in rows:
        if not was_run(r):
            lines.append(f"{r.bench:<12} {r.case:<26} {r.provider:<22} {'not run':>9}")
            continue
        spread = f"{r.p20_ms:.2f}-{r.p80_ms:.2f}"
        frac = None if r.fraction_of_copy_bw is None else 100 * r.fraction_of_copy_bw
        ratios = ", ".join(f"{v:.2f}x {k}" for k, v in r.speedup_vs.items())
        if r.peak_memory_mib is not None:
            ratios += f"  [peak {r.peak_memory_mib:.0f} MiB]"
        lines.append(
            f"{r.bench:<12} {r.case:<26} {r.provider:<22} {r.p50_ms:>9.2f} {spread:>17} "
            f"{_fmt(r.gb_per_s, '7.1f')} {_fmt(frac, '6.1f')} {_fmt(r.max_error, '9.2e')}  {ratios}"
        )
    notes = [f"  {r.provider} ({r.case}): {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def write_json(path: str | os.PathLike, env: dict, config: dict, rows: list[Row]) -> None:
    # strict JSON: the NaN timings of rows that did not run become null
    rows_out = [
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in dataclasses.asdict(r).items()}
        for r in rows
    ]
    payload = {"environment": env, "config": config, "rows": rows_out}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)
