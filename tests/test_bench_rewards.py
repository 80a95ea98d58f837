"""Smoke runs of the two benchmarks of the enhancer issue: the r_PA timing rows and the quality report."""

from __future__ import annotations

import json

import pytest
import torch

from spc_fast.bench import enhance_quality, harness, rewards, runner

pytestmark = pytest.mark.usefixtures("torch_path")


def test_rewards_quick_rows():
    assert "rewards" in runner.BENCHMARKS
    rows = rewards.run(torch.device("cpu"), quick=True)
    harness.fill_ratios(rows, rewards.BASELINES)
    by_key = {(r.case.split(" ", 2)[-1], r.provider): r for r in rows}
    assert set(by_key) == {
        ("r_PA", "eager torch"), ("r_PA", "spc-fast"), ("attributes x3", "eager torch"),
        ("attributes x3", "spc-fast"), ("LPIPS", "lpips (random AlexNet)"),
    }
    for provider in ("eager torch", "spc-fast"):
        row = by_key[("r_PA", provider)]
        assert row.max_error < 1e-4 and "LPIPS" in row.note and row.p50_ms > 0
    assert "eager torch" in by_key[("r_PA", "spc-fast")].speedup_vs


def test_eager_attributes_match_ours():
    from spc_fast import photometric
    from spc_fast.bench.photos import photo_batch

    images = photo_batch(3, 37, 53, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(rewards.eager_attributes(images), photometric.attributes(images), rtol=1e-4, atol=1e-3)


def test_quality_report_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(enhance_quality, "REFERENCES", ("astronaut.png", "coffee.png"))
    monkeypatch.setattr(enhance_quality, "PERTURBATIONS", {"under-exposed": {"exposure": -1.0}})
    out = tmp_path / "quality.json"
    assert enhance_quality.main(["--size", "64", "--held-out", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean fraction undone" in text and "unperturbed astronaut.png: untouched" in text
    assert "== held out" in text and "motorcycle" in text
    payload = json.loads(out.read_text())
    cases = payload["sets"]["references"]["cases"]
    assert [(c["photo"], c["perturbation"]) for c in cases] == [
        ("astronaut.png", "none"), ("astronaut.png", "under-exposed"), ("coffee.png", "none"),
        ("coffee.png", "under-exposed"),
    ]
    assert payload["sets"]["references"]["summary"]["mean_undone"] > 0.5
