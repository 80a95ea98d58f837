"""Stopping ``spc-fast enhance``: SIGTERM as Ctrl-C (the file being written cleaned up, the summary printed, the
report written, status 143 or 130, no traceback), and the handler only while the command line runs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from PIL import Image

from spc_fast import batch, cli, imagefiles

pytestmark = pytest.mark.usefixtures("torch_path")


@pytest.fixture
def photo_dir(tmp_path) -> Path:
    from spc_fast.bench.enhance_quality import load_photos

    folder = tmp_path / "in"
    folder.mkdir()
    for name, image in load_photos(("astronaut.png", "chelsea.png", "coffee.png"), 48).items():
        imagefiles.save_image(folder / name, (image * 255).round().to(torch.uint8))
    return folder


def _stop_at_call(monkeypatch, number: int, stop) -> None:
    """Pipeline.enhance runs ``stop()`` on its ``number``-th call."""
    enhance, calls = batch.Pipeline.enhance, []

    def stopping(self, images):
        calls.append(1)
        if len(calls) == number:
            stop()
        return enhance(self, images)

    monkeypatch.setattr(batch.Pipeline, "enhance", stopping)


def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler, as a terminal's Ctrl-C meets it: something earlier in a full test session can
    leave SIGINT ignored (SIG_IGN, seen only with output capture on), and then no run could be interrupted by it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("ctrl_c")
@pytest.mark.parametrize(("how", "status"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_stops_the_run_with_a_summary_and_the_report(photo_dir, tmp_path, monkeypatch, capsys, how, status):
    _stop_at_call(monkeypatch, 2, lambda: signal.raise_signal(getattr(signal, how)))
    out, report = tmp_path / "out", tmp_path / "report.json"
    code = cli.main(["enhance", str(photo_dir), "-o", str(out), "--report", str(report)])
    stdout, err = capsys.readouterr()
    assert code == status and "Traceback" not in err, (code, err[-2000:], signal.getsignal(signal.SIGINT))
    assert f"interrupted by {how}: 1 written, 0 failed, 2 not started" in err and "--skip-existing" in err
    assert [p.name for p in out.iterdir()] == ["astronaut.png"] and f"wrote {report}" in stdout
    payload = json.loads(report.read_text())
    assert payload["interrupted"] == how and len(payload["images"]) == 1
    assert payload["not_started"] == [str(photo_dir / "chelsea.png"), str(photo_dir / "coffee.png")]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # put back after the command

    code = cli.main(["enhance", str(photo_dir), "-o", str(out), "--skip-existing"])
    assert code == 0 and sorted(p.name for p in out.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]


def test_sigterm_while_writing_removes_the_temporary(photo_dir, tmp_path, monkeypatch, capsys):
    save = Image.Image.save

    def interrupted_save(self, fp, *args, **kwargs):
        save(self, fp, *args, **kwargs)  # the whole file is in the temporary: only publishing is left
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(Image.Image, "save", interrupted_save)
    out = tmp_path / "out"
    assert cli.main(["enhance", str(photo_dir), "-o", str(out)]) == 143
    assert list(out.iterdir()) == []
    assert "interrupted by SIGTERM: 0 written, 0 failed, 3 not started" in capsys.readouterr().err


def test_sigterm_while_the_models_load_is_a_clean_stop(photo_dir, tmp_path, monkeypatch, capsys):
    def loading(config):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(batch.Pipeline, "from_config", staticmethod(loading))
    code = cli.main(["enhance", str(photo_dir), "-o", str(tmp_path / "out"), "--report", str(tmp_path / "r.json")])
    assert code == 143 and "3 not started" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] == "SIGTERM"


def test_the_handler_is_installed_only_while_the_command_line_runs(monkeypatch):
    from spc_fast.bench import runner

    seen = []
    monkeypatch.setattr(runner, "main", lambda argv: seen.append(signal.getsignal(signal.SIGTERM)) or 0)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # importing spc_fast changed nothing
    assert cli.main(["bench"]) == 0
    assert callable(seen[0]) and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a parent asked for SIGTERM to be ignored
    try:
        assert cli.main(["bench"]) == 0
        assert seen[1] == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
