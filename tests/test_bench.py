"""The benchmark harness: row schema, ratios against same-run baselines, JSON output (a quick smoke run)."""

import json

import pytest

from spc_fast.bench import harness, runner


def test_fill_ratios_divides_baseline_p50_by_row_p50():
    rows = [
        harness.Row(bench="b", case="c", provider="base", p20_ms=9, p50_ms=10, p80_ms=11),
        harness.Row(bench="b", case="c", provider="ours", p20_ms=1, p50_ms=2, p80_ms=3),
        harness.Row(bench="b", case="other", provider="ours", p20_ms=1, p50_ms=2, p80_ms=3),
    ]
    harness.fill_ratios(rows, ("base",))
    assert rows[1].speedup_vs == {"base": 5.0}
    assert rows[0].speedup_vs == {} and rows[2].speedup_vs == {}


def test_measure_reports_ordered_quantiles():
    import torch

    p20, p50, p80 = harness.measure(lambda: sum(range(1000)), torch.device("cpu"), min_reps=5, budget_s=0.01)
    assert 0 < p20 <= p50 <= p80


@pytest.mark.slow
def test_quick_photometric_run_writes_rows_with_errors_and_ratios(tmp_path):
    out = tmp_path / "bench.json"
    assert runner.main(["--only", "photometric", "--quick", "--no-copy-bw", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["environment"]["versions"]["torch"]
    rows = payload["rows"]
    providers = {r["provider"] for r in rows}
    assert {"numpy-reference", "kornia", "spc-fast torch"} <= providers
    ours = [r for r in rows if r["provider"] == "spc-fast torch"]
    assert all(r["max_error"] < 1e-4 for r in ours)
    assert all("kornia" in r["speedup_vs"] for r in ours)


def test_quick_model_runs_compare_with_the_libraries(tmp_path):
    out = tmp_path / "bench.json"
    models = ["--only", "critic_generate", "--only", "artist_step", "--only", "artist_sample"]
    argv = [*models, "--quick", "--no-copy-bw", "--json", str(out)]
    assert runner.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    by_bench = {}
    for row in rows:
        by_bench.setdefault(row["bench"], {})[row["provider"]] = row
    assert set(by_bench["critic_generate"]) == {"transformers generate", "spc-fast static"}
    assert by_bench["critic_generate"]["spc-fast static"]["max_error"] == 0.0  # greedy: the same tokens
    assert set(by_bench["artist_step"]) == {"diffusers eager", "spc-fast eager sdpa"}
    assert set(by_bench["artist_sample"]) == {"diffusers pipeline eager", "spc-fast eager sdpa"}
    # float32 tiny models: ours computes what diffusers computes
    assert all(r["max_error"] < 1e-4 for bench in by_bench.values() for r in bench.values())
    step = by_bench["artist_step"]["spc-fast eager sdpa"]
    assert "diffusers eager" in step["speedup_vs"] and "of the measured float32 matmul peak" in step["note"]


def test_quick_train_step_run_has_a_row_per_stage_with_its_time_split(tmp_path, monkeypatch):
    monkeypatch.setenv("SPC_FAST_KERNELS", "torch")  # the interpreter would only make the tiny steps slow
    out = tmp_path / "bench.json"
    assert runner.main(["--only", "train_step", "--quick", "--no-copy-bw", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["case"].split(",")[0] for row in rows] == ["tiny critic-sft", "tiny artist-sft", "tiny adapt"]
    for row in rows:
        assert 0 < row["p20_ms"] <= row["p50_ms"] <= row["p80_ms"] and row["peak_memory_mib"] > 0
        assert "data/fwd-bwd/optim" in row["note"] and "samples/s" in row["note"]
