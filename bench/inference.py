"""One DiT step through every backend the artist deploys on: eager, ``torch.compile``, the AOTInductor ``.pt2``
and the ONNX model of ``spc_fast.export`` (loaded with ``load_engine``, as deployed), and TensorRT where
torch-tensorrt and CUDA exist. The step is ``ArtistStep`` (the module ``spc-fast export`` exports), every backend
gets the same inputs, and each row carries its speed-up over eager in the same run and the max abs difference from
eager's velocity. Export and compile times are in the notes, never in the step latency.

CPU: the tiny DiT, float32, at 128² (8 x 8 noisy + 8 x 8 source tokens, 48 H_c tokens; the export tests' sizes).
CUDA: the release width with ``GPU_LAYERS`` layers and random weights, bf16, at 1 MP (64 x 64 + 64 x 64 tokens,
1024 H_c tokens). Batch 1 and 4 on both; the exported ranges cover them.

``torch.compile`` is fullgraph; on CUDA with ``mode="reduce-overhead"`` (CUDA graphs): a served step at batch 1
gets them for free, while max-autotune's GEMM search would take minutes of the GPU check's budget and measure a
tuning that the AOTI export (default Inductor options) does not do. The CPU has no CUDA graphs: default mode.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from spc_fast import attention
from spc_fast.artist.rope import use_real_rope
from spc_fast.bench.artist_step import dit_step_flops, least_bytes
from spc_fast.bench.harness import Row, measure, not_run
from spc_fast.export import ArtistStep, ExportRanges, load_engine
from spc_fast.export.manifest import write_manifest
from spc_fast.export.step import dynamic_shapes, example_inputs, step_inputs
from spc_fast.models import qwen_image

BASELINES = ("eager",)
ERROR_KIND = "max |v - v_eager|, absolute (eager's velocity on the same inputs, in the run's dtype)"
# AOTI last: on the H200 (torch 2.11) loading its 2-layer package crashed the process, which must not cost the rows
# of the backends measured after it
PROVIDERS = ("eager", "torch.compile", "ONNX Runtime", "TensorRT", "AOTI")
GPU_LAYERS = 2
BATCHES = (1, 4)
# (min pixels, max pixels, max batch, max H_c tokens) of the exports, output side and H_c tokens of the cases
LIMITS = {"cpu": (64 * 64, 192 * 192, 4, 48), "cuda": (256 * 256, 1024 * 1024, 4, 1024)}
CASE = {"cpu": (128, 48), "cuda": (1024, 1024)}

Backend = Callable[..., torch.Tensor]


@dataclass
class Setup:
    """The eager step and what every backend is built from."""

    step: ArtistStep
    what: str
    ranges: ExportRanges
    side: int
    hc_len: int
    directory: Path

    @property
    def dtype(self) -> torch.dtype:
        return next(self.step.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.step.parameters()).device

    @property
    def width(self) -> int:
        return self.step.transformer.config.joint_attention_dim


def build(device: torch.device, directory: Path) -> Setup:
    """The eager step for ``device`` (real-valued RoPE and SDPA, as ``spc-fast export`` builds it)."""
    if device.type == "cuda":
        transformer, what = qwen_image.build_dit(GPU_LAYERS, torch.bfloat16, device), f"release {GPU_LAYERS} layers"
    else:
        transformer, what = qwen_image.tiny_artist_components(0)[0].to(device), "tiny"
    attention.set_dit_attention(use_real_rope(transformer), "sdpa")
    side, hc_len = CASE[device.type]
    ranges = ExportRanges.from_limits(*LIMITS[device.type])
    return Setup(ArtistStep(transformer).eval(), what, ranges, side, hc_len, directory)


def case_inputs(setup: Setup, batch: int) -> tuple[torch.Tensor, ...]:
    grid = (setup.side // 16, setup.side // 16)
    generator = torch.Generator().manual_seed(batch)
    return step_inputs(
        batch, grid, grid, setup.hc_len, setup.width, dtype=setup.dtype, device=setup.device, generator=generator
    )


def _engine(setup: Setup, format_name: str, artifact: str, dtype: torch.dtype) -> Backend:
    """``load_engine`` over an artifact just written: the manifest entries the runtime reads."""
    directory = setup.directory / format_name
    entries = {
        "format": format_name,
        "artifact": artifact,
        "dtype": str(dtype).removeprefix("torch."),
        "device": setup.device.type,
        "ranges": setup.ranges.as_manifest(),
    }
    write_manifest(directory, entries)
    return load_engine(directory)


def _program(setup: Setup) -> torch.export.ExportedProgram:
    args = example_inputs(setup.ranges, setup.width, setup.dtype, setup.device)
    return torch.export.export(setup.step, args, dynamic_shapes=dynamic_shapes(setup.ranges))


def _aoti(setup: Setup) -> Backend:
    from spc_fast.export.aoti import export_aoti

    (setup.directory / "aoti").mkdir()
    return _engine(setup, "aoti", export_aoti(_program(setup), setup.directory / "aoti"), setup.dtype)


def _onnx(setup: Setup) -> Backend | str:
    from spc_fast.export.onnx_format import export_onnx

    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime is not installed (pip install 'spc-fast[export]')"
    if setup.device.type == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    step, dtype = setup.step, setup.dtype
    if dtype == torch.bfloat16:  # the ONNX export takes fp32 or fp16: an fp16 copy of the same weights
        step, dtype = ArtistStep(copy.deepcopy(setup.step.transformer).half()).eval(), torch.float16
    (setup.directory / "onnx").mkdir()
    args = example_inputs(setup.ranges, setup.width, dtype, setup.device)
    engine = _engine(
        setup, "onnx", export_onnx(step, args, dynamic_shapes(setup.ranges), setup.directory / "onnx"), dtype
    )
    if dtype == setup.dtype:
        return engine
    return lambda *args: engine(*(a.to(dtype) if a.is_floating_point() else a for a in args)).to(setup.dtype)


def _tensorrt(setup: Setup) -> Backend | str:
    from spc_fast.export.tensorrt import export_tensorrt, require_torch_tensorrt

    try:
        require_torch_tensorrt()
    except (ImportError, ValueError) as error:
        return str(error).removeprefix("--format tensorrt ")
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[setup.dtype]
    (setup.directory / "tensorrt").mkdir()
    artifact = export_tensorrt(_program(setup), setup.ranges, setup.width, precision, setup.directory / "tensorrt")
    return _engine(setup, "tensorrt", artifact, setup.dtype)


def _compile(setup: Setup) -> Backend:
    mode = "reduce-overhead" if setup.device.type == "cuda" else None
    return torch.compile(setup.step, fullgraph=True, mode=mode)


BUILDERS: dict[str, Callable[[Setup], Backend | str]] = {
    "eager": lambda setup: setup.step,
    "torch.compile": _compile,
    "AOTI": _aoti,
    "ONNX Runtime": _onnx,
    "TensorRT": _tensorrt,
}


def _row(name: str, case: str, fn: Backend, args: tuple, expected: torch.Tensor, setup: Setup, note: str) -> Row:
    started = time.perf_counter()
    got = fn(*args).float()  # a compiled backend compiles for this shape here
    first_s = time.perf_counter() - started
    p20, p50, p80 = measure(lambda: fn(*args), setup.device, budget_s=3.0)
    flops, _ = dit_step_flops(
        setup.step.transformer.config, args[0].shape[0], 2 * (setup.side // 16) ** 2, setup.hc_len
    )
    return Row(
        bench="inference",
        case=case,
        provider=name,
        p20_ms=p20,
        p50_ms=p50,
        p80_ms=p80,
        max_error=float((got - expected).abs().max()),
        flops=flops,
        bytes_moved=least_bytes(setup.step, [*args, args[0]]),  # the velocity has the noise's shape
        note=f"{note}first call {first_s:.2f} s; {flops / (p50 * 1e-3) / 1e12:.3g} TFLOP/s",
    )


def run(device: torch.device, quick: bool = False) -> list[Row]:
    """Rows for every provider and batch; ``quick``: eager only, the others as rows that say they were not run."""
    with tempfile.TemporaryDirectory(prefix="spc-fast-inference-") as tmp, torch.no_grad():
        setup = build(device, Path(tmp))
        dtype = str(setup.dtype).removeprefix("torch.")
        cases = {b: f"{setup.what} {setup.side}² B={b} {dtype}" for b in BATCHES}
        inputs = {b: case_inputs(setup, b) for b in BATCHES}
        expected = {b: setup.step(*inputs[b]).float() for b in BATCHES}
        rows = []
        for name in PROVIDERS:
            if quick and name != "eager":
                rows += [not_run("inference", cases[b], name, "--quick (no compilation or export)") for b in BATCHES]
                continue
            started = time.perf_counter()
            try:
                backend = BUILDERS[name](setup)
            except Exception as error:  # noqa: BLE001 - a backend that fails to build is a row, not a lost run
                backend = f"failed to build: {type(error).__name__}: {str(error)[:200]}"
            if isinstance(backend, str):
                rows += [not_run("inference", cases[b], name, backend) for b in BATCHES]
                continue
            built_s = time.perf_counter() - started
            note = f"export {built_s:.1f} s; " if name in ("AOTI", "ONNX Runtime", "TensorRT") else ""
            for b in BATCHES:
                rows.append(_row(name, cases[b], backend, inputs[b], expected[b], setup, note))
                print(f"inference: {name} B={b}: p50 {rows[-1].p50_ms:.3g} ms ({rows[-1].note})", flush=True)
    return rows
