"""Command line of the benchmarks: ``spc-fast bench [--json FILE] [--plot DIR] [--only NAME] [--quick]
[--device DEV]``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from pathlib import Path

import torch

from spc_fast.bench import harness, plots

# name -> module under spc_fast.bench with run(device, quick) -> list[Row] and BASELINES
BENCHMARKS = (
    "photometric", "retouch", "nft_loss", "grpo_loss", "rewards", "critic_generate", "artist_step", "artist_sample",
    "model_loading", "full_res", "train_step", "stage3_step", "inference",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spc-fast bench", description=__doc__)
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the environment as JSON")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also draw charts (PNG and SVG) into DIR: per "
                        "benchmark the providers' times with p20-p80 whiskers and the fraction of the copy bandwidth; "
                        "a roofline on a GPU")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)")
    parser.add_argument("--quick", action="store_true", help="small shapes and no torch.compile: a smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-copy-bw", action="store_true", help="skip measuring the copy bandwidth")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.plot is not None:
        plots.check_available()
        if args.plot.exists() and not args.plot.is_dir():
            raise ValueError(f"--plot {args.plot}: is a file; name a folder")
    env = harness.environment(device)
    copy_gbps = None if args.no_copy_bw else harness.copy_bandwidth(device, mib=64 if args.quick else 512)
    env["copy_bandwidth_gb_per_s"] = copy_gbps
    if args.plot is not None and device.type == "cuda":  # the roofline's compute roof
        env["matmul_peak_tflops"] = harness.matmul_peak(device, torch.bfloat16)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(f"device: {env['device']}  copy bandwidth: {copy_gbps and round(copy_gbps, 1)} GB/s  "
          f"commit: {env['git_commit']}  config: {config}", flush=True)

    rows: list[harness.Row] = []
    for name in args.only or BENCHMARKS:
        module = importlib.import_module(f"spc_fast.bench.{name}")
        bench_rows = module.run(device, quick=args.quick)
        harness.fill_ratios(bench_rows, module.BASELINES)
        for row in bench_rows:
            if copy_gbps and row.gb_per_s is not None:
                row.fraction_of_copy_bw = row.gb_per_s / copy_gbps
        print(f"{name}: error column = {module.ERROR_KIND}")
        print(harness.format_table(bench_rows), flush=True)
        rows += bench_rows
        if args.json:  # after every benchmark: a run cut short by a time limit keeps what it measured
            harness.write_json(args.json, env, config, rows)
    if args.json:
        print(f"wrote {args.json}")
    if args.plot is not None:
        written = plots.plot_run([dataclasses.asdict(r) for r in rows], env, args.plot, gpu=device.type == "cuda")
        print(f"wrote {len(written)} chart files (PNG and SVG) to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
