"""Synthetic degradations for restoration data (SPEC.md §3, last paragraph), batched torch.

Each function takes sRGB images (B, 3, H, W) or (3, H, W), uint8 or float in [0, 1] (validated by
``images.check_batch``), and returns images in [0, 1] of the input dtype and shape. Random ones draw every
number from the explicit ``generator`` (never the global RNG), on the generator's device, so a seed reproduces
the same degradation; a CPU generator gives the same noise whichever device the images live on.

``DEGRADATIONS`` maps each name to its function and to the critic's corrective op (SPEC.md §4) that undoes it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spc_fast import colour_torch
from spc_fast.images import check_batch, from_unit_float, to_unit_float


def _as_float(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    batch, unbatched = check_batch(images)
    return to_unit_float(batch, torch.float32), unbatched


def _finish(out: torch.Tensor, like: torch.Tensor, unbatched: bool) -> torch.Tensor:
    out = from_unit_float(out.clamp_(0.0, 1.0), like.dtype)
    return out[0] if unbatched else out


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(
            "pass generator=torch.Generator().manual_seed(seed); degradations never use the global RNG"
        )


def _noise(shape, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    # drawn on the generator's device: a CPU generator gives the same noise for images on any device
    _check_generator(generator)
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    # same-size per-channel convolution of x [B, 3, H, W] with an odd-sided kernel [kh, kw], edges replicated
    kh, kw = kernel.shape
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(padded, kernel.expand(3, 1, kh, kw), groups=3)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels: separable, radius ceil(3 sigma)."""
    _require(sigma > 0, f"sigma must be > 0 pixels, got {sigma}")
    x, unbatched = _as_float(images)
    radius = math.ceil(3.0 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps /= taps.sum()
    out = _depthwise(_depthwise(x, taps[None, :]), taps[:, None])
    return _finish(out, images, unbatched)


def motion_kernel(length: float, angle: float, device: torch.device | None = None) -> torch.Tensor:
    """Normalised line kernel [k, k] of ``length`` pixels at ``angle`` degrees (counter-clockwise from +x)."""
    _require(length >= 1, f"motion blur length must be >= 1 pixel, got {length}")
    size = 2 * math.ceil(length / 2) + 1
    centre = size // 2
    # sample the segment densely and splat every sample bilinearly onto the grid
    t = torch.linspace(-length / 2, length / 2, 8 * size, device=device)
    theta = math.radians(angle)
    px, py = centre + t * math.cos(theta), centre - t * math.sin(theta)  # image rows grow downwards
    x0, y0 = px.floor(), py.floor()
    kernel = torch.zeros(size + 1, size + 1, device=device)
    for dx in (0, 1):
        for dy in (0, 1):
            weight = (1 - (px - x0 - dx).abs()) * (1 - (py - y0 - dy).abs())
            kernel.index_put_(((y0 + dy).long(), (x0 + dx).long()), weight, accumulate=True)
    kernel = kernel[:size, :size]
    return kernel / kernel.sum()


def motion_blur(images: torch.Tensor, length: float, angle: float) -> torch.Tensor:
    """Linear motion blur over ``length`` pixels in direction ``angle`` degrees."""
    x, unbatched = _as_float(images)
    out = _depthwise(x, motion_kernel(length, angle, x.device))
    return _finish(out, images, unbatched)


def haze(images: torch.Tensor, t: float, airlight: float = 0.9) -> torch.Tensor:
    """Atmospheric scattering I = J t + A (1 - t): uniform transmission t in (0, 1], airlight A in [0, 1]."""
    _require(0 < t <= 1, f"transmission t must lie in (0, 1], got {t}; 1 is no haze")
    _require(0 <= airlight <= 1, f"airlight A must lie in [0, 1], got {airlight}")
    x, unbatched = _as_float(images)
    return _finish(x * t + airlight * (1.0 - t), images, unbatched)


def gaussian_noise(images: torch.Tensor, sigma: float, *, generator: torch.Generator) -> torch.Tensor:
    """Additive white gaussian noise of standard deviation ``sigma`` on the sRGB values, then clipped."""
    _require(sigma >= 0, f"noise sigma must be >= 0, got {sigma}")
    x, unbatched = _as_float(images)
    return _finish(x + sigma * _noise(x.shape, generator, x.device), images, unbatched)


def poisson_noise(images: torch.Tensor, photons: float, *, generator: torch.Generator) -> torch.Tensor:
    """Shot noise on linear intensities: a pixel of linear value v counts Poisson(v * photons) photons."""
    _require(photons > 0, f"photons (expected count at linear 1.0) must be > 0, got {photons}")
    _check_generator(generator)
    x, unbatched = _as_float(images)
    rate = colour_torch.srgb_to_linear(x).to(generator.device) * photons
    counts = torch.poisson(rate, generator=generator).to(x.device)
    return _finish(colour_torch.linear_to_srgb(counts / photons), images, unbatched)


def low_light(images: torch.Tensor, ev: float, noise: float, *, generator: torch.Generator) -> torch.Tensor:
    """Under-exposure by ``ev`` <= 0 stops plus gaussian read noise of std ``noise``, both in linear RGB."""
    _require(ev <= 0, f"low light needs ev <= 0 stops, got {ev}; use spc_fast.retouch.apply to brighten")
    _require(noise >= 0, f"read noise must be >= 0, got {noise}")
    x, unbatched = _as_float(images)
    linear = colour_torch.srgb_to_linear(x) * 2.0**ev + noise * _noise(x.shape, generator, x.device)
    return _finish(colour_torch.linear_to_srgb(linear.clamp_(0.0, 1.0)), images, unbatched)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG encode/decode round trip at ``quality`` (1-95, Pillow's scale; 4:2:0 chroma subsampling)."""
    _require(
        isinstance(quality, int) and 1 <= quality <= 95,
        f"jpeg quality must be an int in [1, 95], got {quality}",
    )
    batch, unbatched = check_batch(images)
    pixels = (
        from_unit_float(to_unit_float(batch), torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )  # [B, H, W, 3]
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer).convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(batch.device)
    return _finish(to_unit_float(out), images, unbatched)


@dataclass(frozen=True)
class Degradation:
    """A degradation, the critic op that corrects it, and whether it draws random numbers."""

    fn: Callable[..., torch.Tensor]
    corrective_op: str
    random: bool

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None, **params
    ) -> torch.Tensor:
        if self.random:
            return self.fn(images, generator=generator, **params)
        return self.fn(images, **params)


DEGRADATIONS: dict[str, Degradation] = {
    "gaussian_blur": Degradation(gaussian_blur, "remove blur", random=False),
    "motion_blur": Degradation(motion_blur, "remove blur", random=False),
    "haze": Degradation(haze, "remove haze", random=False),
    "gaussian_noise": Degradation(gaussian_noise, "remove noise", random=True),
    "poisson_noise": Degradation(poisson_noise, "remove noise", random=True),
    "low_light": Degradation(low_light, "enhance low light", random=True),
    "jpeg": Degradation(jpeg, "remove compression artifacts", random=False),
}
