"""What the analytic critic measures: tone statistics of a pixel sample and three degradation measures.

Tone measures (``tone_measures``) are statistics of the pixel distribution only, so they are computed on a
fixed low-discrepancy sample of ``SAMPLE_PIXELS`` pixels (``pixel_sample``): cheap enough to evaluate on
dozens of simulated edits per image. Besides the four photometric attributes they hold

- ``headroom_ev``: stops the image could be brightened before its brightest 0.5 % of pixels clip
  (``-log2`` of the 99.5th percentile of the largest linear channel): the "expose to the right" reading of
  the highlights, which an exposure change shifts one for one;
- ``highlight_clip``: fraction of pixels with a channel at 255 (>= 0.998);
- ``black_point`` / ``white_point``: 1st / 99th percentile of L*, ``span`` between them (auto levels), and
  ``black_lift`` = black point / mean L*: how far the darkest tones sit towards the mean - a contrast cut
  raises it, an exposure change hardly moves it;
- ``crushed_and_clipped``: the smaller of the fractions of black (every channel <= 2/255) and white (every
  channel >= 0.998) pixels: both ends cut at once is what a contrast stretch leaves, a colour cast does not;
- ``gamut_saturation`` / ``gamut_saturation_p90``: 99th / 90th percentile, over midtones (25 < L* < 75), of
  the chroma relative to the largest chroma sRGB reaches at that pixel's lightness and hue (1 = on the
  gamut boundary); a saturation change scales it, content matters less than for mean C*;
- ``colour_clip``: fraction of coloured midtone-or-brighter pixels (C* > 15, L* > 15) with a channel at 0:
  colours pushed out of the gamut;
- ``illuminant_shift``: the light's colour by the shades-of-grey estimate (Finlayson & Trezzi 2004), the
  Minkowski p = 6 mean of linear RGB, as a McCamy CCT in mired minus the neutral white's (positive = warmer).

Content measures (``CONTENT_MEASURES``) describe the photo, not its rendering: measured once on the input and
held fixed while edits are simulated. ``colour_variety`` is how far the colours stray from the photo's tone
curve (its mean colour at each lightness): the image is area-averaged to ``NEUTRAL_SIDE`` pixels on the long
side (colour noise and JPEG chroma ringing average out, colour regions stay), its pixels are sorted by L* and cut
into ``TONE_GROUPS`` groups of equal count, and the ``VARIETY_QUANTILE`` percentile of each pixel's (a*, b*)
distance from its group's mean is taken, in C* units. It is 0 for a grey image and for any image whose colour is a
function of its lightness: one toning (sepia, cyanotype), one uniform tint, one flat colour.

Degradation measures (``degradation_measures``) need the image's structure: ``sharpness`` is the variance of
the Laplacian of luma (sRGB values in [0, 1]) at a working size of ``WORK_SIDE`` pixels on the long side;
``noise_sigma`` the median absolute deviation of Immerkaer's noise-only high-pass at the native resolution
(a central crop of at most ``NOISE_CROP`` pixels a side), scaled to a gaussian sigma; ``haze`` the median of
He et al.'s dark channel (per-pixel channel minimum, then a 15 x 15 minimum filter) at the working size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spc_fast import colour, colour_torch, photometric
from spc_fast.images import check_batch, pixel_view, to_unit_float

SAMPLE_PIXELS = 16384
WORK_SIDE = 512
NOISE_CROP = 1024
DARK_CHANNEL_PATCH = 15

HIGHLIGHT_QUANTILE = 0.995
CLIP_HIGH = 0.998
NEAR_BLACK = 2.0 / 255.0
COLOURED_CHROMA = 15.0
MIDTONES = (25.0, 75.0)  # L* band where the sRGB gamut reaches high chroma at every hue
MINKOWSKI_P = 6.0
NEUTRAL_SIDE = 32
TONE_GROUPS = 32
VARIETY_QUANTILE = 0.9
NEUTRAL_MIRED = 1e6 / photometric.NEUTRAL_WHITE_CCT
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

TONE_MEASURES = (
    *photometric.ATTRIBUTE_NAMES,
    "headroom_ev",
    "highlight_clip",
    "black_point",
    "white_point",
    "span",
    "black_lift",
    "crushed_and_clipped",
    "gamut_saturation",
    "gamut_saturation_p90",
    "colour_clip",
    "illuminant_shift",
)
CONTENT_MEASURES = ("colour_variety",)
DEGRADATION_MEASURES = ("sharpness", "noise_sigma", "haze")


def pixel_sample(images: torch.Tensor, pixels: int = SAMPLE_PIXELS) -> torch.Tensor:
    """Float32 sample [B, 3, 1, pixels] of each image's pixels (a sample of the same size for every image, so
    images of any size batch together; a smaller image repeats its pixels).

    Pixels are picked by a golden-ratio sequence over the flattened image: spread evenly, never aligned with
    rows or columns, the same for every image of a size.
    """
    batch, _ = check_batch(images)
    flat = pixel_view(batch)  # [B, 3, P], a view for NCHW and channels_last
    if flat.shape[-1] != pixels:
        k = torch.arange(pixels, dtype=torch.float64, device=flat.device)
        index = ((k * _GOLDEN) % 1.0 * flat.shape[-1]).long()
        flat = flat.index_select(2, index)
    return to_unit_float(flat, torch.float32).unsqueeze(2)


def _mired(linear_rgb: torch.Tensor) -> torch.Tensor:
    # linear RGB [B, 3] (float64) -> McCamy CCT in mired
    xyz = linear_rgb @ torch.as_tensor(colour.RGB_TO_XYZ, device=linear_rgb.device).T
    return (1e6 / photometric.cct_from_xyz(xyz)).float()


def gamut_relative_chroma(lab: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """Chroma of Lab pixels [B, 3, N] relative to the sRGB gamut boundary at the same L* and hue, [B, N].

    rho in [0, 1] by bisection (to 2^-iterations): the pixel's chroma divided by rho must still map inside
    the linear-RGB cube. 1 on the boundary (and for pixels already outside), 0 for grey.
    """
    fy = (lab[:, 0] + 16.0) / 116.0  # [B, N]
    y = colour_torch.lab_f_inverse(fy)
    fx_step, fz_step = lab[:, 1] / 500.0, lab[:, 2] / 200.0
    to_rgb = colour_torch.constant(colour.XYZ_TO_RGB * colour.WHITE_D65[None, :], lab)  # [3, 3]
    low, high = torch.zeros_like(fy), torch.ones_like(fy)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        scale = 1.0 / middle.clamp_min(1e-6)
        x = colour_torch.lab_f_inverse(fy + fx_step * scale)
        z = colour_torch.lab_f_inverse(fy - fz_step * scale)
        linear = torch.einsum("ij,bjn->bin", to_rgb, torch.stack([x, y, z], 1))
        inside = ((linear >= -1e-4) & (linear <= 1.0 + 1e-4)).all(1)
        high = torch.where(inside, middle, high)
        low = torch.where(inside, low, middle)
    return high.masked_fill(torch.hypot(lab[:, 1], lab[:, 2]) < 1e-3, 0.0)


def _masked_quantile(values: torch.Tensor, mask: torch.Tensor, q: float) -> torch.Tensor:
    # per-row quantile of values [B, N] over mask [B, N]; rows with an empty mask give 0
    filled = torch.where(mask, values, torch.full_like(values, float("inf")))
    ordered = filled.sort(dim=1).values
    count = mask.sum(1)
    index = ((count - 1).clamp_min(0).double() * q).round().long()
    picked = ordered.gather(1, index[:, None])[:, 0]
    return torch.where(count > 0, picked, torch.zeros_like(picked))


def tone_measures(images: torch.Tensor, pixels: int = SAMPLE_PIXELS) -> dict[str, torch.Tensor]:
    """The tone measures named in TONE_MEASURES (module docstring), each a float32 tensor [B].

    images: (B, 3, H, W) or (3, H, W) sRGB, uint8 or float in [0, 1]. Measured on ``pixel_sample``; a
    [B, 3, 1, pixels] sample is measured as it is.
    """
    sample = pixel_sample(images, pixels)  # [B, 3, 1, N]
    srgb = sample[:, :, 0]  # [B, 3, N]
    linear = colour_torch.srgb_to_linear(srgb)
    lab = colour_torch.linear_to_lab(linear)
    lightness = lab[:, 0]
    chroma = torch.hypot(lab[:, 1], lab[:, 2])
    top, bottom = srgb.amax(1), srgb.amin(1)  # [B, N]
    clipped = top >= CLIP_HIGH
    near_black = top <= NEAR_BLACK
    out = dict(zip(photometric.ATTRIBUTE_NAMES, photometric.attributes(sample).unbind(1), strict=True))

    brightest = torch.quantile(linear.amax(1), HIGHLIGHT_QUANTILE, dim=1)
    out["headroom_ev"] = -torch.log2(brightest.clamp(2.0**-10, 1.0))
    out["highlight_clip"] = clipped.float().mean(1)
    out["black_point"] = torch.quantile(lightness, 0.01, dim=1)
    out["white_point"] = torch.quantile(lightness, 0.99, dim=1)
    out["span"] = out["white_point"] - out["black_point"]
    white = bottom >= CLIP_HIGH
    out["crushed_and_clipped"] = torch.minimum(white.float().mean(1), near_black.float().mean(1))

    out["black_lift"] = out["black_point"] / out["exposure"].clamp_min(1.0)

    midtones = (lightness > MIDTONES[0]) & (lightness < MIDTONES[1])
    relative = gamut_relative_chroma(lab)  # [B, N]
    out["gamut_saturation"] = _masked_quantile(relative, midtones, 0.99)
    out["gamut_saturation_p90"] = _masked_quantile(relative, midtones, 0.90)
    primary = (bottom <= 1.0 - CLIP_HIGH) & (chroma > COLOURED_CHROMA) & (lightness > 15.0)
    out["colour_clip"] = primary.float().mean(1)

    minkowski = linear.double().pow(MINKOWSKI_P).mean(2).pow(1.0 / MINKOWSKI_P)  # [B, 3]
    out["illuminant_shift"] = _mired(minkowski) - NEUTRAL_MIRED
    return {name: out[name].float() for name in TONE_MEASURES}


def _working_size(x: torch.Tensor, side: int = WORK_SIDE) -> torch.Tensor:
    # [B, C, H, W] area-downscaled so that the long side is at most ``side``
    height, width = x.shape[-2:]
    scale = side / max(height, width)
    if scale >= 1.0:
        return x
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(x, size=size, mode="area")


# ---- content -----------------------------------------------------------------------------------------------


def colour_variety(images: torch.Tensor) -> torch.Tensor:
    """Chroma off the image's tone curve, 90th percentile, [B] float32 (module docstring; 0 = no colour variety)."""
    batch, _ = check_batch(images)
    small = _working_size(to_unit_float(batch, torch.float32), NEUTRAL_SIDE).flatten(2)  # [B, 3, N]
    lab = colour_torch.linear_to_lab(colour_torch.srgb_to_linear(small))
    order = lab[:, 0].argsort(1)
    ab = lab[:, 1:].gather(2, order[:, None].expand(-1, 2, -1))  # [B, 2, N] by increasing L*
    n = ab.shape[-1]
    group = torch.arange(n, device=ab.device) * TONE_GROUPS // n  # [N]: equal-count groups of lightness
    sums = ab.new_zeros(ab.shape[0], 2, TONE_GROUPS).index_add_(2, group, ab)
    tone = sums / torch.bincount(group, minlength=TONE_GROUPS).clamp_min(1)  # [B, 2, G]: the tone curve
    off_curve = (ab - tone.index_select(2, group)).norm(dim=1)  # [B, N]
    return torch.quantile(off_curve, VARIETY_QUANTILE, dim=1)


def content_measures(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The content measures named in CONTENT_MEASURES (``colour_variety``), each float32 [B]."""
    return {"colour_variety": colour_variety(images)}


# ---- degradations ------------------------------------------------------------------------------------------

_LUMA = (0.2126, 0.7152, 0.0722)


def _luma(images: torch.Tensor) -> torch.Tensor:
    # validated images [B, 3, H, W] -> luma of the sRGB values [B, 1, H, W], float32
    x = to_unit_float(images, torch.float32)
    weights = torch.tensor(_LUMA, dtype=x.dtype, device=x.device)
    return (x * weights[:, None, None]).sum(1, keepdim=True)


def sharpness(images: torch.Tensor) -> torch.Tensor:
    """Variance of the Laplacian of luma at the working size, [B] (low = blurred)."""
    batch, _ = check_batch(images)
    luma = _working_size(_luma(batch))
    kernel = luma.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    response = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), kernel)
    return response.flatten(1).var(1, correction=0)


def noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Noise standard deviation of luma in [0, 1] units, [B]: MAD of Immerkaer's high-pass / (0.6745 * 6)."""
    batch, _ = check_batch(images)
    height, width = batch.shape[-2:]
    top, left = max(0, (height - NOISE_CROP) // 2), max(0, (width - NOISE_CROP) // 2)
    crop = batch[:, :, top : top + NOISE_CROP, left : left + NOISE_CROP]
    luma = _luma(crop)
    kernel = luma.new_tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])[None, None]
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    response = F.conv2d(padded, kernel).flatten(1).abs()
    return response.median(1).values / (0.6745 * 6.0)


def haze(images: torch.Tensor) -> torch.Tensor:
    """Median of the dark channel at the working size, [B] (clear scenes near 0, haze lifts it)."""
    batch, _ = check_batch(images)
    darkest = _working_size(to_unit_float(batch, torch.float32)).amin(1, keepdim=True)
    radius = DARK_CHANNEL_PATCH // 2
    padded = F.pad(darkest, (radius, radius, radius, radius), mode="replicate")
    dark = -F.max_pool2d(-padded, DARK_CHANNEL_PATCH, stride=1)
    return dark.flatten(1).median(1).values


def degradation_measures(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sharpness``, ``noise_sigma`` and ``haze`` (DEGRADATION_MEASURES), each float32 [B]."""
    return {"sharpness": sharpness(images), "noise_sigma": noise_sigma(images), "haze": haze(images)}
