"""``spc-fast enhance`` before any pixel is decoded: what a folder yields and what it skips (and why), the report
path's rules, output folders that cannot be made or written, ``--skip-existing``; and what passes through a run
unchanged (transparency, 16-bit depth)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import run_cli as _run
from PIL import Image

from spc_fast import batch, batch_plan, cli, imagefiles
from spc_fast.imagefiles import load_image

pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture(scope="module")
def small_photos() -> dict[str, np.ndarray]:
    from spc_fast.bench.enhance_quality import load_photos

    photos = load_photos(("astronaut.png", "chelsea.png", "coffee.png"), 64)
    return {name: (image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for name, image in photos.items()}


@pytest.fixture
def photo_dir(tmp_path, small_photos) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, pixels in small_photos.items():
        imagefiles.save_image(folder / name, pixels)
    return folder



def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_folder_reads_what_pillow_reads_and_lists_what_it_skips(photo_dir, tmp_path, small_photos, capsys):
    Image.fromarray(small_photos["coffee.png"]).save(photo_dir / "bitmap.bmp")
    Image.fromarray(small_photos["chelsea.png"]).convert("P").save(photo_dir / "palette.gif")
    (photo_dir / "notes.txt").write_text("not a photo")
    (photo_dir / ".hidden.png").write_bytes((photo_dir / "coffee.png").read_bytes())
    (photo_dir / "sub").mkdir()
    (photo_dir / "gone.png").symlink_to(tmp_path / "missing.png")
    os.mkfifo(photo_dir / "pipe.png")
    out, report = tmp_path / "out", tmp_path / "report.json"

    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out, "--report", report)
    assert code == 0, err
    # formats that are read but not written come out as PNG
    assert _files(out) == ["astronaut.png", "bitmap.png", "chelsea.png", "coffee.png", "palette.png"]
    assert load_image(out / "palette.png").shape == small_photos["chelsea.png"].shape
    assert f"{photo_dir}: skipped 5 entries" in err and "-v lists them" in err and "Traceback" not in err
    reasons = {Path(s["path"]).name: s["reason"] for s in json.loads(report.read_text())["skipped"]}
    assert reasons == {
        ".hidden.png": "hidden file", "gone.png": "dangling symlink", "notes.txt": "not an image extension",
        "pipe.png": "not a regular file", "sub": "folder (folders are not searched)",
    }

    code, _, err = _run(capsys, "-v", "enhance", photo_dir, "-o", tmp_path / "verbose")
    assert code == 0 and f"{photo_dir / 'gone.png'}: skipped: dangling symlink" in err and "-v lists" not in err


def test_unreadable_input_folder_is_one_line_and_the_rest_runs(photo_dir, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    scandir = os.scandir

    def denied(path):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(batch_plan.os, "scandir", denied)  # we run as root: chmod would not stop us
    code, _, err = _run(capsys, "enhance", locked, photo_dir, "-o", tmp_path / "out")
    assert code == 1 and f"{locked}: cannot list the folder (Permission denied)" in err and "Traceback" not in err
    assert _files(tmp_path / "out") == ["astronaut.png", "chelsea.png", "coffee.png"]


def test_output_folder_under_a_file_is_a_message(photo_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", tmp_path / "file" / "out")
    assert code == 1 and err.count("\n") == 1 and "a part of its path is a file" in err


def test_unwritable_output_folder_fails_before_any_work(photo_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(batch_plan.os, "access", lambda path, mode: Path(path) != out)  # root can write anywhere
    monkeypatch.setattr(batch.Pipeline, "from_config", None)  # would fail if the run got that far
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", out)
    assert code == 1 and f"{out}: the output folder is not writable" in err and err.count("\n") == 1


@pytest.mark.parametrize("where", ["input", "output of this run", "existing file"])
def test_report_path_follows_the_output_rules(photo_dir, tmp_path, monkeypatch, capsys, where):
    out = tmp_path / "out"
    report = {"input": photo_dir / "coffee.png", "output of this run": out / "coffee.png",
              "existing file": tmp_path / "old.json"}[where]
    if where == "existing file":
        report.write_text("keep me")
    before = {p: p.read_bytes() for p in [*photo_dir.iterdir(), report] if p.is_file()}
    monkeypatch.setattr(batch.Pipeline, "from_config", None)  # checked before any work starts
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", out, "--report", report)
    assert code == 1 and err.startswith(f"spc-fast: error: --report {report}:") and err.count("\n") == 1
    assert "already exists" in err and "--overwrite" in err if where == "existing file" else where in err
    assert not out.exists() and {p: p.read_bytes() for p in before} == before


def test_report_replaces_an_existing_file_only_with_overwrite(photo_dir, tmp_path, capsys):
    report = tmp_path / "old.json"
    report.write_text("old")
    code, _, err = _run(capsys, "enhance", photo_dir / "coffee.png", "-o", tmp_path / "c.png", "--report", report,
                        "--overwrite")
    assert code == 0, err
    assert json.loads(report.read_text())["images"][0]["output"] == str(tmp_path / "c.png")


def test_skip_existing_resumes_a_folder_run(photo_dir, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.json"
    out.mkdir()
    (out / "chelsea.png").write_bytes(b"finished earlier")
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", out)
    assert code == 1 and "1 of 3 images failed" in err and "--skip-existing" in err

    (out / "coffee.png").unlink()  # as if that run had been stopped before coffee
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out, "--skip-existing", "--report", report)
    assert code == 0, err
    assert "skipping 2 images whose output exists (--skip-existing)" in err and "error" not in err
    assert err.rstrip().endswith("1 written, 0 failed, 2 skipped (output exists)")
    assert (out / "chelsea.png").read_bytes() == b"finished earlier"
    payload = json.loads(report.read_text())
    assert payload["failures"] == [] and [item["output"] for item in payload["images"]] == [str(out / "coffee.png")]
    assert payload["skipped"] == [
        {"path": str(photo_dir / name), "reason": batch.OUTPUT_EXISTS} for name in ("astronaut.png", "chelsea.png")
    ]

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["enhance", str(photo_dir), "-o", str(out), "--skip-existing", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--overwrite and --skip-existing"):
        batch.plan_batch([photo_dir], out, overwrite=True, skip_existing=True)


def test_an_output_written_meanwhile_is_kept(photo_dir, tmp_path, monkeypatch, capsys):
    """Two runs racing for one output: the one that publishes second keeps the other's file."""
    enhance = batch.Pipeline.enhance

    def racing(self, images):
        (tmp_path / "out" / "coffee.png").write_bytes(b"the other run")
        return enhance(self, images)

    monkeypatch.setattr(batch.Pipeline, "enhance", racing)
    (tmp_path / "out").mkdir()
    code, _, err = _run(capsys, "enhance", photo_dir / "coffee.png", "-o", tmp_path / "out" / "coffee.png")
    assert code == 1 and "already exists" in err and "--overwrite" in err
    (tmp_path / "out" / "coffee.png").unlink()
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", tmp_path / "out", "--skip-existing")
    assert code == 0, err
    assert "skipped: its output exists" in stdout and (tmp_path / "out" / "coffee.png").read_bytes() == b"the other run"


def test_transparency_passes_through_unchanged(tmp_path, small_photos, capsys):
    rgb = small_photos["coffee.png"] // 3  # dark: the critic asks for more light
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[8:-8, 8:-8] = 255
    alpha[:, :4] = 128
    source = tmp_path / "cutout.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(source)
    code, _, err = _run(capsys, "enhance", source, "-o", tmp_path / "out.png")
    assert code == 0, err
    with Image.open(tmp_path / "out.png") as written:
        assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[..., 3], alpha)
        assert not np.array_equal(np.asarray(written)[..., :3], rgb)  # the colour was edited

    code, _, err = _run(capsys, "enhance", source, "-o", tmp_path / "out.jpg")
    assert code == 1 and f"{tmp_path / 'out.jpg'}" in err and "transparency" in err
    assert not (tmp_path / "out.jpg").exists()


def test_sixteen_bit_source_written_to_tiff_stays_sixteen_bit(tmp_path, capsys):
    ramp = np.linspace(0.05, 0.6, 40 * 56 * 3, dtype=np.float32).reshape(40, 56, 3)
    source = imagefiles.save_image(tmp_path / "deep.png", ramp, bit_depth=16)
    assert batch.output_bit_depth(torch.zeros(3, 2, 2), Path("x.TIF")) == 16
    assert batch.output_bit_depth(torch.zeros(3, 2, 2), Path("x.jpg")) == 8
    assert batch.output_bit_depth(torch.zeros(3, 2, 2, dtype=torch.uint8), Path("x.tiff")) == 8
    code, _, err = _run(capsys, "enhance", source, "-o", tmp_path / "out.tif")
    assert code == 0, err
    result = load_image(tmp_path / "out.tif")
    assert result.dtype == np.float32 and len(np.unique(result)) > 256
