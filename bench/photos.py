"""Realistic benchmark inputs: scikit-image's bundled colour photographs, resized and cropped to any shape."""

from __future__ import annotations

import torch

PHOTO_NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def _photos() -> list[torch.Tensor]:
    import skimage.data

    return [torch.from_numpy(getattr(skimage.data, n)()).permute(2, 0, 1).float() / 255.0 for n in PHOTO_NAMES]


def photo_batch(batch: int, height: int, width: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[batch, 3, height, width] photos in [0, 1] (or uint8), each a different photo, flip or crop."""
    photos = _photos()
    images = []
    for i in range(batch):
        photo = photos[i % len(photos)]
        if (i // len(photos)) % 2:
            photo = photo.flip(-1)
        crop = 0.6 + 0.4 * ((i * 7919) % 97) / 96  # deterministic crop fraction in [0.6, 1]
        h, w = int(photo.shape[1] * crop), int(photo.shape[2] * crop)
        photo = photo[:, :h, :w]
        resized = torch.nn.functional.interpolate(photo[None], size=(height, width), mode="bilinear")
        images.append(resized[0].clamp(0, 1))
    out = torch.stack(images).to(device)
    if dtype == torch.uint8:
        return (out * 255).round().to(torch.uint8)
    return out.to(dtype)
