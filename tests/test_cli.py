"""The spc-fast command line, run in-process on scikit-image's bundled photos (plus one real subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import run_cli as _run
from PIL import ExifTags, Image

from spc_fast import cli, photometric
from spc_fast.imagefiles import load_image, load_tensor, save_image

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png")


pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    import skimage.data

    data = Path(skimage.data.__file__).parent
    for name in PHOTOS:
        shutil.copy(data / name, tmp_path / name)
    return tmp_path



def test_analyze_table(photo_dir, capsys):
    code, out, err = _run(capsys, "analyze", *(photo_dir / name for name in PHOTOS))
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["file", "size", "exposure", "contrast", "saturation", "cct", "(K)"]
    assert len(rows) == 3
    assert rows[0].startswith(str(photo_dir / "astronaut.png")) and "512x512" in rows[0]
    assert "451x300" in rows[1] and "600x400" in rows[2]


def test_analyze_json_matches_the_library(photo_dir, capsys):
    paths = [photo_dir / name for name in PHOTOS]
    code, out, _ = _run(capsys, "analyze", "--json", *paths)
    assert code == 0
    rows = json.loads(out)
    assert [row["file"] for row in rows] == [str(p) for p in paths]
    for row, path in zip(rows, paths, strict=True):
        tensor = load_tensor(path)
        assert (row["width"], row["height"]) == (tensor.shape[2], tensor.shape[1])
        assert tuple(row["attributes"]) == photometric.ATTRIBUTE_NAMES
        expected = photometric.attributes(tensor).tolist()
        np.testing.assert_allclose(list(row["attributes"].values()), expected, rtol=1e-6)


def test_analyze_reports_bad_files_after_the_good_ones(photo_dir, capsys):
    bad = photo_dir / "broken.png"
    bad.write_bytes((photo_dir / "coffee.png").read_bytes()[:2000])
    missing = photo_dir / "missing.jpg"
    code, out, err = _run(
        capsys, "analyze", photo_dir / "chelsea.png", bad, missing, photo_dir / "coffee.png"
    )
    assert code == 1
    assert "chelsea.png" in out and "coffee.png" in out and "broken" not in out
    assert f"spc-fast: error: {bad}: truncated or corrupt" in err
    assert f"spc-fast: error: {missing}: no such file" in err
    assert "2 of 4 images failed" in err and "Traceback" not in err

    code, out, err = _run(capsys, "analyze", "--json", bad, photo_dir / "chelsea.png")
    assert code == 1 and [row["file"] for row in json.loads(out)] == [str(photo_dir / "chelsea.png")]


def test_retouch_writes_output_and_keeps_metadata(photo_dir, capsys):
    source = photo_dir / "in.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    Image.open(photo_dir / "chelsea.png").save(source, quality=95, exif=exif.tobytes())
    out = photo_dir / "out.jpg"
    code, stdout, err = _run(capsys, "retouch", source, "-o", out, "--exposure", "0.5", "--temperature", "20")
    assert code == 0, err
    assert f"wrote {out} (8-bit)" in stdout and "before" in stdout and "after" in stdout
    before, after = photometric.attributes(torch.stack([load_tensor(source), load_tensor(out)])).tolist()
    assert after[0] > before[0] + 3  # brighter
    assert after[3] < before[3]  # warmer = lower cct
    with Image.open(out) as image:
        assert image.getexif()[ExifTags.Base.Make] == "TestCam"


def test_retouch_refuses_to_overwrite(photo_dir, capsys):
    source = photo_dir / "chelsea.png"
    original = source.read_bytes()
    code, _, err = _run(capsys, "retouch", source, "-o", source, "--exposure", "1")
    assert code == 1 and "spc-fast: error:" in err and "is the input file" in err and "Traceback" not in err
    assert source.read_bytes() == original

    out = photo_dir / "out.png"
    out.write_bytes(b"keep")
    code, _, err = _run(capsys, "retouch", source, "-o", out, "--saturation", "1.5")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"keep"
    code, _, _ = _run(capsys, "retouch", source, "-o", out, "--saturation", "1.5", "--overwrite")
    assert code == 0 and load_image(out).shape == (300, 451, 3)


def test_retouch_bad_parameter_is_a_clean_error(photo_dir, capsys):
    code, _, err = _run(
        capsys, "retouch", photo_dir / "coffee.png", "-o", photo_dir / "o.png", "--contrast", "-1"
    )
    assert code == 1 and err.startswith("spc-fast: error:") and "contrast" in err
    assert not (photo_dir / "o.png").exists()


def test_retouch_16bit_png_stays_16bit(tmp_path, capsys):
    ramp = np.linspace(0.1, 0.9, 40 * 30 * 3, dtype=np.float32).reshape(40, 30, 3)
    source = save_image(tmp_path / "in.png", ramp, bit_depth=16)
    code, stdout, _ = _run(capsys, "retouch", source, "-o", tmp_path / "out.png", "--contrast", "1.2")
    assert code == 0 and "(16-bit)" in stdout
    out = load_image(tmp_path / "out.png")
    assert out.dtype == np.float32 and len(np.unique(out)) > 256  # more levels than 8 bits hold
    code, stdout, _ = _run(capsys, "retouch", source, "-o", tmp_path / "out.jpg", "--contrast", "1.2")
    assert code == 0 and "(8-bit)" in stdout


@pytest.mark.parametrize("name, module", [("bench", "spc_fast.bench.runner"), ("train", "spc_fast.training.cli"),
                                          ("data", "spc_fast.training.data.cli")])
def test_delegated_subcommands_get_every_argument(name, module, monkeypatch, capsys):
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(module), "main", lambda argv: seen.append(argv) or 7)
    assert cli.main([name, "--json", "rows.json", "--only", "photometric", "--quick"]) == 7
    assert cli.main(["-v", name, "--help"]) == 7
    assert cli.main([name]) == 7
    assert seen == [["--json", "rows.json", "--only", "photometric", "--quick"], ["--help"], []]


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        cli.main(["retouch", "in.png"])  # -o is required
    assert "--output" in capsys.readouterr().err


def test_console_script_and_light_import(photo_dir):
    script = shutil.which("spc-fast")
    if script is None:
        pytest.skip("the spc-fast console script is not installed (pip install -e .)")
    env = {**os.environ, "SPC_FAST_DISABLE_TRITON": "1"}
    result = subprocess.run(
        [script, "analyze", "chelsea.png"],
        cwd=photo_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith("chelsea.png") and "451x300" in result.stdout
    heavy = "{'torch', 'transformers', 'diffusers', 'PIL'}"
    probe = f"import sys, spc_fast.cli; print(sorted({heavy} & set(sys.modules)))"
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert imported.stdout.strip() == "[]"
