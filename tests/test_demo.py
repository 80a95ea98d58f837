"""``spc-fast demo``: a bundled photo, degraded by its seeded perturbation, visibly enhanced; the files it writes,
what it prints, and that it never writes over existing files unless asked."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from spc_fast import demo, imagefiles, retouch

pytestmark = pytest.mark.usefixtures("torch_path")


def test_perturbation_is_seeded_and_within_its_ranges():
    draws = [demo.perturbation(seed) for seed in range(20)]
    assert demo.perturbation(3) == draws[3] and draws[0] != draws[1]
    for settings in draws:
        assert settings.keys() == demo.PERTURBATION_RANGES.keys()
        for name, (low, high) in demo.PERTURBATION_RANGES.items():
            assert low <= settings[name] <= high


def test_demo_visibly_edits_the_photo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    files = {path.name for path in out.iterdir()}
    assert files == {"chelsea_degraded.png", "chelsea_enhanced.png", "chelsea_before_after.png", "report.html"}
    for name in files:
        assert str(out / name) in printed  # it says where everything is

    source = imagefiles.load_tensor(demo.bundled_photo("chelsea"))
    degraded = imagefiles.load_tensor(out / "chelsea_degraded.png")
    assert torch.equal(degraded, retouch.apply(source, **demo.perturbation(1)))  # the documented perturbation
    enhanced = imagefiles.load_tensor(out / "chelsea_enhanced.png")
    change = (enhanced.float() - degraded.float()).abs().mean() / 255
    error_before = (degraded.float() - source.float()).abs().mean() / 255
    error_after = (enhanced.float() - source.float()).abs().mean() / 255
    assert change > 0.05 and error_after < error_before / 2  # visibly edited, back towards the original

    before, after = map(int, re.search(r"critic's score: (\d+) before, (\d+) after", printed).groups())
    assert after >= before + 20

    pair = imagefiles.load_image(out / "chelsea_before_after.png")
    height, width = degraded.shape[1:]
    assert pair.shape[1] == 2 * width + demo._GAP and pair.shape[0] > height
    assert np.array_equal(pair[-height:, :width], degraded.permute(1, 2, 0).numpy())
    assert np.array_equal(pair[-height:, -width:], enhanced.permute(1, 2, 0).numpy())

    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('<img class="before"') == page.count('<img class="after"') == 1
    assert f"{before} → " in page and f">{after}</span>" in page


def test_existing_files_are_kept_unless_overwrite(tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    report = out / "report.html"
    report.write_text("mine")
    with pytest.raises(ValueError, match="already exist; pass --overwrite"):
        demo.main(["--out", str(out)])
    assert report.read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["report.html"]


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        demo.main(["--photo", "nonexistent"])
    assert "invalid choice" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; choose a folder"):
        demo.main(["--out", str(tmp_path / "file")])
