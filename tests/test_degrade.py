"""Degradations: determinism per seed, dtype and range, and that each one moves the measure it should."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spc_fast import degrade
from spc_fast.photometric import attributes_reference

PARAMS = {
    "gaussian_blur": {"sigma": 1.5},
    "motion_blur": {"length": 7.0, "angle": 30.0},
    "haze": {"t": 0.5, "airlight": 0.9},
    "gaussian_noise": {"sigma": 0.08},
    "poisson_noise": {"photons": 50.0},
    "low_light": {"ev": -2.5, "noise": 0.005},
    "jpeg": {"quality": 10},
}
DTYPES = (torch.uint8, torch.float32, torch.bfloat16)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def photo_batch(photos):
    """Two bundled photos, 48 x 64 crops, uint8 (2, 3, 48, 64)."""
    crops = [photos[name][100:148, 150:214] for name in ("astronaut", "coffee")]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def attributes(images: torch.Tensor) -> np.ndarray:
    """Float64 attributes [B, 4] of each image (the reference: these tests stay independent of kernels)."""
    x = images if images.dtype == torch.uint8 else images.double()
    return np.stack([attributes_reference(image.permute(1, 2, 0).numpy()) for image in x])


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    grey = images.float().mean(1, keepdim=True) / (255.0 if images.dtype == torch.uint8 else 1.0)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(grey, kernel).var(dim=(1, 2, 3))


def test_registry_covers_every_degradation():
    assert set(degrade.DEGRADATIONS) == set(PARAMS)
    ops = {d.corrective_op for d in degrade.DEGRADATIONS.values()}
    assert ops == {"remove blur", "remove haze", "remove noise", "remove compression artifacts", "enhance low light"}


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_shape_range_and_determinism(name, dtype, photo_batch):
    images = photo_batch if dtype == torch.uint8 else (photo_batch.float() / 255).to(dtype)
    d = degrade.DEGRADATIONS[name]
    first = d(images, generator=generator(1), **PARAMS[name])
    again = d(images, generator=generator(1), **PARAMS[name])
    assert first.dtype == dtype and first.shape == images.shape
    assert torch.equal(first, again)
    if dtype != torch.uint8:
        assert first.min() >= 0 and first.max() <= 1
    if d.random:
        other = d(images, generator=generator(2), **PARAMS[name])
        assert not torch.equal(first, other)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_unbatched_and_tiny_images(name):
    image = torch.rand(3, 1, 3, generator=generator(3))
    out = degrade.DEGRADATIONS[name](image, generator=generator(), **PARAMS[name])
    assert out.shape == image.shape


@pytest.mark.parametrize("name", ["gaussian_blur", "motion_blur"])
def test_blur_lowers_laplacian_variance(name, photo_batch):
    out = degrade.DEGRADATIONS[name](photo_batch, **PARAMS[name])
    assert (laplacian_variance(out) < 0.5 * laplacian_variance(photo_batch)).all()


@pytest.mark.parametrize("name", ["gaussian_noise", "poisson_noise"])
def test_noise_raises_laplacian_variance(name, photo_batch):
    out = degrade.DEGRADATIONS[name](photo_batch, generator=generator(), **PARAMS[name])
    assert (laplacian_variance(out) > 2.0 * laplacian_variance(photo_batch)).all()


def test_haze_lowers_contrast_and_follows_the_model(photo_batch):
    out = degrade.haze(photo_batch.float() / 255, t=0.5, airlight=0.9)
    assert (attributes(out)[:, 1] < attributes(photo_batch)[:, 1]).all()
    torch.testing.assert_close(out, photo_batch.float() / 255 * 0.5 + 0.45)


def test_low_light_lowers_exposure(photo_batch):
    out = degrade.low_light(photo_batch, generator=generator(), **PARAMS["low_light"])
    assert (attributes(out)[:, 0] < attributes(photo_batch)[:, 0] - 10).all()


def test_jpeg_changes_little_at_high_quality(photo_batch):
    high = degrade.jpeg(photo_batch, quality=95).float()
    low = degrade.jpeg(photo_batch, quality=5).float()
    original = photo_batch.float()
    assert (high - original).abs().mean() < (low - original).abs().mean()


def test_gaussian_blur_preserves_constant_images():
    flat = torch.full((1, 3, 9, 4), 0.3)
    torch.testing.assert_close(degrade.gaussian_blur(flat, 2.0), flat)
    torch.testing.assert_close(degrade.motion_blur(flat, 5.0, 75.0), flat)


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 200.0])
def test_motion_kernel_is_a_normalised_line(angle):
    kernel = degrade.motion_kernel(6.0, angle)
    assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0))
    torch.testing.assert_close(
        kernel, kernel.flip(0, 1), atol=1e-6, rtol=0
    )  # point-symmetric about the centre


def test_noise_without_generator_is_refused():
    with pytest.raises(ValueError, match="generator"):
        degrade.gaussian_noise(torch.rand(3, 2, 2), 0.1, generator=None)


@pytest.mark.parametrize(
    ("fn", "params", "message"),
    [
        (degrade.gaussian_blur, {"sigma": 0.0}, "sigma"),
        (degrade.motion_blur, {"length": 0.5, "angle": 0.0}, "length"),
        (degrade.haze, {"t": 0.0}, "transmission"),
        (degrade.haze, {"t": 0.5, "airlight": 1.5}, "airlight"),
        (degrade.jpeg, {"quality": 0}, "quality"),
        (degrade.jpeg, {"quality": 50.5}, "quality"),
    ],
)
def test_bad_parameters(fn, params, message):
    with pytest.raises(ValueError, match=message):
        fn(torch.rand(3, 4, 4), **params)


def test_bad_random_parameters():
    g = generator()
    with pytest.raises(ValueError, match="ev <= 0"):
        degrade.low_light(torch.rand(3, 4, 4), ev=1.0, noise=0.0, generator=g)
    with pytest.raises(ValueError, match="photons"):
        degrade.poisson_noise(torch.rand(3, 4, 4), photons=0.0, generator=g)
