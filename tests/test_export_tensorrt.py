"""The TensorRT path up to what a CPU can check: the exported program it compiles and the (min, opt, max) input
profiles agree dim by dim; without torch_tensorrt the command stops with the fix. The engine build itself runs
only on a CUDA machine with torch-tensorrt (the gpu test)."""

import importlib.util
import json

import pytest
import torch

from spc_fast.export.cli import main
from spc_fast.export.ranges import ExportRanges
from spc_fast.export.step import ArtistStep, dynamic_shapes, example_inputs
from spc_fast.export.tensorrt import OPT_SIDE, input_profiles
from spc_fast.models import tiny_artist

RANGES = ExportRanges.from_limits(64 * 64, 1024 * 1024, max_batch=4, max_hc_tokens=1024)
HAS_TRT = importlib.util.find_spec("torch_tensorrt") is not None


@pytest.mark.slow
def test_profiles_span_the_exported_program():
    step = ArtistStep(tiny_artist().transformer).eval()
    program = torch.export.export(
        step, example_inputs(RANGES, 64, torch.float32, "cpu"), dynamic_shapes=dynamic_shapes(RANGES)
    )
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"][-5:]
    profiles = input_profiles(RANGES, width=64)
    assert len(profiles) == len(placeholders)
    for node, profile in zip(placeholders, profiles, strict=True):
        shape = node.meta["val"].shape
        assert len(shape) == len(profile["min"]) == len(profile["opt"]) == len(profile["max"])
        for axis, size in enumerate(shape):
            low, opt, high = (profile[level][axis] for level in ("min", "opt", "max"))
            assert low <= opt <= high
            if isinstance(size, torch.SymInt):
                bounds = program.range_constraints[size.node.expr]
                assert (int(bounds.lower), int(bounds.upper)) == (low, high), (node.name, axis)
            else:
                assert low == opt == high == size, (node.name, axis)
    assert profiles[0]["opt"][1:3] == (OPT_SIDE, OPT_SIDE)  # optimised for a 1 MP grid


@pytest.mark.skipif(HAS_TRT, reason="torch_tensorrt is installed here")
def test_without_torch_tensorrt_the_command_names_the_fix(tmp_path, capsys):
    assert main(["--artist", "tiny", "--format", "tensorrt", "--out", str(tmp_path)]) == 1
    assert "pip install 'spc-fast[trt]' on a CUDA machine" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()


@pytest.mark.gpu
@pytest.mark.slow
def test_engine_builds_reloads_and_matches_eager(tmp_path):
    pytest.importorskip("torch_tensorrt")
    limits = ["--max-pixels", str(256 * 256), "--max-batch", "2", "--max-hc-tokens", "64"]
    assert (
        main(
            [
                "--artist",
                "tiny",
                "--format",
                "tensorrt",
                "--precision",
                "bf16",
                "--device",
                "cuda",
                "--out",
                str(tmp_path),
                *limits,
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifact"] == "artist_step.ep" and manifest["parity"]["passed"] is True
