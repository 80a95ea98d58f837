"""Peak host memory while loading the artist from the release layout, against the bytes of its weights on disk.

A DiT of the release width (24 heads x 128 = 3072, joint dim 3584; ``--heads`` narrows it) with ``--layers`` layers
and random bf16 weights is saved as the release ships it: a diffusers directory (transformer config and weights, a
tiny VAE, the scheduler) plus ``dit.safetensors``. Each provider then loads it in a fresh Python process, touches
every weight once (a memory-mapped weight is read when first used, so its pages must count) and reports its peak
resident set size above the baseline after imports: the kernel's high-water mark, reset after imports through
``/proc/self/clear_refs`` (elsewhere ``ru_maxrss``). Providers: ``spc-fast`` (``qwen_image.load_artist``: built on
the meta device, each tensor read once) and ``previous loader`` (diffusers' ``from_pretrained`` of the transformer,
then ``load_state_dict`` of ``dit.safetensors``: the loader this replaced). Goal: peak <= 1.2 x the bytes on disk of
the weights the artist holds (``dit.safetensors`` + the VAE's file). The time, of loading and that first touch, is
measured once (p20 = p50 = p80).

    python -m spc_fast.bench.model_loading [--layers 4] [--heads 24] [--device cpu] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from spc_fast.bench.harness import Row, environment, fill_ratios, format_table, write_json
from spc_fast.models import qwen_image
from spc_fast.models.weights import build_empty

BASELINES = ("previous loader",)
ERROR_KIND = "none (exactness is tested on the tiny models in tests/test_model_loading.py)"
PROVIDERS = ("spc-fast", "previous loader")
GOAL = 1.2


def dit_config(layers: int, heads: int = 24) -> dict:
    """The release DiT config with ``layers`` layers and ``heads`` heads of 128 (24: the release width, 3072)."""
    return dict(qwen_image.dit_config(layers), num_attention_heads=heads)


def write_release(directory: Path, layers: int, heads: int = 24, seed: int = 0) -> dict[str, int]:
    """Save a random-weight bf16 artist in the release layout under ``directory``; returns the weight files' sizes."""
    transformer = build_empty(lambda: qwen_image.QwenImageTransformer2DModel(**dit_config(layers, heads)))
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.empty(t.shape, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=generator)
             for name, t in transformer.state_dict().items()}
    transformer.save_config(directory / "transformer")
    save_file(state, str(directory / "transformer" / "diffusion_pytorch_model.safetensors"))
    state = {name: tensor.add_(0.01) for name, tensor in state.items()}  # the release's DiT differs from the base
    save_file(state, str(directory / "dit.safetensors"))
    del state
    torch.manual_seed(seed)
    qwen_image.AutoencoderKLQwenImage(**qwen_image.TINY_VAE_CONFIG).save_pretrained(directory / "vae")
    qwen_image.FlowMatchEulerDiscreteScheduler(**qwen_image.SCHEDULER_CONFIG).save_pretrained(directory / "scheduler")
    files = {"dit.safetensors": directory / "dit.safetensors",
             "vae": directory / "vae" / "diffusion_pytorch_model.safetensors",
             "diffusers transformer": directory / "transformer" / "diffusion_pytorch_model.safetensors"}
    return {name: path.stat().st_size for name, path in files.items()}


def _rss_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _load(provider: str, directory: Path, device: str) -> list[torch.nn.Module]:
    if provider == "spc-fast":
        transformer, vae, _ = qwen_image.load_artist(directory, torch.bfloat16, device=device)
        return [transformer, vae]
    from safetensors.torch import load_file

    transformer = qwen_image.QwenImageTransformer2DModel.from_pretrained(
        directory / "transformer", torch_dtype=torch.bfloat16, local_files_only=True)
    vae = qwen_image.AutoencoderKLQwenImage.from_pretrained(
        directory / "vae", torch_dtype=torch.bfloat16, local_files_only=True)
    transformer.load_state_dict(load_file(str(directory / "dit.safetensors")), strict=True)
    return [transformer.to(device), vae.to(device)]


def child(provider: str, directory: Path, device: str) -> dict[str, float]:
    """Load in this process (fresh, imports done) and return baseline and peak RSS in bytes and the load time."""
    baseline = _rss_bytes("VmRSS")
    exact_peak = baseline is not None and _reset_peak()
    if not exact_peak:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    models = _load(provider, directory, device)
    with torch.no_grad():
        for model in models:
            for tensor in (*model.parameters(), *model.buffers()):
                tensor.sum()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = _rss_bytes("VmHWM") if exact_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline": baseline, "peak": peak, "seconds": seconds, "exact_peak": exact_peak}


def measure(directory: Path, provider: str, device: str = "cpu") -> dict[str, float]:
    """``child`` run in a fresh interpreter."""
    command = [sys.executable, "-m", "spc_fast.bench.model_loading", "--child", provider, str(directory),
               "--device", device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"loading with {provider} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(device: torch.device, quick: bool = False, *, layers: int | None = None, heads: int | None = None,
        providers: tuple[str, ...] = PROVIDERS) -> list[Row]:
    """Rows of peak RSS (``peak_memory_mib``) per provider; quick: 2 layers of 8 heads (about 160 MB)."""
    layers = layers or (2 if quick else 4)
    heads = heads or (8 if quick else 24)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spc-fast-loading-") as tmp:
        sizes = write_release(Path(tmp), layers, heads)
        weights = sizes["dit.safetensors"] + sizes["vae"]
        case = f"DiT {128 * heads}w x{layers} bf16 {weights / 1e9:.2f}GB"
        for provider in providers:
            result = measure(Path(tmp), provider, device.type)
            used = result["peak"] - result["baseline"]
            ms = 1e3 * result["seconds"]
            rows.append(Row(
                bench="model_loading", case=case, provider=provider, p20_ms=ms, p50_ms=ms, p80_ms=ms,
                bytes_moved=weights, gb_per_s=weights / result["seconds"] / 1e9, peak_memory_mib=used / 2**20,
                note=f"peak RSS above baseline {used / weights:.3f}x the weights on disk ({weights} B; goal <= "
                     f"{GOAL}x){'' if result['exact_peak'] else ', ru_maxrss (high-water mark not resettable)'}",
            ))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spc_fast.bench.model_loading", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4, help="DiT layers (4 at the release width: 2.8 GB)")
    parser.add_argument("--heads", type=int, default=24, help="attention heads of 128 (24: the release width)")
    parser.add_argument("--device", default="cpu", help="where the weights are loaded; RSS is the host's")
    parser.add_argument("--only", choices=PROVIDERS, action="append", help="run only this provider (repeatable)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows and the environment as JSON")
    parser.add_argument("--child", nargs=2, metavar=("PROVIDER", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]), args.device)))
        return 0
    device = torch.device(args.device)
    rows = run(device, layers=args.layers, heads=args.heads, providers=tuple(args.only or PROVIDERS))
    fill_ratios(rows, BASELINES)
    print(format_table(rows))
    if args.json:
        write_json(args.json, environment(device), vars(args), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
