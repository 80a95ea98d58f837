"""The pipeline and ``spc-fast enhance --engine`` sampling through an exported DiT step: the same images as the eager
tiny artist, the DiT never loaded (its parameters on the meta device), and clear errors when an engine does not fit
the artist or an image falls outside the exported range. The ONNX export is the session's (tests/conftest.py), which
test_export_formats checks too."""

import dataclasses
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from cli_runs import run_cli
from PIL import Image

from spc_fast import cli
from spc_fast.config import PRESETS, ArtistConfig
from spc_fast.models import build_artist
from spc_fast.pipeline import Pipeline
from spc_fast.serve import server

MAX_PIXELS = 192 * 192  # the session export's (conftest.TINY_EXPORT_LIMITS)
TINY = PRESETS["tiny"]
# what the command line needs to match the tiny preset: short critic answers (H_c within 512), few steps, small images
CLI_TINY = ["--critic", "tiny", "--artist", "tiny", "--max-new-tokens", "32", "--steps", "2", "--pixels", "4096"]


@pytest.fixture
def engine_dir(tiny_onnx_export: Path) -> Path:
    return tiny_onnx_export


def _with_engine(engine: Path | str, **changes) -> ArtistConfig:
    return dataclasses.replace(TINY.artist, engine=str(engine), **changes)


def _photos() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.rand(3, 80, 120, generator=generator), torch.rand(3, 64, 64, generator=generator)]


# ---- configuration and flags (no export) -------------------------------------------------------------------------


def test_engine_needs_weights_and_excludes_compile_and_release():
    with pytest.raises(ValueError, match="replaces the DiT only: set artist.weights"):
        ArtistConfig(engine="/models/engine")
    with pytest.raises(ValueError, match="already compiled; drop --compile"):
        ArtistConfig(weights="tiny", engine="/models/engine", compile=True)
    with pytest.raises(ValueError, match="drop --release"):
        ArtistConfig(weights="/models/qwen", release="/models/release", engine="/models/engine")


def test_cli_maps_engine_and_gives_compile_to_the_critic_alone():
    args = cli.build_parser().parse_args(
        ["enhance", "in.png", "-o", "out.png", *CLI_TINY, "--engine", "E", "--compile"]
    )
    config = cli.pipeline_config(args)
    assert config.artist.engine == "E" and not config.artist.compile and config.critic.compile
    edit = cli.build_parser().parse_args(
        ["edit", "--instruction", "brighten", "in.png", "-o", "o.png", "--engine", "E"]
    )
    with pytest.raises(ValueError, match=r"set artist.weights \(--artist\) too"):
        cli.pipeline_config(edit)


def test_serve_maps_engine():
    config = server.pipeline_config(server.parse_args(["--critic", "tiny", "--artist", "tiny", "--engine", "E"]))
    assert config.artist.engine == "E" and config.artist.weights == "tiny"
    with pytest.raises(ValueError, match="--engine needs --artist"):
        server.pipeline_config(server.parse_args(["--critic", "tiny", "--engine", "E"]))


def test_missing_engine_directory_says_what_to_pass(tmp_path):
    for directory in (tmp_path / "absent", tmp_path):
        with pytest.raises(FileNotFoundError, match="manifest.json not found: pass the directory `spc-fast export"):
            build_artist(_with_engine(directory))


# ---- through an exported engine ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_matches_the_eager_artist(engine_dir):
    eager = Pipeline.from_config(TINY).enhance(_photos())
    pipeline = Pipeline.from_config(dataclasses.replace(TINY, artist=_with_engine(engine_dir)))
    assert pipeline.artist.artist.engine is not None  # the DiT is on the meta device: only the engine can sample
    exported = pipeline.enhance(_photos())
    for got, expected in zip(exported.images, eager.images, strict=True):
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert [r.full_res for r in exported.records] == [r.full_res for r in eager.records]


@pytest.mark.slow
def test_the_dit_is_never_loaded(engine_dir):
    artist = build_artist(_with_engine(engine_dir))
    assert {p.device.type for p in artist.transformer.parameters()} == {"meta"}
    assert artist.device == torch.device("cpu") and artist.dtype == torch.float32 and artist.vae.device.type == "cpu"
    assert artist.attention == "exported (onnx)" and artist.engine.format == "onnx"
    with pytest.raises(ValueError, match="needs the eager DiT"):
        artist.velocity(torch.zeros(1, 4, 64), 500.0, torch.zeros(1, 4, 64), torch.zeros(1, 3, 64), None, [])


@pytest.mark.slow
def test_enhance_command_runs_the_engine(engine_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    pixels = (np.random.default_rng(0).random((72, 96, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(photo)
    command = ["enhance", *CLI_TINY, "--engine", engine_dir, photo, "-o", tmp_path / "engine.png"]
    done = subprocess.run(
        [sys.executable, "-m", "spc_fast", *map(str, command), "--report", str(tmp_path / "report.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    code, _, err = run_cli(capsys, "enhance", *CLI_TINY, photo, "-o", tmp_path / "eager.png")
    assert code == 0, err
    got, expected = (np.asarray(Image.open(tmp_path / name), dtype=np.int16) for name in ("engine.png", "eager.png"))
    assert got.shape == pixels.shape and np.abs(got - expected).max() <= 1
    report = json.loads((tmp_path / "report.json").read_text())
    assert "exported (onnx)" in json.dumps(report)


@pytest.mark.slow
def test_mismatches_name_both_values_and_the_fix(engine_dir):
    with pytest.raises(ValueError, match=r"dtype float32 in the engine, bfloat16 here.*--dtype float32"):
        build_artist(_with_engine(engine_dir, dtype="bfloat16"))
    with pytest.raises(ValueError, match=r"release_mlp False in the engine, True here.*drop --release-mlp"):
        build_artist(_with_engine(engine_dir, release_mlp=True))
    with pytest.raises(ValueError, match=rf"works at 65536 pixels, outside the engine's 4096..{MAX_PIXELS}"):
        build_artist(_with_engine(engine_dir, pixels=256 * 256))


def test_the_pipeline_checks_the_engine_before_loading_the_critic(engine_dir, tmp_path):
    critic = dataclasses.replace(TINY.critic, weights=str(tmp_path / "no-critic-here"))
    config = dataclasses.replace(TINY, critic=critic, artist=_with_engine(engine_dir, dtype="bfloat16"))
    with pytest.raises(ValueError, match="dtype float32 in the engine, bfloat16 here"):
        Pipeline.from_config(config)


@pytest.mark.slow
def test_edited_manifests_are_refused(engine_dir, tmp_path):
    manifest = json.loads((engine_dir / "manifest.json").read_text())
    cases = {
        "width": (
            {
                **manifest,
                "model": {**manifest["model"], "config": {**manifest["model"]["config"], "joint_attention_dim": 32}},
            },
            "joint_attention_dim 32 in the engine, 64",
        ),
        "device": ({**manifest, "device": "cuda"}, r"device cuda in the engine, cpu here.*--device cuda"),
        "parity": ({**manifest, "parity": {**manifest["parity"], "passed": False}}, "a failed parity check"),
        "unfinished": ({**manifest, "parity": None}, "no parity check"),
    }
    for name, (edited, message) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(ValueError, match=message):
            build_artist(_with_engine(tmp_path / name))
    shutil.copy(engine_dir / "manifest.json", tmp_path / "manifest.json")  # the artifact itself missing
    with pytest.raises(FileNotFoundError, match=r"artist_step.onnx \(named in .*manifest.json\) is missing"):
        build_artist(_with_engine(tmp_path))


@pytest.mark.slow
def test_an_image_outside_the_exported_range_names_it(engine_dir):
    pipeline = Pipeline.from_config(dataclasses.replace(TINY, artist=_with_engine(engine_dir)))
    strip = torch.rand(3, 16, 400, generator=torch.Generator().manual_seed(1))  # a 1-token-high latent grid
    with pytest.raises(ValueError, match=r"outside the exported range \(noise_h=1 outside \[2, 24\].*Resize the input"):
        pipeline.enhance([strip])


@pytest.mark.slow
def test_serve_runs_the_engine(engine_dir, tmp_path):
    pytest.importorskip("litserve", reason="spc-fast serve needs the [serve] extra: pip install 'spc-fast[serve]'")
    from test_serve import _photo, _server

    flags = f"--preset tiny --critic tiny --artist tiny --engine {engine_dir} --timeout-s=120"
    with _server(tmp_path / "server.log", flags) as (url, _):
        files = {"image": ("photo.png", _photo("PNG"), "image/png")}
        answer = requests.post(url + "/enhance", files=files, timeout=120)
        assert answer.status_code == 200, answer.text
        assert Image.open(io.BytesIO(answer.content)).size == (48, 32)
        assert requests.get(url + "/health", timeout=10).status_code == 200
