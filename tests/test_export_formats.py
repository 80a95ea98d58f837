"""AOTInductor and ONNX exports of the tiny artist through ``spc-fast export`` (one of each per session): the
manifest, a reload in a fresh process that never imports diffusers or our model code, parity at two aspect ratios
and two H_c lengths from one artifact, the out-of-range error and the exit status of a failed parity check."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spc_fast.export.cli import main
from spc_fast.export.runtime import EngineDenoiser, load_engine
from spc_fast.export.step import ArtistStep, step_inputs
from spc_fast.models import tiny_artist

pytestmark = pytest.mark.slow
ARTIFACTS = {"aoti": "artist_step.pt2", "onnx": "artist_step.onnx"}


@pytest.fixture(params=["aoti", "onnx"])
def exported(request, tiny_aoti_export: Path, tiny_onnx_export: Path) -> tuple[str, Path]:
    """(format, directory) of the session's exports (tests/conftest.py, ``TINY_EXPORT_LIMITS``)."""
    return request.param, {"aoti": tiny_aoti_export, "onnx": tiny_onnx_export}[request.param]


def test_manifest_describes_the_export(exported):
    format_name, directory = exported
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["format"] == format_name and manifest["artifact"] == ARTIFACTS[format_name]
    assert (directory / manifest["artifact"]).is_file()
    assert manifest["precision"] == "fp32" and manifest["device"] == "cpu"
    assert [entry["name"] for entry in manifest["inputs"]] == ["noise", "source", "t", "h_c", "h_c_mask"]
    assert manifest["ranges"]["batch"] == [1, 3] and manifest["ranges"]["hc_len"] == [2, 512]
    assert manifest["ranges"]["pixels"] == [64 * 64, 192 * 192]
    parity = manifest["parity"]
    assert parity["passed"] is True and parity["max_rel"] <= parity["threshold"] == 1e-4
    assert len(parity["cases"]) == 4 and parity["max_abs"] == max(case["max_abs"] for case in parity["cases"])
    assert {tuple(case["noise"]) for case in parity["cases"]} == {(6, 6), (4, 8)}  # two aspect ratios
    assert {case["hc_len"] for case in parity["cases"]} == {8, 512}  # two H_c lengths
    assert len(manifest["source"]["sha256"]) == 64 and manifest["source"]["weights"] == "tiny"
    assert manifest["model"]["config"]["num_layers"] == 2
    runtime = {"aoti": "torch", "onnx": "onnxruntime"}[format_name]
    assert runtime in manifest["versions"] and "torch" in manifest["versions"]


_CHILD = r"""
import json, sys, torch
directory, format_name, cases_path = sys.argv[1:]
cases = torch.load(cases_path)
if format_name == "aoti":
    runner = torch._inductor.aoti_load_package(directory + "/artist_step.pt2")
    run = lambda *args: (lambda out: out[0] if isinstance(out, (list, tuple)) else out)(runner(*args))
else:
    import onnxruntime
    session = onnxruntime.InferenceSession(directory + "/artist_step.onnx", providers=["CPUExecutionProvider"])
    names = ["noise", "source", "t", "h_c", "h_c_mask"]
    run = lambda *args: torch.from_numpy(session.run(None, dict(zip(names, (a.numpy() for a in args))))[0])
plain = [((run(*args) - expected).abs().max() / expected.abs().max()).item() for args, expected in cases]
ours_before = sorted(m for m in sys.modules if m.startswith(("spc_fast", "diffusers", "transformers")))
from spc_fast.export.runtime import load_engine
engine = load_engine(directory)
runtime = [((engine(*args) - expected).abs().max() / expected.abs().max()).item() for args, expected in cases]
heavy = sorted(m for m in sys.modules if m.startswith(("diffusers", "transformers", "spc_fast.artist",
                                                          "spc_fast.models")))
print(json.dumps({"plain": plain, "runtime": runtime, "before": ours_before, "heavy": heavy}))
"""


def test_fresh_process_reloads_without_model_code(exported, tmp_path):
    format_name, directory = exported
    step = ArtistStep(tiny_artist().transformer).eval()
    generator = torch.Generator().manual_seed(7)
    cases = []
    for batch, noise, source, hc_len in [
        (1, (5, 5), (5, 5), 6),
        (2, (5, 5), (6, 5), 40),
        (3, (3, 9), (4, 8), 6),
        (1, (3, 9), (3, 9), 40),
    ]:
        args = step_inputs(
            batch, noise, source, hc_len, 64, dtype=torch.float32, device="cpu", generator=generator, padding=2
        )
        with torch.no_grad():
            cases.append((args, step(*args)))
    torch.save(cases, tmp_path / "cases.pt")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(directory), format_name, str(tmp_path / "cases.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["before"] == [], "the artifact alone must load without our code"
    assert result["heavy"] == [], "the runtime must not import the model code"
    assert max(result["plain"]) < 1e-4 and max(result["runtime"]) < 1e-4


def test_out_of_range_names_the_exported_range(exported):
    engine = load_engine(exported[1])
    generator = torch.Generator().manual_seed(0)
    too_long = step_inputs(1, (4, 4), (4, 4), 513, 64, dtype=torch.float32, device="cpu", generator=generator)
    with pytest.raises(ValueError, match=r"hc_len=513 outside \[2, 512\].*exported: batch 1..3"):
        engine(*too_long)
    too_big = step_inputs(4, (4, 4), (4, 4), 8, 64, dtype=torch.float32, device="cpu", generator=generator)
    with pytest.raises(ValueError, match=r"batch=4 outside \[1, 3\]"):
        engine(*too_big)


def test_artist_samples_through_the_engine(exported):
    artist = tiny_artist()
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    h_c = torch.randn(2, 9, 64, generator=torch.Generator().manual_seed(4))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False

    def seeds(*values):
        return [torch.Generator().manual_seed(value) for value in values]

    expected = artist.edit(images, h_c, mask, generator=seeds(5, 6)).images
    artist.denoiser = EngineDenoiser(load_engine(exported[1]))
    got = artist.edit(images, h_c, mask, generator=seeds(5, 6)).images
    unmasked = artist.edit(images[:1], h_c[:1], None, generator=seeds(5)).images  # the engine gets an all-ones mask
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(unmasked, expected[:1], rtol=1e-4, atol=1e-4)


def test_failed_parity_exits_1_and_says_so(tiny_onnx_export, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_onnx_export, copy)
    assert main(["--verify", str(copy), "--parity-threshold", "0"]) == 1
    assert "passed: false" in capsys.readouterr().out
    parity = json.loads((copy / "manifest.json").read_text())["parity"]
    assert parity["passed"] is False and parity["threshold"] == 0 and parity["max_abs"] > 0
