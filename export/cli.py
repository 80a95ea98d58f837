"""``spc-fast export``: the artist's DiT step (LoRA merged) as a deployable artifact, checked against eager, with a
manifest beside it; ``--verify DIR`` checks an existing export again (say, on the machine it was copied to)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from spc_fast.config import ArtistConfig
from spc_fast.export.manifest import PARITY_THRESHOLDS, TORCH_DTYPES, read_manifest, weights_sha256, write_manifest
from spc_fast.export.parity import check_parity
from spc_fast.export.ranges import ExportRanges
from spc_fast.export.runtime import FORMATS, load_engine
from spc_fast.export.step import INPUT_NAMES, OUTPUT_NAMES, ArtistStep, dynamic_shapes, example_inputs

PROG = "spc-fast export"
SYMBOLIC_SHAPES = {
    "noise": ["batch", "noise_h", "noise_w", 64],
    "source": ["batch", "source_h", "source_w", 64],
    "t": ["batch"],
    "h_c": ["batch", "hc_len", "width"],
    "h_c_mask": ["batch", "hc_len"],
    "velocity": ["batch", "noise_h", "noise_w", 64],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export the artist's DiT step (LoRA merged) as an artifact that loads without our model code, "
        "check it against eager at two aspect ratios and two H_c lengths, and write DIR/manifest.json. "
        "Exit status 1 when the parity check fails.",
    )
    parser.add_argument("--artist", help="a diffusers Qwen-Image-Edit-2509 directory, or 'tiny'")
    parser.add_argument("--release", help="where dit.safetensors / dit_lora/ are (default: --artist)")
    parser.add_argument("--release-mlp", action="store_true", help="the release's x·σ(1.702x) feed-forwards")
    parser.add_argument("--format", choices=FORMATS, help="tensorrt (GPU), aoti (.pt2, CPU or CUDA), onnx")
    parser.add_argument("--out", type=Path, help="the directory for the artifact and manifest.json")
    parser.add_argument(
        "--precision",
        choices=tuple(PARITY_THRESHOLDS),
        default="fp32",
        help="fp32 (default), bf16, fp16; fp8 with tensorrt only",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--min-pixels", type=int, default=64 * 64, help="smallest image served (default 64²)")
    parser.add_argument("--max-pixels", type=int, default=1280 * 1024, help="largest image served (default 1280x1024)")
    parser.add_argument("--max-batch", type=int, default=4, help="largest batch (default 4)")
    parser.add_argument("--max-hc-tokens", type=int, default=1024, help="longest H_c (default 1024)")
    parser.add_argument("--parity-threshold", type=float, help="max relative error allowed (default per precision)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the parity inputs")
    parser.add_argument("--verify", type=Path, metavar="DIR", help="check an existing export against eager again")
    return parser


def _eager_step(weights: str, release: str | None, release_mlp: bool, precision: str, device: str):
    from spc_fast.models import build_artist

    config = ArtistConfig(
        weights=weights,
        release=release,
        release_mlp=release_mlp,
        device=device,
        dtype=TORCH_DTYPES[precision],
        attention="sdpa",
    )
    transformer = build_artist(config).transformer.eval()
    return ArtistStep(transformer).eval(), transformer


def _check_combination(format_name: str, precision: str, device: str) -> None:
    if precision == "fp8" and format_name != "tensorrt":
        raise ValueError("--precision fp8 needs --format tensorrt (TensorRT's FP8 kernels)")
    if format_name == "onnx" and precision == "bf16":
        raise ValueError("--format onnx takes --precision fp32 or fp16 (ONNX Runtime has no bf16 CPU kernels)")
    if format_name == "tensorrt":
        from spc_fast.export.tensorrt import require_torch_tensorrt

        require_torch_tensorrt()


def _write_artifact(format_name: str, step, args, ranges: ExportRanges, width: int, precision: str, out: Path) -> str:
    if format_name == "onnx":
        from spc_fast.export.onnx_format import export_onnx

        return export_onnx(step, args, dynamic_shapes(ranges), out)
    tracing = contextlib.nullcontext()
    if precision == "fp8":
        from spc_fast.export.parity import parity_inputs
        from spc_fast.export.tensorrt import quantize_fp8

        tracing = quantize_fp8(step, parity_inputs(ranges, width, args[0].dtype, args[0].device, seed=1))
    with tracing:
        program = torch.export.export(step, args, dynamic_shapes=dynamic_shapes(ranges))
    if format_name == "aoti":
        from spc_fast.export.aoti import export_aoti

        return export_aoti(program, out)
    from spc_fast.export.tensorrt import export_tensorrt

    return export_tensorrt(program, ranges, width, precision, out)


def _parity(directory: Path, manifest: dict, step, threshold: float | None, seed: int) -> int:
    engine = load_engine(directory)
    precision = manifest["precision"]
    parity = check_parity(
        engine,
        step,
        engine.ranges,
        width=manifest["model"]["config"]["joint_attention_dim"],
        dtype=engine.dtype,
        device=engine.device,
        seed=seed,
        threshold=PARITY_THRESHOLDS[precision] if threshold is None else threshold,
    )
    write_manifest(
        directory, {**{k: v for k, v in manifest.items() if k not in ("versions", "created")}, "parity": parity}
    )
    for case in parity["cases"]:
        print(
            f"  batch {case['batch']} noise {case['noise']} source {case['source']} hc_len {case['hc_len']}: "
            f"max abs {case['max_abs']:.3g}  max rel {case['max_rel']:.3g}"
        )
    verdict = "passed" if parity["passed"] else "FAILED"
    print(
        f"parity {verdict}: max abs {parity['max_abs']:.3g}, max rel {parity['max_rel']:.3g} "
        f"(threshold {parity['threshold']:.3g}); passed: {str(parity['passed']).lower()}"
    )
    print(f"manifest: {directory / 'manifest.json'}")
    return 0 if parity["passed"] else 1


def export(args: argparse.Namespace) -> int:
    """Export, write the manifest, check parity; the exit status (1 when parity fails)."""
    missing = [flag for flag in ("artist", "format", "out") if getattr(args, flag) is None]
    if missing:
        raise ValueError(f"missing {', '.join('--' + name for name in missing)} (or pass --verify DIR)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    _check_combination(args.format, args.precision, device)
    ranges = ExportRanges.from_limits(args.min_pixels, args.max_pixels, args.max_batch, args.max_hc_tokens)
    step, transformer = _eager_step(args.artist, args.release, args.release_mlp, args.precision, device)
    width = transformer.config.joint_attention_dim
    dtype = getattr(torch, TORCH_DTYPES[args.precision])
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    artifact = _write_artifact(
        args.format, step, example_inputs(ranges, width, dtype, device), ranges, width, args.precision, args.out
    )
    seconds = time.perf_counter() - started
    print(f"{args.format}: {args.out / artifact} in {seconds:.1f} s; ranges: {ranges.describe()}")
    release = args.release or (args.artist if args.artist != "tiny" else None)
    config = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
    manifest = {
        "format": args.format,
        "artifact": artifact,
        "precision": args.precision,
        "dtype": TORCH_DTYPES[args.precision],
        "device": device,
        "inputs": [
            {"name": n, "shape": SYMBOLIC_SHAPES[n], "dtype": "bool" if n == "h_c_mask" else str(dtype)[6:]}
            for n in INPUT_NAMES
        ],
        "outputs": [{"name": n, "shape": SYMBOLIC_SHAPES[n], "dtype": str(dtype)[6:]} for n in OUTPUT_NAMES],
        "ranges": ranges.as_manifest(),
        "model": {
            "config": json.loads(json.dumps(config, default=list)),
            "release_mlp": args.release_mlp,
            "lora_merged": bool(release and (Path(release) / "dit_lora").is_dir()),
        },
        "source": {
            "weights": args.artist,
            "release": args.release,
            "seed": 0 if args.artist == "tiny" else None,  # the tiny weights' seed (build_artist's)
            "sha256": weights_sha256(args.artist, args.release, transformer.state_dict()),
        },
        "export_seconds": round(seconds, 1),
        "parity": None,
    }
    write_manifest(args.out, manifest)  # the runtime loads through the manifest; parity fills it in
    return _parity(args.out, manifest, step, args.parity_threshold, args.seed)


def verify(args: argparse.Namespace) -> int:
    """Rebuild eager from the manifest's source weights and check the artifact against it again."""
    manifest = read_manifest(args.verify)
    source = manifest["source"]
    step, _ = _eager_step(
        source["weights"],
        source["release"],
        manifest["model"]["release_mlp"],
        manifest["precision"],
        manifest["device"],
    )
    return _parity(args.verify, manifest, step, args.parity_threshold, args.seed)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast export``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return verify(args) if args.verify is not None else export(args)
    except ImportError as error:  # a missing optional dependency, named with its fix
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
