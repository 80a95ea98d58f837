"""The fused retouch kernel (Triton interpreter on CPU, compiled on CUDA) against the float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from retouch_cases import (
    DTYPES,
    EDGE_ATOL,
    RANGE_EDGES,
    as_arguments,
    assert_matches_reference,
    batches,
    full_parameters,
    mean_lightness_after_linear_steps,
    random_images,
    reference,
)

from spc_fast import photometric, retouch
from spc_fast.kernels import dispatch
from spc_fast.kernels import retouch_chain as retouch_chain_module
from spc_fast.kernels.photometric_stats import photometric_stats
from spc_fast.kernels.retouch_chain import retouch_chain

pytestmark = pytest.mark.interpreter


def kernel_arguments(images: torch.Tensor, params: dict[str, np.ndarray], mu_l: np.ndarray | None = None):
    """The custom op's arguments for per-image params, with the contrast pivot from the float64 reference."""
    tensors, neutral = retouch.chain_parameters(images, **as_arguments(params, per_image=True))
    if mu_l is None:
        mu_l = mean_lightness_after_linear_steps(images.cpu(), params)
    f32 = {k: v.float() for k, v in tensors.items()}
    mu = torch.as_tensor(mu_l, dtype=torch.float32, device=images.device)
    return (
        images,
        f32["matrix"],
        f32["upper"],
        mu,
        f32["contrast"],
        f32["saturation"],
        not neutral["contrast"],
        not neutral["saturation"],
    )


@settings(max_examples=15)
@given(case=batches())
def test_kernel_matches_reference(case):
    images, params, _ = case
    out = retouch_chain(*kernel_arguments(images, params))
    assert out.shape == images.shape and out.dtype == images.dtype and out.stride() == images.stride()
    assert_matches_reference(out, reference(images, params), images.dtype)


@settings(max_examples=8)
@given(
    flags=st.tuples(st.booleans(), st.booleans()), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 1000)
)
def test_kernel_step_flags(flags, dtype, seed):
    # a step switched on at its neutral value changes nothing beyond rounding; off, it is skipped exactly
    apply_contrast, apply_saturation = flags
    images = random_images(2, 5, 3, dtype, seed)
    params = {
        "exposure": np.array([0.5, -0.5]),
        "temperature": np.array([20.0, -20.0]),
        "contrast": np.array([1.4 if apply_contrast else 1.0, 1.0]),
        "saturation": np.array([0.7 if apply_saturation else 1.0, 1.0]),
    }
    args = list(kernel_arguments(images, params))
    args[6:] = [True, True]
    assert_matches_reference(retouch_chain(*args), reference(images, params), dtype)


def test_kernel_one_pixel_and_prime_sides():
    for shape in [
        (1, 3, 1, 1),
        (1, 3, 1, 31),
        (2, 3, 37, 1),
        (1, 3, 41, 43),
    ]:  # 41 x 43 > one 1024-pixel block
        images = random_images(*shape[:1], *shape[2:], torch.float32, shape[-1])
        params = {
            "exposure": np.full(shape[0], 0.7),
            "contrast": np.full(shape[0], 1.3),
            "saturation": np.full(shape[0], 1.5),
            "temperature": np.full(shape[0], 35.0),
        }
        assert_matches_reference(
            retouch_chain(*kernel_arguments(images, params)), reference(images, params), torch.float32
        )


def test_kernel_non_contiguous_views():
    base = random_images(2, 12, 14, torch.float32, 11)
    view = base[:, :, 1:10:2, ::3]  # arbitrary strides, no copy
    params = {
        "exposure": np.array([0.2, -0.4]),
        "contrast": np.array([1.2, 0.8]),
        "saturation": np.array([1.3, 0.5]),
        "temperature": np.array([10.0, 60.0]),
    }
    assert_matches_reference(
        retouch_chain(*kernel_arguments(view, params)), reference(view, params), torch.float32
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_kernel_at_the_range_ends_matches_the_reference(dtype):
    # the ends of retouch.RANGES saturate (white, black, gamut boundary) instead of overflowing float32
    images = random_images(2, 17, 13, dtype, 21)
    for edge in RANGE_EDGES:
        params = full_parameters(edge, 2)
        truth = reference(images, params)
        assert_matches_reference(retouch_chain(*kernel_arguments(images, params)), truth, dtype, EDGE_ATOL)
        # and through retouch.apply, which dispatches here and takes the contrast pivot from the stats kernel
        assert dispatch.use_triton(images, op="retouch_chain")
        assert_matches_reference(retouch.apply(images, **edge), truth, dtype, EDGE_ATOL)


def test_kernel_zero_shift_leaves_pixels_unchanged():
    images = random_images(2, 9, 7, torch.uint8, 22)
    params = full_parameters({}, 2)
    args = list(kernel_arguments(images, params))
    assert torch.equal(args[1], torch.eye(3).expand(2, 3, 3))  # the zero shift's matrix, exactly
    assert torch.equal(retouch_chain(*args), images)


def test_offsets_beyond_int32_are_refused():
    huge = torch.empty_strided((1, 3, 2, 2), (0, 2**31, 2, 1), dtype=torch.uint8, device="meta")
    with pytest.raises(ValueError, match="32-bit offsets"):
        retouch_chain_module._check_offsets(huge)


def test_opcheck():
    images = random_images(2, 5, 7, torch.uint8, 12)
    params = {
        "exposure": np.array([0.2, 0.0]),
        "contrast": np.array([1.2, 1.0]),
        "saturation": np.array([1.3, 1.0]),
        "temperature": np.array([10.0, 0.0]),
    }
    torch.library.opcheck(torch.ops.spc_fast.retouch_chain.default, kernel_arguments(images, params))


@settings(max_examples=8)
@given(case=batches(max_batch=2))
def test_apply_dispatches_to_kernel(case):
    images, params, per_image = case
    assert dispatch.use_triton(images)
    out = retouch.apply(images, **as_arguments(params, per_image))
    assert_matches_reference(out, reference(images, params), images.dtype)


def test_kernel_mean_lightness_matches_reference():
    images = random_images(3, 13, 7, torch.float32, 13)
    params = {
        "exposure": np.array([0.8, -1.5, 0.0]),
        "contrast": np.ones(3),
        "saturation": np.ones(3),
        "temperature": np.array([-80.0, 0.0, 200.0]),
    }
    tensors, _ = retouch.chain_parameters(images, **as_arguments(params, per_image=True))
    stats = photometric_stats(images, linear_matrix=tensors["matrix"].float(), upper=tensors["upper"].float())
    mu = photometric.mean_lightness(stats)
    np.testing.assert_allclose(
        mu.double().numpy(), mean_lightness_after_linear_steps(images, params), atol=1e-3
    )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.uint8, torch.bfloat16, torch.float32])
def test_compiled_kernel_on_cuda(dtype, compiled_kernels):
    images = random_images(3, 97, 131, dtype, 14)
    params = {
        "exposure": np.array([0.6, -1.0, 0.0]),
        "contrast": np.array([1.5, 0.7, 1.0]),
        "saturation": np.array([1.7, 0.0, 1.2]),
        "temperature": np.array([50.0, -30.0, 0.0]),
    }
    cuda = images.cuda().contiguous(memory_format=torch.channels_last)
    with compiled_kernels("_retouch_chain_kernel", "_photometric_stats_kernel"):  # the mean L* of contrast
        out = retouch.apply(cuda, **{k: torch.as_tensor(v, device="cuda") for k, v in params.items()})
    assert out.is_cuda and out.is_contiguous(memory_format=torch.channels_last)
    assert_matches_reference(out.cpu(), reference(images, params), dtype)
    direct = retouch_chain(*kernel_arguments(cuda, params))
    assert_matches_reference(direct.cpu(), reference(images, params), dtype)
