"""``spc-fast enhance --ray`` on a local Ray instance with the analytic pipeline: outputs under the same relative
paths with the pixels ``spc-fast enhance`` writes, bad files as failed report lines, existing outputs, a ``file://``
output written through pyarrow, and the command line in a subprocess joining the same instance."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spc_fast import batch, imagefiles, ray_batch
from spc_fast.config import PipelineConfig

ray = pytest.importorskip("ray", reason="Ray Data is not installed: pip install 'spc-fast[ray]'")

ROOT = Path(__file__).resolve().parents[1]
_ENV = {"SPC_FAST_KERNELS": "torch"}  # the torch path: the actors inherit it from the Ray instance


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module (start-up takes seconds), shut down afterwards."""
    previous = {name: os.environ.get(name) for name in _ENV}
    os.environ.update(_ENV)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield context.address_info["gcs_address"]
    ray.shutdown()
    for signum, handler in handlers.items():  # ray.init leaves its SIGTERM handler installed
        signal.signal(signum, handler)
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, photos) -> Path:
    """Photos in a folder and a sub-folder (PNG, JPEG, a BMP that becomes PNG), a truncated PNG, a text file with
    an image name, a text file and a hidden file."""
    folder = tmp_path_factory.mktemp("catalogue")
    (folder / "trip").mkdir()
    small = {name: np.ascontiguousarray(image[::6, ::6]) for name, image in photos.items()}
    imagefiles.save_image(folder / "astronaut.png", small["astronaut"])
    imagefiles.save_image(folder / "trip" / "coffee.jpg", small["coffee"])
    from PIL import Image

    Image.fromarray(small["chelsea"]).save(folder / "trip" / "chelsea.bmp")
    (folder / "broken.png").write_bytes((folder / "astronaut.png").read_bytes()[:400])
    (folder / "trip" / "fake.jpg").write_text("not a photo")
    (folder / "notes.txt").write_text("shot list")
    (folder / ".hidden.png").write_bytes((folder / "astronaut.png").read_bytes())
    return folder


def _lines(path: Path) -> tuple[dict, list[dict]]:
    header, *lines = (json.loads(line) for line in path.read_text().splitlines())
    return header, lines


def _by_status(lines: list[dict]) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {"written": {}, "failed": {}, "skipped": {}}
    for line in lines:
        out[line["status"]][Path(line.get("input") or line["path"]).name] = line
    return out


def test_outputs_match_enhance_and_bad_files_are_rows(cluster, catalogue, tmp_path):
    out = tmp_path / "out"
    summary = ray_batch.enhance_on_ray(str(catalogue), str(out), PipelineConfig(), actors=1)
    assert (summary.written, summary.failed, summary.skipped) == (3, 2, 2)
    assert summary.report == str(out / ray_batch.REPORT_NAME)
    header, lines = _lines(out / ray_batch.REPORT_NAME)
    assert header["inputs"] == str(catalogue) and header["config"]["batch_size"] == 1
    rows = _by_status(lines)
    assert set(rows["written"]) == {"astronaut.png", "coffee.jpg", "chelsea.bmp"}
    assert rows["skipped"]["notes.txt"]["reason"] == "not an image extension"
    assert rows["skipped"][".hidden.png"]["reason"] == "hidden file"
    assert str(catalogue / "broken.png") in rows["failed"]["broken.png"]["error"]
    assert "trip/fake.jpg" in rows["failed"]["fake.jpg"]["error"]
    assert "spc-fast-ray-" not in json.dumps(lines)  # no scratch path leaks into the report
    expected = {"astronaut.png": "astronaut.png", "trip/coffee.jpg": "trip/coffee.jpg",
                "trip/chelsea.bmp": "trip/chelsea.png"}
    reference = tmp_path / "reference"
    for source, target in expected.items():
        (reference / target).parent.mkdir(parents=True, exist_ok=True)
        result = batch.enhance_files([catalogue / source], reference / target)
        assert not result.failures
        assert rows["written"][Path(source).name]["output"] == str(out / target)
        np.testing.assert_array_equal(imagefiles.load_image(out / target), imagefiles.load_image(reference / target))
        assert rows["written"][Path(source).name]["critique"] == result.written[0]["critique"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_existing_outputs_and_a_uri_output(cluster, catalogue, tmp_path):
    out = tmp_path / "out"
    (out / "trip").mkdir(parents=True)
    (out / "trip" / "coffee.jpg").write_bytes(b"kept")
    uri = out.as_uri()
    with pytest.raises(ValueError, match="contradict"):
        ray_batch.enhance_on_ray(str(catalogue), uri, PipelineConfig(), overwrite=True, skip_existing=True)
    summary = ray_batch.enhance_on_ray(str(catalogue), uri, PipelineConfig(), skip_existing=True)
    assert (summary.written, summary.failed, summary.skipped) == (2, 2, 3)
    assert (out / "trip" / "coffee.jpg").read_bytes() == b"kept"
    assert imagefiles.load_image(out / "trip" / "chelsea.png").shape == (50, 76, 3)
    rows = _by_status(_lines(out / ray_batch.REPORT_NAME)[1])
    assert rows["written"]["astronaut.png"]["output"] == f"{uri}/astronaut.png"
    assert "--skip-existing" in rows["skipped"]["coffee.jpg"]["reason"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="report already exists"):
        ray_batch.enhance_on_ray(str(catalogue), uri, PipelineConfig(), skip_existing=True)
    report = tmp_path / "second.jsonl"
    summary = ray_batch.enhance_on_ray(str(catalogue), str(out), PipelineConfig(), report=str(report))
    assert summary.failed == 5 and summary.written == 0  # every output exists now, and two inputs are bad
    assert "already exists; pass --overwrite" in _by_status(_lines(report)[1])["failed"]["astronaut.png"]["error"]


def test_bad_arguments_fail_before_any_work(cluster, catalogue, tmp_path):
    with pytest.raises(ValueError, match="asks for 64 GPUs"):  # never a wait for GPUs the cluster lacks
        ray_batch.enhance_on_ray(str(catalogue), str(tmp_path / "out"), PipelineConfig(), gpus_per_actor=64)
    with pytest.raises(ValueError, match="does not exist"):
        ray_batch.enhance_on_ray(str(tmp_path / "missing"), str(tmp_path / "out"), PipelineConfig())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        ray_batch.enhance_on_ray(str(tmp_path / "empty"), str(tmp_path / "out"), PipelineConfig())
    with pytest.raises(ValueError, match="--actors must be at least 1"):
        ray_batch.enhance_on_ray(str(tmp_path), str(tmp_path / "out"), PipelineConfig(), actors=0)
    with pytest.raises(ValueError, match="cannot open this URI"):
        ray_batch.enhance_on_ray("nosuchscheme://bucket/photos", str(tmp_path / "out"), PipelineConfig())


def test_without_ray_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match=r"pip install 'spc-fast\[ray\]'"):
        ray_batch._import_ray()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["IN", "-o", "OUT", "--actors", "2"], "add --ray"),
        (["--ray", "IN", "IN", "-o", "OUT"], "one input folder"),
        (["--ray", "IN", "-o", "OUT/out.png"], "writes a folder"),
    ],
)
def test_cli_refuses_misused_flags(tmp_path, capsys, arguments, message):
    from spc_fast import cli

    names = {"IN": str(tmp_path), "OUT": str(tmp_path / "out"), "OUT/out.png": str(tmp_path / "out.png")}
    assert cli.main(["enhance", *(names.get(arg, arg) for arg in arguments)]) == 1
    assert message in capsys.readouterr().err


def test_cli_joins_the_cluster(cluster, catalogue, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "spc_fast", "enhance", "--ray", "--address", cluster, str(catalogue),
               "-o", str(out), "--report", str(tmp_path / "report.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, **_ENV})
    assert done.returncode == 1, done.stderr  # two bad files
    assert f"{catalogue / 'astronaut.png'} -> {out / 'astronaut.png'}" in done.stdout
    assert "broken.png: truncated or corrupt" in done.stderr
    assert "3 written, 2 failed, 2 skipped" in done.stderr
    assert "logging_progress" not in done.stderr  # Ray Data's progress lines only with -v
    assert (out / "trip" / "chelsea.png").is_file() and (tmp_path / "report.jsonl").is_file()


def test_a_run_that_started_ray_puts_the_signal_handlers_back():
    """``ray.init`` installs its own SIGTERM handler and ``ray.shutdown`` leaves it: a run that connected puts back
    what was there, so ``spc-fast enhance``'s own SIGTERM handling (and a host program's) still works after it."""
    from spc_fast.ray_batch import _connected

    class FakeRay:
        def is_initialized(self) -> bool:
            return False

        def init(self, **_) -> None:
            signal.signal(signal.SIGTERM, lambda *_: None)

        def shutdown(self) -> None:
            pass

    before = signal.getsignal(signal.SIGTERM)
    with _connected(FakeRay(), None):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
