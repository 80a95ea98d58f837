"""The fused photometric statistics kernel (Triton, interpreted on the CPU) against the float64 reference."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import given, settings
from hypothesis import strategies as st

from spc_fast import colour, photometric
from spc_fast.images import numpy_to_unit
from spc_fast.kernels import grid, photometric_partials
from spc_fast.kernels import photometric_stats as kernel
from spc_fast.kernels.tl_colour import lab_f

pytestmark = pytest.mark.interpreter

# Per input dtype: (relative tolerance on exposure/contrast/saturation, absolute floor in L*/C* units for
# values near 0 such as the saturation of a grey image, relative tolerance on CCT). The reference is fed the
# very values the kernel reads (fp16/bf16 quantised first), so low-precision inputs keep the fp32 tolerance.
TOLERANCES = {
    torch.uint8: (1e-4, 1e-3, 1e-3),
    torch.float16: (1e-4, 1e-3, 1e-3),
    torch.bfloat16: (1e-4, 1e-3, 1e-3),
    torch.float32: (1e-4, 1e-3, 1e-3),
}
DTYPES = list(TOLERANCES)
CONTENTS = ("uniform", "extremes", "grey", "dark", "flat", "bright_low_variance")
SIDES = st.one_of(st.sampled_from([1, 2, 7, 13, 61, 89]), st.integers(1, 97))
SMALL_CONFIG = kernel.LaunchConfig(block=16, chunks=3, num_warps=1)  # many programs, loops and ragged tails


def looping_config(num_pixels: int) -> kernel.LaunchConfig:
    """Three chunks per program and about four programs per image: loops and tails at interpreter cost."""
    return kernel.LaunchConfig(max(16, triton.next_power_of_2(triton.cdiv(num_pixels, 12))), 3, 1)


def make_values(rng: np.random.Generator, batch: int, h: int, w: int, content: str) -> np.ndarray:
    """Float64 sRGB values [B, H, W, 3] in [0, 1]."""
    shape = (batch, h, w, 3)
    if content == "uniform":
        return rng.random(shape)
    if content == "extremes":  # exact 0 and exact 1 mixed into the full range
        pick = rng.random((batch, h, w, 1))
        return np.where(pick < 0.15, 0.0, np.where(pick > 0.85, 1.0, rng.random(shape)))
    if content == "grey":
        return np.repeat(rng.random((batch, h, w, 1)), 3, axis=-1)
    if content == "dark":  # linear segment of sRGB and of the Lab f()
        return rng.random(shape) * 0.03
    if content == "flat":
        return np.broadcast_to(rng.uniform(0.3, 0.7, (batch, 1, 1, 3)), shape).copy()
    return np.clip(0.9 + 0.01 * rng.standard_normal(shape), 0.0, 1.0)


def to_tensor(values: np.ndarray, dtype: torch.dtype, channels_last: bool = False) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(values)).permute(0, 3, 1, 2)  # [B, 3, H, W]
    images = (images * 255).round().to(torch.uint8) if dtype == torch.uint8 else images.to(dtype)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return images.contiguous(memory_format=memory_format)


def reference(images: torch.Tensor) -> np.ndarray:
    """Reference attributes [B, 4] of exactly the values stored in ``images``."""
    host = images.cpu()
    host = host if host.dtype == torch.uint8 else host.double()
    return np.stack([photometric.attributes_reference(image.permute(1, 2, 0).numpy()) for image in host])


def assert_attributes_close(got: torch.Tensor, truth: np.ndarray, dtype: torch.dtype) -> None:
    rel, floor, rel_cct = TOLERANCES[dtype]
    got = got.double().cpu().numpy()
    np.testing.assert_allclose(got[:, :3], truth[:, :3], rtol=rel, atol=floor)
    np.testing.assert_allclose(got[:, 3], truth[:, 3], rtol=rel_cct)


def attributes(images: torch.Tensor, **kwargs) -> torch.Tensor:
    return photometric.finalize(kernel.launch(images, **kwargs))


@st.composite
def image_batches(draw):
    batch = draw(st.integers(1, 3))
    h, w = draw(SIDES), draw(SIDES)
    dtype = draw(st.sampled_from(DTYPES))
    content = draw(st.sampled_from(CONTENTS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return to_tensor(make_values(rng, batch, h, w, content), dtype, channels_last=draw(st.booleans()))


@settings(max_examples=40)
@given(images=image_batches(), looping=st.booleans(), newton=st.booleans())
def test_matches_reference(images, looping, newton):
    config = looping_config(images[0, 0].numel()) if looping else None
    got = attributes(images, config=config, cbrt_newton=newton)
    assert_attributes_close(got, reference(images), images.dtype)


def test_public_op_matches_reference_on_photos(photos):
    # a batch of four different photographs, uint8, decoded layout (channels_last view of H x W x 3 arrays)
    crops = np.stack([photo[:300, :400] for photo in photos.values()])
    images = torch.from_numpy(crops).permute(0, 3, 1, 2)
    partials = kernel.photometric_stats(images)
    assert partials.shape == (4, kernel.num_blocks(300, 400, images.device), photometric_partials.NUM_STATS)
    assert photometric.STAT_NAMES == photometric_partials.STAT_NAMES  # still importable where it used to be
    assert_attributes_close(photometric.finalize(partials), reference(images), torch.uint8)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("newton", [False, True])
def test_single_pixels_at_the_extremes(dtype, newton):
    # black, white, primaries, secondaries: every channel exactly 0 or 1
    corners = np.array([[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)], dtype=np.float64)
    images = to_tensor(corners[:, None, None, :], dtype)  # [8, 3, 1, 1]
    assert_attributes_close(attributes(images, cbrt_newton=newton), reference(images), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_black_image_is_neutral(dtype):
    images = torch.zeros(2, 3, 7, 13, dtype=dtype)
    got = attributes(images, config=SMALL_CONFIG)
    expected = torch.tensor([0.0, 0.0, 0.0, photometric.NEUTRAL_WHITE_CCT]).expand(2, 4)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 37), (37, 1), (7, 13), (5, 48), (13, 29)])
def test_masked_lanes_do_not_pollute_the_blocks(shape):
    h, w = shape
    values = make_values(np.random.default_rng(h * w), 2, h, w, "bright_low_variance")
    images = to_tensor(values, torch.float32)
    partials = kernel.launch(images, config=SMALL_CONFIG)
    per_program = SMALL_CONFIG.block * SMALL_CONFIG.chunks
    counts = np.minimum(per_program, h * w - per_program * np.arange(partials.shape[1]))
    np.testing.assert_array_equal(partials[..., 0].numpy(), np.broadcast_to(counts, (2, len(counts))))
    assert_attributes_close(photometric.finalize(partials), reference(images), torch.float32)


@pytest.mark.parametrize("layout", ["channels_last", "cropped_view", "expanded_grey", "transposed"])
def test_strided_inputs(layout):
    base = to_tensor(make_values(np.random.default_rng(5), 2, 23, 31, "uniform"), torch.float32)
    if layout == "channels_last":
        images = base.contiguous(memory_format=torch.channels_last)
    elif layout == "cropped_view":  # rows not flattenable: the launcher copies
        images = base[:, :, 2:-3, 1:-4]
    elif layout == "expanded_grey":  # channel stride 0
        images = base[:, :1].expand(-1, 3, -1, -1)
    else:
        images = base.transpose(2, 3)
    assert_attributes_close(attributes(images), reference(images), torch.float32)


def pre_transform_reference(images: torch.Tensor, matrix: torch.Tensor, upper: torch.Tensor) -> np.ndarray:
    """Reference attributes of sRGB(clip(M @ linear, 0, upper)) per image."""
    host = images if images.dtype == torch.uint8 else images.double()
    values = host.permute(0, 2, 3, 1).numpy()
    rows = []
    for image, m, u in zip(values, matrix.double().numpy(), upper.double().numpy(), strict=True):
        linear = np.clip(colour.srgb_to_linear(numpy_to_unit(image)) @ m.T, 0.0, u)
        rows.append(photometric.attributes_reference(np.clip(colour.linear_to_srgb(linear), 0.0, 1.0)))
    return np.stack(rows)


@st.composite
def pre_transforms(draw, batch):
    rows = []
    for _ in range(batch):
        gain = 2.0 ** draw(st.floats(-2.0, 1.5))
        rows.append(gain * colour.temperature_matrix(draw(st.floats(-100.0, 100.0))))
    upper = [draw(st.sampled_from([1.0, 0.25, 0.8])) for _ in range(batch)]
    return torch.tensor(np.stack(rows), dtype=torch.float32), torch.tensor(upper, dtype=torch.float32)


@given(images=image_batches(), data=st.data(), looping=st.booleans(), newton=st.booleans())
def test_pre_transform_matches_reference(images, data, looping, newton):
    matrix, upper = data.draw(pre_transforms(images.shape[0]))
    config = looping_config(images[0, 0].numel()) if looping else None
    got = attributes(images, linear_matrix=matrix, upper=upper, config=config, cbrt_newton=newton)
    truth = pre_transform_reference(images, matrix, upper)
    assert_attributes_close(got, truth, images.dtype)
    fallback = photometric.block_stats_torch(images, linear_matrix=matrix, upper=upper)
    assert_attributes_close(photometric.finalize(fallback), truth, images.dtype)


def test_identity_pre_transform_changes_nothing():
    images = to_tensor(make_values(np.random.default_rng(9), 2, 13, 7, "uniform"), torch.uint8)
    matrix, upper = torch.eye(3).expand(2, 3, 3), torch.ones(2)
    torch.testing.assert_close(
        kernel.photometric_stats(images, matrix, upper), kernel.photometric_stats(images), rtol=0, atol=0
    )


@triton.jit
def _lab_f_probe(t_ptr, out_ptr, n, CBRT_NEWTON: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    t = tl.load(t_ptr + offsets, mask=mask, other=0.0)
    tl.store(out_ptr + offsets, lab_f(t, CBRT_NEWTON), mask=mask)


def lab_f_errors(device: str, newton: bool) -> np.ndarray:
    """Relative errors of the kernel's CIE f() against float64 over [0, 8], both branches and the joint."""
    eps = colour.LAB_EPSILON
    edges = [0.0, eps, np.nextafter(np.float32(eps), 1), 1.0]
    t = np.concatenate([edges, np.linspace(0, 1, 50_001), np.geomspace(1e-6, 8, 50_001)]).astype(np.float32)
    t_dev = torch.from_numpy(t).to(device)
    out = torch.empty_like(t_dev)
    block = 1 << 14
    _lab_f_probe[(triton.cdiv(len(t), block),)](t_dev, out, len(t), CBRT_NEWTON=newton, BLOCK=block)
    t64 = t.astype(np.float64)
    truth = np.where(t64 > eps, np.cbrt(t64), t64 * colour.LAB_SLOPE + colour.LAB_OFFSET)
    return np.abs(out.cpu().numpy() / truth - 1.0)


@pytest.mark.parametrize("newton", [False, True])
def test_cube_root_variants_are_exact_to_float32(newton):
    assert lab_f_errors("cpu", newton).max() <= 4 * 2.0**-24


def test_opcheck_and_fake_shapes():
    values = make_values(np.random.default_rng(3), 2, 7, 13, "uniform")
    images = to_tensor(values, torch.uint8, channels_last=True)
    matrix, upper = torch.eye(3).expand(2, 3, 3).contiguous(), torch.ones(2)
    for args in [(images, None, None), (images.float() / 255, matrix, upper)]:
        torch.library.opcheck(torch.ops.spc_fast.photometric_stats.default, args)


@pytest.mark.parametrize("multiprocessors", [132, 108])  # H100/H200, A100
def test_launch_config_fills_the_device(monkeypatch, multiprocessors):
    monkeypatch.setattr(kernel, "interpreting", lambda: False)
    monkeypatch.setattr(grid, "multiprocessor_count", lambda device: multiprocessors)
    gpu = torch.device("cuda", 0)
    config = kernel.launch_config(3000 * 4000, gpu)
    assert config.block == kernel.GPU_BLOCK and 1 < config.chunks <= kernel.MAX_CHUNKS
    assert kernel.num_blocks(3000, 4000, gpu) >= kernel.PROGRAMS_PER_SM * multiprocessors
    assert kernel.num_blocks(1, 1, gpu) == 1 and kernel.launch_config(1, gpu).chunks == 1
    for h, w in [(1, 1), (61, 89), (1024, 1024), (3000, 4000), (20000, 20000)]:
        config = kernel.launch_config(h * w, gpu)
        assert kernel.num_blocks(h, w, gpu) == triton.cdiv(h * w, config.block * config.chunks)


def test_multiprocessor_count_is_read_once_per_device(monkeypatch):
    reads = []

    def properties(index):
        reads.append(index)
        return type("Properties", (), {"multi_processor_count": 108 + 24 * index})()

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    grid._multiprocessor_count.cache_clear()
    try:
        counts = [grid.multiprocessor_count(d) for d in ("cuda:0", "cuda:0", "cuda", torch.device("cuda", 1))]
        assert counts == [108, 108, 132, 132] and reads == [0, 1]
        assert grid.min_programs("cuda:0", 16) == 16 * 108
    finally:
        grid._multiprocessor_count.cache_clear()
    with pytest.raises(ValueError, match="needs a CUDA device"):
        grid.multiprocessor_count("cpu")


def test_eligible_follows_dispatch(monkeypatch):
    images = torch.zeros(1, 3, 2, 2)
    assert kernel.eligible(images)
    monkeypatch.setenv("SPC_FAST_DISABLE_TRITON", "1")
    assert not kernel.eligible(images)


@pytest.mark.parametrize(
    ("matrix", "upper", "match"),
    [
        (torch.eye(3).expand(2, 3, 3), None, "go together"),
        (torch.eye(3), torch.ones(2), "linear_matrix must be float32 of shape"),
        (torch.eye(3, dtype=torch.float64).expand(2, 3, 3), torch.ones(2), "linear_matrix must be float32"),
        (torch.eye(3).expand(2, 3, 3), torch.ones(3), "upper must be float32 of shape"),
    ],
)
def test_bad_pre_transform_is_rejected(matrix, upper, match):
    with pytest.raises(ValueError, match=match):
        kernel.photometric_stats(torch.zeros(2, 3, 4, 4), matrix, upper)


def large_image(dtype: torch.dtype) -> torch.Tensor:
    """12 MP, bright with a small spread of L*: the case the sum-of-squares variance gets wrong."""
    rng = np.random.default_rng(12)
    h, w = 3000, 4000
    ramp = np.linspace(0.0, 0.05, w, dtype=np.float32)[None, :, None]
    values = np.clip(0.85 + ramp + 0.02 * rng.standard_normal((h, w, 3), dtype=np.float32), 0.0, 1.0)
    if dtype == torch.uint8:
        values = np.round(values * 255).astype(np.uint8)
    return torch.from_numpy(values).permute(2, 0, 1)[None]  # channels_last view


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_twelve_megapixels_keeps_contrast(dtype):
    images = large_image(dtype)
    # the float64 reference beside the interpreted kernel: both spend their time in numpy, which releases the GIL
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(reference, images)
        got = photometric.finalize(kernel.photometric_stats(images))
    truth = pending.result()
    np.testing.assert_allclose(got[0, 1].item(), truth[0, 1], rtol=1e-4)
    assert_attributes_close(got, truth, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("newton", [False, True])
def test_compiled_kernel_on_cuda(newton, compiled_kernels):
    assert lab_f_errors("cuda", newton).max() <= 1e-6
    rng = np.random.default_rng(21)
    with compiled_kernels("_photometric_stats_kernel"):
        for dtype in DTYPES:
            for h, w in [(1, 1), (7, 13), (61, 89), (517, 1031)]:
                for channels_last in (False, True):
                    images = to_tensor(make_values(rng, 3, h, w, "extremes"), dtype, channels_last).cuda()
                    assert_attributes_close(attributes(images, cbrt_newton=newton), reference(images), dtype)
            images = to_tensor(make_values(rng, 2, 255, 257, "uniform"), dtype).cuda()
            matrix = np.stack([1.5 * colour.temperature_matrix(40), 0.5 * colour.temperature_matrix(-60)])
            matrix, upper = torch.tensor(matrix).float().cuda(), torch.tensor([1.0, 0.5]).cuda()
            got = attributes(images, linear_matrix=matrix, upper=upper, cbrt_newton=newton)
            assert_attributes_close(got, pre_transform_reference(images.cpu(), matrix.cpu(), upper.cpu()), dtype)
        for dtype in (torch.float32, torch.uint8):
            images = large_image(dtype)
            got = attributes(images.cuda(), cbrt_newton=newton)
            truth = reference(images)
            np.testing.assert_allclose(got[0, 1].item(), truth[0, 1], rtol=1e-4)
            assert_attributes_close(got, truth, dtype)
            assert_attributes_close(photometric.attributes(images.cuda()), truth, dtype)  # the public entry
