"""The exportable DiT step: equal to the sampler's call of diffusers' forward, exportable with every size dynamic,
and the range check the runtime runs before each call."""

import pytest
import torch

from spc_fast.artist.rope import RealQwenRope
from spc_fast.artist.sampler import predict_velocity
from spc_fast.export.cli import main as export_main
from spc_fast.export.manifest import state_dict_sha256, weights_sha256
from spc_fast.export.parity import parity_cases
from spc_fast.export.ranges import ExportRanges
from spc_fast.export.step import ArtistStep, dynamic_shapes, example_inputs, step_inputs
from spc_fast.models import tiny_artist

RANGES = ExportRanges.from_limits(32 * 32, 256 * 256, max_batch=4, max_hc_tokens=64)


@pytest.fixture(scope="module")
def dit():
    return tiny_artist().transformer


@pytest.mark.parametrize("noise_grid, source_grid", [((4, 4), (4, 4)), ((3, 6), (2, 6))])
@pytest.mark.parametrize("hc_len", [5, 17])
def test_step_equals_predict_velocity(dit, noise_grid, source_grid, hc_len):
    generator = torch.Generator().manual_seed(hc_len)
    noise, source, t, h_c, mask = step_inputs(
        2, noise_grid, source_grid, hc_len, 64, dtype=torch.float32, device="cpu", generator=generator, padding=2
    )
    shapes = [[(1, *noise_grid), (1, *source_grid)]] * 2
    with torch.no_grad():
        expected = predict_velocity(dit, noise.flatten(1, 2), source.flatten(1, 2), t, h_c, mask, shapes)
        got = ArtistStep(dit)(noise, source, t, h_c, mask)
    assert got.shape == noise.shape
    torch.testing.assert_close(got.flatten(1, 2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_export_keeps_every_size_dynamic(dit):
    args = example_inputs(RANGES, 64, torch.float32, "cpu")
    program = torch.export.export(ArtistStep(dit), args, dynamic_shapes=dynamic_shapes(RANGES))
    placeholders = [node for node in program.graph.nodes if node.op == "placeholder"][-5:]
    symbolic = [[str(size) for size in node.meta["val"].shape] for node in placeholders]
    assert symbolic[0][3] == symbolic[1][3] == "64" and symbolic[3][2] == "64"  # only the channels are fixed
    assert not [size for shape in symbolic for size in shape if size.isdigit() and size != "64"]
    assert not [node for node in program.graph.nodes if "complex" in str(node.target)]
    generator = torch.Generator().manual_seed(1)
    other = step_inputs(3, (5, 2), (3, 3), 11, 64, dtype=torch.float32, device="cpu", generator=generator, padding=3)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*other), ArtistStep(dit)(*other), rtol=1e-5, atol=1e-5)


def test_rope_accepts_a_tensor_length_as_before():
    rope = RealQwenRope((4, 6, 6))
    from_int = rope([[(1, 2, 3)]], max_txt_seq_len=5)
    from_tensor = rope([[(1, 2, 3)]], max_txt_seq_len=torch.tensor(5))
    for a, b in zip(from_int, from_tensor, strict=True):
        torch.testing.assert_close(a, b)
    assert from_int[1].shape[0] == 5


def test_ranges_from_pixel_limits():
    ranges = ExportRanges.from_limits(256 * 256, 1024 * 1024, max_batch=4, max_hc_tokens=512)
    assert ranges.batch == (1, 4) and ranges.hc_len == (2, 512)
    assert ranges.side[0] <= 8 <= 64 <= ranges.side[1]  # 128x512 px and a 1 MP square are inside
    assert ExportRanges.from_manifest(ranges.as_manifest()) == ranges
    low, high = ranges.grid(2)
    assert high == 2 * low and low * high * 256 >= 256 * 256


@pytest.mark.parametrize(
    "noise, source, hc, named",
    [
        ((5, 4, 4, 64), (5, 4, 4, 64), (5, 9, 64), "batch=5 outside [1, 4]"),
        ((1, 4, 4, 64), (1, 4, 4, 64), (1, 65, 64), "hc_len=65 outside [2, 64]"),
        ((1, 80, 4, 64), (1, 4, 4, 64), (1, 9, 64), "noise_h=80 outside"),
        ((1, 4, 4, 64), (1, 16, 20, 64), (1, 9, 64), "over the exported max"),
        ((2, 4, 4, 64), (1, 4, 4, 64), (2, 9, 64), "batch sizes differ"),
    ],
)
def test_range_check_names_the_range(noise, source, hc, named):
    with pytest.raises(ValueError, match="exported: batch 1..4") as error:
        RANGES.check(noise, source, hc)
    assert named in str(error.value)
    RANGES.check((4, 4, 4, 64), (4, 3, 5, 64), (4, 64, 64))


@pytest.mark.parametrize(
    "limits, message",
    [((1000, 10), "at most --max-pixels"), ((16, 16), "below the smallest grid"), ((1024, 4096, 0), "--max-batch")],
)
def test_bad_limits_are_named(limits, message):
    min_pixels, max_pixels, *batch = limits
    with pytest.raises(ValueError, match=message):
        ExportRanges.from_limits(min_pixels, max_pixels, batch[0] if batch else 1, 64)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "aoti", "--precision", "fp8"], "fp8 needs --format tensorrt"),
        (["--format", "onnx", "--precision", "bf16"], "onnx takes --precision fp32 or fp16"),
        (["--format", "aoti", "--max-batch", "0"], "--max-batch must be at least 1"),
        (["--format", "aoti", "--min-pixels", "5000", "--max-pixels", "4096"], "at most --max-pixels"),
    ],
)
def test_export_command_rejects_bad_flags_before_building(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        export_main(["--artist", "tiny", "--out", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_export_command_names_missing_flags(tmp_path):
    with pytest.raises(ValueError, match="missing --format, --out"):
        export_main(["--artist", "tiny"])
    with pytest.raises(FileNotFoundError, match="manifest.json not found"):
        export_main(["--verify", str(tmp_path)])


def test_weights_hash_follows_the_bytes(tmp_path):
    state = {"w": torch.ones(3)}
    assert (
        state_dict_sha256(state) == state_dict_sha256({"w": torch.ones(3)}) != state_dict_sha256({"w": torch.zeros(3)})
    )
    (tmp_path / "a.safetensors").write_bytes(b"one")
    first = weights_sha256(str(tmp_path), None, {})
    (tmp_path / "a.safetensors").write_bytes(b"two")
    assert weights_sha256(str(tmp_path), None, {}) != first
    with pytest.raises(ValueError, match="no .safetensors files"):
        weights_sha256(str(tmp_path / "empty"), None, {})


def test_parity_cases_cover_two_aspects_and_two_hc_lengths():
    cases = parity_cases(RANGES)
    assert {tuple(case["noise"]) for case in cases} == {RANGES.grid(1), RANGES.grid(2)}
    assert {case["hc_len"] for case in cases} == {RANGES.hc_len[0] + 6, RANGES.hc_len[1]}
    assert {case["batch"] for case in cases} == set(RANGES.batch)
    for case in cases:
        RANGES.check(
            (case["batch"], *case["noise"], 64),
            (case["batch"], *case["source"], 64),
            (case["batch"], case["hc_len"], 64),
        )
