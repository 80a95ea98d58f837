"""The ``inference`` benchmark family (one DiT step per deployment backend), the FLOPs its rows and artist_step's
carry for the roofline, and rows of providers that could not run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from spc_fast.bench import artist_step, harness, inference, plots, runner
from spc_fast.models import qwen_image


def test_dit_step_flops_matches_a_hand_count_on_the_tiny_config():
    config = qwen_image.TINY_DIT_CONFIG  # width 8 x 16 = 128, H_c width 64, 2 layers, 64 latent channels in and out
    d = config["num_attention_heads"] * config["attention_head_dim"]
    assert d == 128
    image, text, tokens = 128, 16, 144
    embed = image * 64 * d + text * 64 * d + 256 * d + d * d  # img_in, txt_in, the timestep MLP
    projections = tokens * 4 * d * d  # q, k, v, out (the image and text streams have their own, same sizes)
    mlp = tokens * (d * 4 * d + 4 * d * d)
    modulation = 2 * d * 6 * d  # img_mod and txt_mod: d -> 6d, once per sample
    attention = tokens * tokens * d * 2  # QK^T and PV over the joint sequence, all heads
    head = d * 2 * d + image * d * 64  # norm_out's modulation (d -> 2d) and proj_out
    per_layer = projections + mlp + modulation + attention
    total, blocks = artist_step.dit_step_flops(config, 3, image, text)
    assert blocks == 2 * 3 * 2 * per_layer
    assert total == 2 * 3 * (embed + 2 * per_layer + head)


def test_dit_step_flops_equals_torch_flop_counter():
    model, _, _ = qwen_image.tiny_artist_components(0)
    kwargs = artist_step.inputs(model, 128, 16, torch.device("cpu"), batch=2)
    # the math backend: the CPU's fused SDPA kernel is not counted by FlopCounterMode, its batched products are
    with FlopCounterMode(display=False) as counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(**kwargs)
    assert artist_step.dit_step_flops(model.config, 2, 128, 16)[0] == counter.get_total_flops()


@pytest.mark.slow
def test_quick_inference_lists_every_provider_per_batch(tmp_path):
    assert "inference" in runner.BENCHMARKS
    out = tmp_path / "bench.json"
    assert runner.main(["--only", "inference", "--quick", "--no-copy-bw", "--json", str(out)]) == 0
    # strict JSON: rows that did not run have null timings, not NaN
    rows = json.loads(out.read_text(), parse_constant=_refuse)["rows"]
    assert [(r["provider"], r["case"].split()[-2]) for r in rows] == [
        (provider, f"B={batch}") for provider in inference.PROVIDERS for batch in inference.BATCHES
    ]
    for row in rows:
        if row["provider"] == "eager":
            assert 0 < row["p20_ms"] <= row["p50_ms"] <= row["p80_ms"] and row["max_error"] == 0.0
            assert row["flops"] > 0 and row["bytes_moved"] > row["flops"] / 1e3  # the tiny step: few FLOP per byte
        else:
            assert row["p50_ms"] is None and row["speedup_vs"] == {} and row["note"].startswith("not run: ")


def _refuse(constant: str):
    raise AssertionError(f"{constant} in the JSON")


def test_rows_not_run_are_left_out_of_ratios_table_and_charts():
    rows = [
        harness.Row(
            bench="inference", case="c", provider="eager", p20_ms=9, p50_ms=10, p80_ms=11, flops=1e9, bytes_moved=10**6
        ),
        harness.Row(
            bench="inference", case="c", provider="AOTI", p20_ms=4, p50_ms=5, p80_ms=6, flops=1e9, bytes_moved=10**6
        ),
        harness.not_run("inference", "c", "TensorRT", "needs torch_tensorrt"),
    ]
    harness.fill_ratios(rows, inference.BASELINES)
    assert rows[1].speedup_vs == {"eager": 2.0} and rows[2].speedup_vs == {}
    assert not harness.was_run(rows[2]) and math.isnan(rows[2].p50_ms)
    table = harness.format_table(rows)
    assert "not run" in table and "TensorRT (c): not run: needs torch_tensorrt" in table
    as_dicts = [harness.dataclasses.asdict(r) for r in rows]
    figure = plots.bench_figure("inference", as_dicts, "test device")
    heights = [p.get_height() for c in figure.axes[0].containers if hasattr(c, "patches") for p in c.patches]
    assert sorted(heights) == [5, 10]
    environment = {"device": "GPU", "copy_bandwidth_gb_per_s": 4000.0, "matmul_peak_tflops": 700.0}
    assert len(plots.roofline_figure(as_dicts, environment).axes[0].collections) == 2
