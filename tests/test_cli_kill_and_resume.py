"""Fault injection: ``spc-fast enhance`` on a folder, killed with SIGTERM and SIGKILL at seeded random moments and
resumed with ``--skip-existing``. Whatever the moment: no partial or temporary file survives the next run, every
output is a whole, decodable image of its input's size, and no input changes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spc_fast import imagefiles

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "motorcycle_left.png")
# (signal, counted from): the process start (startup and planning), or its first finished image (reading,
# enhancing and writing the next ones)
KILLS = (
    (signal.SIGTERM, "start"), (signal.SIGKILL, "image"), (signal.SIGTERM, "image"), (signal.SIGKILL, "image"),
    (signal.SIGTERM, "image"),
)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _check_outputs(inputs: Path, out: Path, *, temporaries_allowed: bool) -> list[str]:
    """The outputs written so far: each decodes whole and has its input's size; temporaries only where allowed."""
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    hidden = [name for name in names if name.startswith(".")]
    assert temporaries_allowed or not hidden, f"left behind: {hidden}"
    visible = [name for name in names if not name.startswith(".")]
    assert set(visible) <= {p.name for p in inputs.iterdir()}
    for name in visible:
        written = imagefiles.load_image(out / name)  # decodes every pixel: a truncated file fails here
        assert written.shape == imagefiles.load_image(inputs / name).shape
    return visible


@pytest.mark.slow
def test_killed_runs_resume_without_damage(tmp_path):
    from spc_fast.bench.enhance_quality import load_photos

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for name, image in load_photos(PHOTOS, 192).items():
        imagefiles.save_image(inputs / f"{Path(name).stem}.png", (image * 255).round().to(torch.uint8))
    before = _digests(inputs)
    env = {**os.environ, "SPC_FAST_KERNELS": "torch"}
    command = [sys.executable, "-m", "spc_fast", "enhance", str(inputs), "-o", str(out), "--skip-existing"]
    rng = random.Random(10)
    for i, (kill, counted_from) in enumerate(KILLS):
        report = tmp_path / f"report{i}.json"
        run = subprocess.Popen([*command, "--report", str(report)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        if counted_from == "image":
            run.stdout.readline()  # an image is written (or the run is over)
        time.sleep(rng.uniform(0.0, 0.8) if counted_from == "image" else rng.uniform(0.5, 4.0))
        run.send_signal(kill)
        _, err = run.communicate(timeout=120)
        assert "Traceback" not in err, err
        if kill == signal.SIGTERM:
            assert run.returncode in (0, 143, -signal.SIGTERM), err  # -15: killed before the handler was set
            if run.returncode == 143:
                assert "interrupted by SIGTERM" in err
            if "not started" in err:  # stopped once the run was planned (the report path checked): it is written
                assert json.loads(report.read_text())["interrupted"] == "SIGTERM"
        else:
            assert run.returncode in (0, -signal.SIGKILL), err
        _check_outputs(inputs, out, temporaries_allowed=kill == signal.SIGKILL)

    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert _check_outputs(inputs, out, temporaries_allowed=False) == sorted(before)
    assert _digests(inputs) == before
