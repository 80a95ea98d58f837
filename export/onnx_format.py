"""ONNX: ``torch.onnx.export(dynamo=True)`` of the step, with symbolic input dims named after the export's Dims
(``batch``, ``noise_h``, ..., ``hc_len``), run by ONNX Runtime. Models over 2 GB keep their weights in an external
data file beside the graph (protobuf's limit)."""

from __future__ import annotations

from pathlib import Path

import torch

from spc_fast.export.step import INPUT_NAMES, OUTPUT_NAMES

ARTIFACT = "artist_step.onnx"
_EXTERNAL_DATA_BYTES = 1 << 31
_NUMPY_FREE_DTYPES = (torch.bfloat16,)


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"--format onnx needs {module}: pip install 'spc-fast[export]'") from error


def export_onnx(step: torch.nn.Module, args: tuple, dynamic_shapes: tuple, directory: Path) -> str:
    """Export ``step`` traced on ``args`` into ``directory``; the artifact's file name."""
    _require("onnxscript")
    if args[0].dtype in _NUMPY_FREE_DTYPES:
        raise ValueError(
            "--format onnx takes --precision fp32 or fp16 (ONNX Runtime has no bf16 CPU kernels); "
            "use --format aoti or tensorrt for bf16"
        )
    program = torch.onnx.export(
        step,
        args,
        dynamo=True,
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        dynamic_shapes=dynamic_shapes,
    )
    weight_bytes = sum(p.numel() * p.element_size() for p in step.parameters())
    program.save(str(directory / ARTIFACT), external_data=weight_bytes >= _EXTERNAL_DATA_BYTES)
    return ARTIFACT


def load_onnx(path: Path, device: str = "cpu"):
    """A callable over the step's five torch inputs returning a torch velocity tensor (ONNX Runtime, CUDA's provider
    when ``device`` is CUDA and the installed build has it, on ``torch.get_num_threads()`` CPU threads)."""
    ort = _require("onnxruntime")
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    # torch's thread count: ONNX Runtime's own pool next to torch's oversubscribes the cores
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)

    def run(*args: torch.Tensor) -> torch.Tensor:
        feed = {name: arg.detach().cpu().numpy() for name, arg in zip(INPUT_NAMES, args, strict=True)}
        return torch.from_numpy(session.run(None, feed)[0]).to(args[0].device)

    return run
