"""One file's failure never stops a run: any exception (a decoder's TypeError, an OSError, running out of memory)
fails that file alone, named, in one line, as it happens; a batch that fails is retried file by file; a report that
cannot be written does not hide the failures. ``analyze`` and ``critique`` keep going the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runs import run_cli as _run

from spc_fast import batch, imagefiles

pytestmark = pytest.mark.usefixtures("torch_path")

NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    from spc_fast.bench.enhance_quality import load_photos

    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in load_photos(NAMES, 48).items():
        imagefiles.save_image(folder / name, (image * 255).round().to(torch.uint8))
    return folder



def _failing_reader(monkeypatch, errors: dict[str, Exception]) -> None:
    read = imagefiles.read_photo

    def reader(path, **kwargs):
        if Path(path).name in errors:
            raise errors[Path(path).name]
        return read(path, **kwargs)

    monkeypatch.setattr(imagefiles, "read_photo", reader)


def test_any_exception_fails_its_file_alone(photo_dir, tmp_path, monkeypatch, capsys):
    _failing_reader(monkeypatch, {
        "chelsea.png": TypeError("'NoneType' object is not subscriptable"),  # what a GIF decoder raised
        "coffee.png": OSError(5, "Input/output error"),
    })
    out, report = tmp_path / "out", tmp_path / "report.json"
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", out, "--report", report)
    assert code == 1 and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "rocket.jpg"]
    assert f"{photo_dir / 'chelsea.png'}: unexpected TypeError: 'NoneType' object is not subscriptable" in err
    assert f"{photo_dir / 'coffee.png'}: cannot read or write a file (Input/output error)" in err
    assert "2 of 4 images failed" in err
    failures = json.loads(report.read_text())["failures"]
    assert [Path(f["input"]).name for f in failures] == ["chelsea.png", "coffee.png"]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB")])
def test_out_of_memory_says_what_the_image_needs(photo_dir, tmp_path, monkeypatch, capsys, error):
    enhance, calls = batch.Pipeline.enhance, []

    def hungry(self, images):
        calls.append(len(images))
        if any(image.shape[-1] == 48 and image.shape[-2] == 48 for image in images):  # the square astronaut
            raise error
        return enhance(self, images)

    monkeypatch.setattr(batch.Pipeline, "enhance", hungry)
    code, _, err = _run(capsys, "enhance", photo_dir, "-o", tmp_path / "out", "--batch", 2)
    assert code == 1 and "1 of 4 images failed" in err and "Traceback" not in err
    line = next(line for line in err.splitlines() if "astronaut" in line)
    assert "out of memory (48x48 pixels need about 0.0 GiB; free memory" in line and imagefiles.MAX_PIXELS_ENV in line
    assert "--batch 1" in line
    assert calls[:3] == [2, 1, 1]  # the failing batch was retried file by file
    assert len(list((tmp_path / "out").iterdir())) == 3


def test_progress_lines_appear_as_each_file_finishes(photo_dir, tmp_path, monkeypatch, capsys):
    enhance, seen = batch.Pipeline.enhance, []

    def watched(self, images):
        seen.append(capsys.readouterr())
        return enhance(self, images)

    monkeypatch.setattr(batch.Pipeline, "enhance", watched)
    chelsea = photo_dir / "chelsea.png"
    _failing_reader(monkeypatch, {"chelsea.png": imagefiles.ImageError(f"{chelsea}: broken")})
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", tmp_path / "out")
    assert code == 1 and len(seen) == 3
    assert f"[1/4] {photo_dir / 'astronaut.png'} ->" in seen[1].out  # printed before the next file was enhanced
    assert f"error: {chelsea}: broken" in seen[1].err and "failed" not in seen[1].err  # the summary comes last
    assert "[4/4]" in stdout and err.rstrip().endswith("1 of 4 images failed (3 written, 1 failed)")


def test_a_report_that_cannot_be_written_keeps_the_failure_list(photo_dir, tmp_path, monkeypatch, capsys):
    (photo_dir / "broken.png").write_bytes((photo_dir / "astronaut.png").read_bytes()[:200])

    def full_disk(path, payload, **kwargs):
        raise imagefiles.ImageError(f"{path}: cannot write the file (No space left on device)")

    monkeypatch.setattr(batch, "write_report", full_disk)
    code, stdout, err = _run(capsys, "enhance", photo_dir, "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    assert code == 1 and "Traceback" not in err
    assert f"{photo_dir / 'broken.png'}: " in err and "No space left on device" in err
    assert "1 of 5 images failed" in err and stdout.count(" -> ") == 4


def test_analyze_and_critique_go_on_after_any_exception(photo_dir, monkeypatch, capsys):
    load = imagefiles.load_tensor

    def loader(path, **kwargs):
        if Path(path).name == "chelsea.png":
            raise TypeError("decoder bug")
        return load(path, **kwargs)

    monkeypatch.setattr(imagefiles, "load_tensor", loader)
    paths = [photo_dir / name for name in NAMES]
    for command in ("analyze", "critique"):
        code, stdout, err = _run(capsys, command, *paths)
        assert code == 1 and "Traceback" not in err and "1 of 4 images failed" in err
        assert f"{paths[1]}: unexpected TypeError: decoder bug" in err and "coffee" in stdout


def test_out_of_memory_message_says_what_the_size_needs():
    message = batch.failure_message("huge.png", MemoryError(), size=(20000, 10000))
    assert message.startswith("huge.png: out of memory (20000x10000 pixels need about 7.5 GiB; free memory")


def test_failure_message_names_the_file_once():
    assert batch.failure_message("a.png", imagefiles.ImageError("a.png: truncated")) == "a.png: truncated"
    assert batch.failure_message("a.png", ValueError("refused")) == "a.png: refused"
    message = batch.failure_message("missing.png", MemoryError())
    assert message.startswith("missing.png: out of memory (free memory") and "GiB" not in message
    assert batch.failure_message("a.png", KeyError(3)).startswith("a.png: unexpected KeyError: 3 (an error in")
