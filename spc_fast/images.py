"""Validation and normalisation of image arrays and tensors, shared by every public entry point.

One place decides what an acceptable image is (SPEC.md §1): uint8 / 255, uint16 / 65535, floats taken as is and
required to be finite and inside [0, 1]. Errors name the problem and the fix. It also holds the release's working
sizes (SPEC.md §6: the output size, and the edit image the critic sees and the VAE encodes) and their PIL-bicubic
resizes, which the critic and the artist share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image

from spc_fast.config import RELEASE_PIXELS

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
TENSOR_DTYPES = (torch.uint8, *FLOAT_DTYPES)


def numpy_to_unit(image: np.ndarray) -> np.ndarray:
    """H x W x 3 sRGB array (uint8, uint16 or float in [0, 1]) -> float64 array in [0, 1]."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(
            f"expected an H x W x 3 RGB array, got shape {image.shape}; "
            "load files with spc_fast.imagefiles.load_image, which converts grayscale/RGBA/palette images to RGB"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape}); pass an image with at least one pixel")
    if image.dtype == np.uint8:
        return image.astype(np.float64) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float64) / 65535.0
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"unsupported dtype {image.dtype}; use uint8, uint16 or float in [0, 1]")
    out = image.astype(np.float64)
    _check_float_range(bool(np.isfinite(out).all()), float(out.min()), float(out.max()))
    return out


def _check_float_range(finite: bool, lo: float, hi: float) -> None:
    if not finite:
        raise ValueError("image contains NaN or inf; clean the input (e.g. torch.nan_to_num) before measuring it")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float image values must lie in [0, 1], found [{lo:.6g}, {hi:.6g}]; "
            "divide 8-bit data by 255 (or pass it as uint8), or clamp deliberately before calling"
        )


def check_batch(images: torch.Tensor, *, check_values: bool = True) -> tuple[torch.Tensor, bool]:
    """Validate an image tensor and return it as (B, 3, H, W) plus whether the input had no batch axis.

    Float range checks cost one reduction (and a host sync on CUDA); they are done here, once, before any kernel.
    ``check_values=False`` keeps only the shape and dtype checks, for tensors whose values a caller checked once.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"expected a torch.Tensor, got {type(images).__name__}; use torch.from_numpy or imagefiles.load_tensor"
        )
    unbatched = images.dim() == 3
    if unbatched:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected (B, 3, H, W) or (3, H, W) RGB images, got shape {tuple(images.shape)}; "
            "channel-last arrays need .permute(0, 3, 1, 2), grayscale needs .expand(-1, 3, -1, -1)"
        )
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"image batch is empty (shape {tuple(images.shape)}); pass at least one pixel per image")
    if images.dtype not in TENSOR_DTYPES:
        raise ValueError(f"unsupported dtype {images.dtype}; use uint8 or float16/bfloat16/float32 in [0, 1]")
    if check_values and images.dtype != torch.uint8:
        lo, hi = torch.aminmax(images)
        finite = bool(torch.isfinite(lo) & torch.isfinite(hi))
        _check_float_range(finite, float(lo), float(hi))
    return images, unbatched


def to_unit_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 -> /255, floats cast; no validation (call check_batch first)."""
    if images.dtype == torch.uint8:
        return images.to(dtype) / 255.0
    return images.to(dtype)


def from_unit_float(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float in [0, 1] -> ``dtype`` (uint8 rounds to nearest)."""
    if dtype == torch.uint8:
        return (images * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return images.to(dtype)


def is_channels_last(images: torch.Tensor) -> bool:
    return images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()


def pixel_view(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, P]: a view for NCHW and channels_last (strided), a copy for other layouts."""
    if is_channels_last(images):
        return images.permute(0, 2, 3, 1).flatten(1, 2).transpose(1, 2)
    return images.flatten(2)


def as_image_list(images: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """A (B, 3, H, W) batch or a sequence of (3, H, W) / (1, 3, H, W) images (any sizes) as validated (3, H, W)
    tensors."""
    if isinstance(images, torch.Tensor):
        return list(check_batch(images)[0].unbind(0))
    out = []
    for image in images:
        batch, unbatched = check_batch(image)
        if batch.shape[0] != 1:
            raise ValueError(
                f"an image in the list is a batch of {batch.shape[0]}; pass (3, H, W) images, or one (B, 3, H, W) "
                "tensor"
            )
        out.append(image if unbatched else batch[0])
    if not out:
        raise ValueError("no images given; pass at least one")
    return out


def same_size_groups(images: Sequence[torch.Tensor], indices: Iterable[int] | None = None) -> list[list[int]]:
    """The given indices (default: all) grouped by (shape, dtype, device): each group stacks into one batch."""
    groups: dict[tuple, list[int]] = {}
    for i in range(len(images)) if indices is None else indices:
        groups.setdefault((tuple(images[i].shape), images[i].dtype, images[i].device), []).append(i)
    return list(groups.values())


# The release's working sizes (SPEC.md §6): every resize is PIL's bicubic `resize`.
OUTPUT_MULTIPLE = 16  # VAE 8x and the DiT's 2x2 patches
EDIT_MULTIPLE = 32  # DiffSynth's edit-image auto-resize


def output_size(height: int, width: int, target_pixels: int = RELEASE_PIXELS) -> tuple[int, int]:
    """(h, w) the release generates for a ``height`` x ``width`` photo: ``h = int(sqrt(P / r))``, ``w = int(h r)``
    with ``r = width / height``, each side rounded to the nearest multiple of 16 (at least 16)."""
    ratio = width / height
    h = int(math.sqrt(target_pixels / ratio))
    w = int(h * ratio)
    return _nearest_multiple(h, OUTPUT_MULTIPLE), _nearest_multiple(w, OUTPUT_MULTIPLE)


def auto_resize_size(height: int, width: int, target_pixels: int = RELEASE_PIXELS) -> tuple[int, int]:
    """(h, w) DiffSynth's edit auto-resize gives an image of ``height`` x ``width``: ``w = sqrt(P r)``,
    ``h = w / r``, each rounded to the nearest multiple of 32 (at least 32: where DiffSynth gives 0 it fails)."""
    ratio = width / height
    w = math.sqrt(target_pixels * ratio)
    h = w / ratio
    return _nearest_multiple(h, EDIT_MULTIPLE), _nearest_multiple(w, EDIT_MULTIPLE)


def edit_image_size(height: int, width: int, target_pixels: int = RELEASE_PIXELS) -> tuple[int, int]:
    """(h, w) of the edit image of a ``height`` x ``width`` photo (what the critic sees and the VAE encodes): the
    photo at ``output_size``, auto-resized again."""
    return auto_resize_size(*output_size(height, width, target_pixels), target_pixels)


def _nearest_multiple(n: float, multiple: int) -> int:
    return max(multiple, round(n / multiple) * multiple)


def resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An H x W x 3 image resized to ``size`` = (h, w) by PIL's bicubic ``resize``: uint8 through PIL's RGB path (the
    release's arithmetic, bit for bit), float32 through PIL's float ("F") path per channel (the same filter without
    8-bit rounding)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    if image.dtype == np.uint8:
        return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))
    planes = [Image.fromarray(np.ascontiguousarray(image[..., c], np.float32)) for c in range(image.shape[-1])]
    channels = [np.asarray(plane.resize((w, h), Image.Resampling.BICUBIC)) for plane in planes]
    return np.stack(channels, axis=-1)


def edit_image(image: np.ndarray, target_pixels: int = RELEASE_PIXELS) -> np.ndarray:
    """The release's edit image of an H x W x 3 photo: resized to ``output_size``, then to ``edit_image_size``."""
    height, width = image.shape[:2]
    working = resize_bicubic(image, output_size(height, width, target_pixels))
    return resize_bicubic(working, auto_resize_size(*working.shape[:2], target_pixels))
