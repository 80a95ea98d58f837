"""Charts: ``spc-fast bench --plot DIR`` (per benchmark times with whiskers and the fraction of the copy bandwidth; a
roofline on a GPU) and ``spc-fast train plot RUN`` (loss, rewards and the time split from ``metrics.jsonl``)."""

from __future__ import annotations

import json
import math
import random

import pytest
from PIL import Image

from spc_fast.bench import harness, plots, runner
from spc_fast.training import plot


def _rows(bench: str = "photometric") -> list[harness.Row]:
    """Rows as a benchmark returns them: two cases, three providers, the reference much slower."""
    rows = []
    for case, scale in (("1x3x256x320 uint8", 1.0), ("4x3x64x64 float32", 0.2)):
        for provider, ms in (("numpy-reference", 40.0), ("kornia", 6.0), ("spc-fast torch", 2.0)):
            p50 = ms * scale
            rows.append(
                harness.Row(
                    bench=bench,
                    case=case,
                    provider=provider,
                    p20_ms=0.9 * p50,
                    p50_ms=p50,
                    p80_ms=1.2 * p50,
                    bytes_moved=245760,
                    gb_per_s=245760 / p50 / 1e6,
                )
            )
    return rows


def _assert_charts(folder, names):
    for name in names:
        for fmt in ("png", "svg"):
            assert (folder / f"{name}.{fmt}").stat().st_size > 1000
        with Image.open(folder / f"{name}.png") as image:
            assert image.width > 600 and image.height > 300


def test_bench_plot_flag_draws_each_benchmark(tmp_path, monkeypatch, capsys):
    from spc_fast.bench import photometric

    monkeypatch.setattr(photometric, "run", lambda device, quick=False: _rows())  # the charts, not the timing
    out, charts = tmp_path / "run.json", tmp_path / "charts"
    assert runner.main(["--only", "photometric", "--quick", "--json", str(out), "--plot", str(charts)]) == 0
    assert f"wrote 2 chart files (PNG and SVG) to {charts}" in capsys.readouterr().out
    _assert_charts(charts, ["photometric"])
    assert not (charts / "roofline.png").exists()  # a CPU run
    payload = json.loads(out.read_text())
    assert payload["config"]["plot"] == str(charts)
    assert all(row["fraction_of_copy_bw"] > 0 for row in payload["rows"])

    again = tmp_path / "again"
    assert plots.main([str(out), "--out", str(again)]) == 0  # a recorded run drawn later
    _assert_charts(again, ["photometric"])


def test_bench_figure_panels_whiskers_and_bandwidth():
    rows = [harness.dataclasses.asdict(r) for r in _rows()]
    figure = plots.bench_figure("photometric", rows, "test device")
    assert len(figure.axes) == 1  # no bandwidth fractions: times only
    times = figure.axes[0]
    bars = [patch for container in times.containers if hasattr(container, "patches") for patch in container.patches]
    assert sorted(round(bar.get_height(), 6) for bar in bars) == sorted(round(r["p50_ms"], 6) for r in rows)
    assert times.get_yscale() == "log"  # 200x between the slowest and the fastest row
    whiskers = [c for c in times.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(whiskers) == 3  # one per provider
    for row in rows:
        row["fraction_of_copy_bw"] = row["gb_per_s"] / 40.0
    assert len(plots.bench_figure("photometric", rows, "test device").axes) == 2


def test_roofline_for_gpu_runs_with_flops(tmp_path, capsys):
    rows = [harness.dataclasses.asdict(r) for r in _rows("artist_step")]
    environment = {"device": "NVIDIA H200", "copy_bandwidth_gb_per_s": 4000.0, "matmul_peak_tflops": 700.0}
    assert plots.roofline_figure(rows, environment) is None  # no row knows its FLOPs
    plots.plot_run(rows, environment, tmp_path / "no_flops", gpu=True)
    assert "roofline: not drawn" in capsys.readouterr().out
    for i, row in enumerate(rows):
        row["flops"] = 10 ** (6 + i)
    figure = plots.roofline_figure(rows, environment)
    assert len(figure.axes[0].collections) == len(rows)
    written = plots.plot_run(rows, environment, tmp_path / "charts", gpu=True)
    assert {p.name for p in written} >= {"roofline.png", "roofline.svg", "artist_step.png"}
    assert "roofline.png" not in {p.name for p in plots.plot_run(rows, environment, tmp_path / "cpu", gpu=False)}


def test_plot_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        plots.plot_run([], {}, tmp_path / "f", gpu=False)
    with pytest.raises(ValueError, match="is a file"):
        runner.main(["--only", "photometric", "--plot", str(tmp_path / "f")])


def _stage_line(step: int, rng: random.Random) -> dict:
    return {
        "step": step,
        "loss": 1.0 / step + 0.05 * rng.random(),
        "terms": {"mse": 0.5 / step},
        "lr": 1e-4,
        "time_data_s": 0.01,
        "time_fwd_bwd_s": 0.2 + 0.01 * rng.random(),
        "time_optim_s": 0.03,
        "peak_mem_kind": "cpu_max_rss",
    }


def _joint_line(step: int, rng: random.Random) -> dict:
    line = {
        "step": step,
        "loss": 0.3,
        "loss/critic": 0.1,
        "loss/artist": 0.2,
        "kl": 0.01,
        "reward/artist": 0.5 + 0.004 * step,
        "reward/artist/comp": 0.6,
        "reward/critic": 0.4,
        "reward/critic/restoration": math.nan if step % 3 else 0.8,
        "time/step": 2.0,
        "time/reward_fraction": 0.1,
        "time_data_s": 0.1,
        "time_fwd_bwd_s": 1.7,
        "time_optim_s": 0.2,
    }
    line.update({f"time/{name}": 0.3 + 0.01 * rng.random() for name in ("data", "critic_rollout", "artist_update")})
    return line


def test_train_plot_draws_loss_rewards_and_time(tmp_path, capsys):
    rng = random.Random(0)
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(_joint_line(step, rng)) for step in range(1, 61)]
    lines.insert(30, json.dumps({**_joint_line(5, rng), "loss": 99.0}))  # step 5 again, as a resumed run writes it
    (run / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 61, "lo')  # killed during a write
    assert plot.main([str(run)]) == 0
    captured = capsys.readouterr()
    assert "last line cut short" in captured.err and "wrote loss, rewards, time" in captured.out
    _assert_charts(run / "plots", ["loss", "rewards", "time"])

    metrics = plot.read_metrics(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 61)) and metrics[4]["loss"] == 99.0
    parts = plot.time_parts(metrics)
    assert set(parts) == {"data", "critic_rollout", "artist_update", "other"}  # time/step beyond the three parts
    assert all(math.isclose(sum(p[i] for p in parts.values()), 2.0) for i in range(len(metrics)))


def test_train_plot_of_a_supervised_stage(tmp_path, capsys):
    rng = random.Random(1)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(_stage_line(step, rng)) + "\n" for step in range(1, 9)))
    assert plot.main([str(metrics), "--out", str(tmp_path / "charts")]) == 0
    assert "wrote loss, time" in capsys.readouterr().out
    _assert_charts(tmp_path / "charts", ["loss", "time"])
    assert not (tmp_path / "charts" / "rewards.png").exists()  # stages I-II have no rewards
    assert set(plot.time_parts(plot.read_metrics(metrics))) == {"data", "forward + backward", "optimizer"}
    assert "terms/mse" in plot.read_metrics(metrics)[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"step": 1, "loss": 1}\nnot json\n{"step": 3, "loss": 1}\n', r"metrics.jsonl:2: not JSON"),
        ('{"loss": 1}\n{"step": 2}\n', r"metrics.jsonl:1: .*whole-number 'step'"),
        ("", "no steps recorded yet"),
    ],
)
def test_train_plot_bad_metrics_name_the_line(tmp_path, text, message):
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(ValueError, match=message):
        plot.main([str(tmp_path)])
    with pytest.raises(ValueError, match="cannot read it"):
        plot.main([str(tmp_path / "missing")])
