"""``spc-fast enhance`` and ``spc-fast critique`` in-process: outputs, the report, and bad input (a truncated
file among good ones, a folder without images, an output equal to its input, a folder that cannot be
written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runs import run_cli as _run

from spc_fast import batch, cli, imagefiles, retouch
from spc_fast.batch import BatchResult, Failure, collect_inputs, enhance_files, plan_outputs, write_report
from spc_fast.critic.format import parse
from spc_fast.imagefiles import load_image, load_tensor

pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture(scope="module")
def small_photos():
    from spc_fast.bench.enhance_quality import load_photos

    return load_photos(("astronaut.png", "chelsea.png", "coffee.png"), 96)


@pytest.fixture
def photo_dir(tmp_path, small_photos) -> Path:
    """Three small photos: the astronaut as bundled (left alone), a dark coffee and a washed-out chelsea."""
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = {
        "astronaut.png": small_photos["astronaut.png"],
        "coffee.png": retouch.apply(small_photos["coffee.png"], exposure=-1.0),
        "chelsea.jpg": retouch.apply(small_photos["chelsea.png"], saturation=0.5),
    }
    for name, image in inputs.items():
        imagefiles.save_image(folder / name, (image * 255).round().to(torch.uint8))
    return folder



def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_public_names():
    assert callable(collect_inputs) and callable(plan_outputs) and callable(enhance_files) and callable(write_report)
    assert callable(batch.plan_batch) and callable(batch.run_batch) and callable(batch.check_report_path)
    assert BatchResult().to_json() == {
        "images": [], "failures": [], "skipped": [], "not_started": [], "interrupted": None
    }
    assert Failure("a", "b").error == "b" and batch.Pipeline is not None
    assert batch.Skipped("a", "b").reason == "b" and batch.BatchPlan([]).pairs == []


def test_enhance_one_file(photo_dir, tmp_path, capsys):
    out = tmp_path / "coffee_enhanced.png"
    code, stdout, err = _run(capsys, "enhance", photo_dir / "coffee.png", "-o", out)
    assert code == 0, err
    assert f"-> {out}: score" in stdout and "increase light&exposure" in stdout
    before, after = load_tensor(photo_dir / "coffee.png"), load_tensor(out)
    assert after.shape == before.shape and after.float().mean() > before.float().mean() + 10


def test_enhance_folder_with_report(photo_dir, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out, "--report", report, "--rescore")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.jpg", "coffee.png"]
    assert np.array_equal(load_image(out / "astronaut.png"), load_image(photo_dir / "astronaut.png"))
    payload = json.loads(report.read_text())
    assert payload["failures"] == [] and len(payload["images"]) == 3
    assert payload["critic"] == "AnalyticCritic" and payload["critic_config"]["sample_pixels"] == 16384
    assert payload["config"]["rescore"] is True and payload["config"]["critic"]["weights"] is None
    # " -> " twice a line: path -> out, score before -> after
    assert stdout.count(": score 100 -> 100; no edit") == 1 and stdout.count(" -> ") == 6
    by_name = {Path(item["input"]).name: item for item in payload["images"]}
    chelsea = by_name["chelsea.jpg"]
    assert chelsea["output"] == str(out / "chelsea.jpg") and chelsea["width"] == 96
    assert any("increase saturation" in s for s in chelsea["critique"]["suggestions"])
    assert parse(chelsea["critic_text"]).suggestions  # the tagged answer itself, parseable
    assert chelsea["attributes_after"]["saturation"] > chelsea["attributes_before"]["saturation"]
    assert chelsea["rewards"]["compliance"] == 1.0 and chelsea["rewards"]["rank"] == 1.0
    assert by_name["astronaut.png"]["critique"]["suggestions"] == []
    assert by_name["astronaut.png"]["rewards"]["format"] == 1.0  # "1. no edit needed"
    assert _temporaries(tmp_path) == []


def test_truncated_file_among_good_ones(photo_dir, tmp_path, capsys):
    broken = photo_dir / "broken.png"
    broken.write_bytes((photo_dir / "astronaut.png").read_bytes()[:300])
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out, "--report", report)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.jpg", "coffee.png"]
    assert f"spc-fast: error: {broken}: truncated or corrupt" in err
    assert "1 of 4 images failed" in err and "Traceback" not in err
    failures = json.loads(report.read_text())["failures"]
    assert [f["input"] for f in failures] == [str(broken)]


def test_batches_isolate_the_image_the_pipeline_refuses(photo_dir, tmp_path, capsys, monkeypatch):
    """--batch 2: three photos and a truncated file; a pipeline that refuses one image fails it alone."""
    (photo_dir / "broken.png").write_bytes((photo_dir / "astronaut.png").read_bytes()[:300])
    calls = []
    enhance = batch.Pipeline.enhance
    refused = load_tensor(photo_dir / "coffee.png")

    def picky(self, images):
        calls.append(len(images))
        if any(torch.equal(image, refused) for image in images):
            raise ValueError("refused the dark one")
        return enhance(self, images)

    monkeypatch.setattr(batch.Pipeline, "enhance", picky)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", out, "--batch", 2)
    assert code == 1 and "refused the dark one" in err and "2 of 4 images failed" in err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.jpg"]
    assert calls[0] == 2  # images went through two at a time, then one by one to find the refused one
    assert _temporaries(tmp_path) == []


def test_folder_without_images(tmp_path, photo_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, _, err = _run(capsys, "enhance", empty, "-o", tmp_path / "out")
    assert code == 1 and f"{empty}: folder contains no images" in err
    code, stdout, err = _run(capsys, "enhance", empty, photo_dir / "coffee.png", "-o", tmp_path / "out")
    assert code == 1 and "1 of 2 images failed" in err and (tmp_path / "out" / "coffee.png").is_file()


def test_output_equal_to_input_is_refused(photo_dir, capsys):
    source = photo_dir / "coffee.png"
    original = source.read_bytes()
    code, _, err = _run(capsys, "enhance", source, "-o", source)
    assert code == 1 and "is the input file" in err and "--overwrite" in err
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", photo_dir)
    assert code == 1 and "3 of 3 images failed" in err
    assert source.read_bytes() == original and _temporaries(photo_dir) == []
    code, _, err = _run(capsys, "enhance", source, "-o", source, "--overwrite")
    assert code == 0 and source.read_bytes() != original


def test_read_only_output_folder_leaves_nothing_behind(photo_dir, tmp_path, monkeypatch, capsys):
    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    # we run as root: simulate the read-only folder (a new file is published by link, a replacement by rename)
    monkeypatch.setattr(imagefiles.atomic.os, "link", lambda src, dst, **_: denied(src, dst))
    monkeypatch.setattr(imagefiles.atomic.os, "replace", denied)
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out)
    assert code == 1 and "cannot write the file (Permission denied)" in err and "3 of 3 images failed" in err
    assert list(out.iterdir()) == []


def test_output_must_be_a_folder_for_several_images(photo_dir, tmp_path, capsys):
    existing = tmp_path / "file.png"
    existing.write_bytes(b"x")
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", existing)
    assert code == 1 and "need an output folder" in err
    code, _, err = _run(capsys, "enhance", photo_dir / "coffee.png", photo_dir / "astronaut.png",
                        "-o", tmp_path / "new.png")
    assert code == 1 and "need an output folder" in err


def test_sixteen_bit_input_stays_sixteen_bit(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 20000, 48 * 64, dtype=np.float64).reshape(48, 64)
    pixels = np.stack([ramp, ramp * 0.9, ramp * 0.8], -1) + rng.integers(0, 50, (48, 64, 3))
    source = tmp_path / "dark16.png"
    imagefiles.save_image(source, pixels.astype(np.uint16), bit_depth=16)
    assert load_image(source).dtype == np.float32
    out = tmp_path / "out16.png"
    code, _, err = _run(capsys, "enhance", source, "-o", out)
    assert code == 0, err
    result = load_image(out)
    assert result.dtype == np.float32 and result.mean() > load_image(source).mean()
    assert len(np.unique(result)) > 256  # not quantised to 8 bits


def test_critique_prints_the_tagged_answer(photo_dir, capsys):
    code, stdout, err = _run(capsys, "critique", photo_dir / "coffee.png")
    assert code == 0 and err == ""
    output = parse(stdout)
    assert output.errors == [] and output.score < 100
    assert any(s.op == "exposure" and s.direction == 1 for s in output.suggestions)
    missing = photo_dir / "missing.png"
    code, stdout, err = _run(capsys, "critique", photo_dir / "astronaut.png", missing)
    assert code == 1 and f"== {photo_dir / 'astronaut.png'}" in stdout and "no such file" in err


def test_report_write_failure_is_clean(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "missing" / "r.json", {})
    assert write_report(tmp_path / "r.json", {"a": 1}).read_text().startswith("{")
    assert _temporaries(tmp_path) == []

    def denied(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    with pytest.raises(ValueError, match=r"r\.json: already exists"):
        write_report(tmp_path / "r.json", {"a": 2})
    monkeypatch.setattr(imagefiles.atomic.os, "replace", denied)  # as root: simulate a read-only folder
    with pytest.raises(ValueError, match=r"r\.json: cannot write the file \(Permission denied\)"):
        write_report(tmp_path / "r.json", {"a": 2}, overwrite=True)
    assert _temporaries(tmp_path) == [] and json.loads((tmp_path / "r.json").read_text()) == {"a": 1}


def test_help_lists_the_new_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "enhance" in out and "critique" in out
