"""TensorRT through torch-tensorrt's dynamo path: the exported program compiled into engines with one optimisation
profile spanning the manifest's ranges (optimised for a 1 MP grid), saved as an ExportedProgram that
``torch.export.load`` runs with only torch-tensorrt's runtime op, none of our code.

Engines build only on a CUDA machine with TensorRT; everything up to the exported program and the input
profiles is the same code as the other formats and is tested on the CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from spc_fast.export.ranges import ExportRanges
from spc_fast.export.step import dynamic_shapes

ARTIFACT = "artist_step.ep"
OPT_SIDE = 64  # a 1 MP image is a 64 x 64 token grid
OPT_HC_TOKENS = 512
INSTALL_HINT = "pip install 'spc-fast[trt]' on a CUDA machine (TensorRT engines build only on a GPU)"


def require_torch_tensorrt():
    """The torch_tensorrt module; ImportError (no torch_tensorrt) or ValueError (no CUDA device) with the fix."""
    try:
        import torch_tensorrt
    except ImportError as error:
        raise ImportError(f"--format tensorrt needs torch_tensorrt: {INSTALL_HINT}") from error
    if not torch.cuda.is_available():
        raise ValueError(f"--format tensorrt needs a CUDA device: {INSTALL_HINT}")
    return torch_tensorrt


def input_profiles(ranges: ExportRanges, width: int, channels: int = 64) -> list[dict[str, tuple[int, ...]]]:
    """(min, opt, max) shapes of the five inputs, in the order of ``ArtistStep.forward``: one profile for every
    aspect ratio and H_c length in the range."""

    def clamp(value: int, bounds: tuple[int, int]) -> int:
        return max(bounds[0], min(value, bounds[1]))

    sizes = {
        "min": (ranges.batch[0], ranges.side[0], ranges.side[0], ranges.hc_len[0]),
        "opt": (
            ranges.batch[0],
            clamp(OPT_SIDE, ranges.side),
            clamp(OPT_SIDE, ranges.side),
            clamp(OPT_HC_TOKENS, ranges.hc_len),
        ),
        "max": (ranges.batch[1], ranges.side[1], ranges.side[1], ranges.hc_len[1]),
    }

    def shapes(build) -> dict[str, tuple[int, ...]]:
        return {level: build(*size) for level, size in sizes.items()}

    return [
        shapes(lambda b, h, w, _: (b, h, w, channels)),
        shapes(lambda b, h, w, _: (b, h, w, channels)),
        shapes(lambda b, h, w, _: (b,)),
        shapes(lambda b, h, w, n: (b, n, width)),
        shapes(lambda b, h, w, n: (b, n)),
    ]


def export_tensorrt(
    program: torch.export.ExportedProgram,
    ranges: ExportRanges,
    width: int,
    precision: str,
    directory: Path,
) -> str:
    """Build the engines for ``program`` and save them into ``directory``; the artifact's file name. The program
    is in the precision's dtype (fp8: bf16 with ModelOpt's Q/DQ nodes, ``quantize_fp8``), so the engine keeps the
    traced types (explicit typing) instead of choosing its own."""
    trt = require_torch_tensorrt()
    dtype = torch.float16 if precision == "fp16" else torch.float32 if precision == "fp32" else torch.bfloat16
    dtypes = (dtype, dtype, dtype, dtype, torch.bool)
    inputs = [
        trt.Input(min_shape=p["min"], opt_shape=p["opt"], max_shape=p["max"], dtype=d)
        for p, d in zip(input_profiles(ranges, width), dtypes, strict=True)
    ]
    module = trt.dynamo.compile(program, arg_inputs=inputs, use_explicit_typing=True, immutable_weights=True)
    trt.save(module, str(directory / ARTIFACT), arg_inputs=inputs, output_format="exported_program")
    return ARTIFACT


def refittable_step(step: torch.nn.Module, ranges: ExportRanges):
    """A ``MutableTorchTensorRTModule`` over the step: it refits its engine when weights change (a LoRA loaded or
    merged), at the cost of an engine built without weight-specific optimisations. It lives in the process (it is
    not an artifact): the option for swapping LoRAs on a GPU."""
    trt = require_torch_tensorrt()
    module = trt.MutableTorchTensorRTModule(step, use_explicit_typing=True, immutable_weights=False)
    module.set_expected_dynamic_shape_range(dynamic_shapes(ranges), {})
    return module


def quantize_fp8(step: torch.nn.Module, calibration: list[tuple[torch.Tensor, ...]]):
    """Insert FP8 quantize/dequantize nodes into ``step`` with NVIDIA ModelOpt, calibrated on ``calibration``
    (input tuples); returns the context that ``torch.export`` must run in to keep those nodes. TensorRT turns them
    into FP8 layers (Hopper or newer)."""
    try:
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.utils import export_torch_mode
    except ImportError as error:
        raise ImportError(
            "--precision fp8 needs NVIDIA ModelOpt: pip install nvidia-modelopt on a CUDA machine"
        ) from error

    def calibrate(model: torch.nn.Module) -> None:
        with torch.no_grad():
            for args in calibration:
                model(*args)

    mtq.quantize(step, mtq.FP8_DEFAULT_CFG, forward_loop=calibrate)
    return export_torch_mode()


def load_tensorrt(path: Path, device: str = "cuda"):
    """A callable over the step's five inputs returning the velocity (needs torch_tensorrt's runtime); its engines
    are deserialised on the GPU that ``device`` names (``cuda:N``; plain ``cuda``: the current one)."""
    require_torch_tensorrt()
    index = torch.device(device).index
    with torch.cuda.device(index) if index is not None else contextlib.nullcontext():
        module = torch.export.load(str(path)).module()

    def run(*args: torch.Tensor) -> torch.Tensor:
        out = module(*args)
        return out[0] if isinstance(out, (list, tuple)) else out

    return run
