"""The metrics ``spc-fast evaluate`` computes: name -> a library's implementation, batched on the device.

Images reach a scorer as float32 ``[B, 3, H, W]`` tensors on the device, RGB on the 0-255 scale (8-bit files
exactly; 16-bit and float files at full precision). A per-image scorer returns one value per image; a set scorer
(FID) accumulates batches and returns one value for the whole set.

``psnr``, ``ssim`` and ``deltae`` are scikit-image's definitions on 8-bit RGB, computed by libraries:

- ``psnr``: torchmetrics' ``peak_signal_noise_ratio(data_range=255)`` per image over all pixels and channels,
  which is ``skimage.metrics.peak_signal_noise_ratio(data_range=255)``.
- ``ssim``: torchmetrics' ``structural_similarity_index_measure`` with scikit-image's default window (7 x 7
  uniform, ``gaussian_kernel=False``), ``data_range=255``, its full SSIM map cropped by the 3-pixel border that
  scikit-image drops before averaging, and ``k2 = 0.03 * sqrt(48 / 49)``: scikit-image uses the sample
  (co)variances (``use_sample_covariance=True``, every (co)variance times N / (N - 1), N = 49), and scaling all
  three by a factor k in SSIM's contrast-structure term is the same as dividing C2 = (k2 L)^2 by k. Equal to
  ``structural_similarity(channel_axis=-1, data_range=255)`` to 1e-5 (tests/test_evaluate.py).
- ``deltae``: the mean over pixels of ``skimage.color.deltaE_ciede2000(rgb2lab(pred), rgb2lab(ref))``, run by
  scikit-image itself, per image in worker threads on the CPU: no library that is kept up (torchmetrics 1.9,
  kornia 0.9, pyiqa 0.1) has a CIEDE2000 for torch tensors, and this project does not write its own.

The networks: ``lpips`` (the ``lpips`` package, AlexNet, v0.1) here; ``dists``, ``musiq`` (KonIQ), ``nima`` (AVA,
Inception-ResNet-v2) from pyiqa, ``clip`` and ``dino`` (cosine similarity of the edit's embedding to the input's)
and ``fid`` (torchmetrics with torch-fidelity's Inception) in ``networks``; their weights in ``weights``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from spc_fast.evaluate import networks
from spc_fast.evaluate.weights import WEIGHT_FILES, require
from spc_fast.rewards.perceptual import LPIPS_MIN_SIDE

SSIM_WINDOW = 7
# scikit-image's sample covariance (N / (N - 1) on every (co)variance) folded into C2; see the module docstring
SSIM_K2 = 0.03 * math.sqrt((SSIM_WINDOW**2 - 1) / SSIM_WINDOW**2)


class ImageScorer(Protocol):
    def __call__(self, pred: torch.Tensor, other: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor: ...


class SetScorer(Protocol):
    def update(self, pred: torch.Tensor, ref: torch.Tensor) -> None: ...

    def compute(self) -> float: ...


@dataclass(frozen=True)
class Metric:
    """A metric: its name, the library its numbers come from, what it compares the prediction with (``"ref"``,
    ``"input"`` or ``""`` for none), its direction, whether it has a value per image (FID has one per set), and
    how to build its scorer on a device from a weights folder."""

    name: str
    library: str
    needs: str
    higher_is_better: bool
    per_image: bool
    build: Callable[[torch.device, Path], ImageScorer | SetScorer]
    min_side: int = 1


def _psnr(device: torch.device, folder: Path) -> ImageScorer:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def score(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return peak_signal_noise_ratio(pred, ref, data_range=255.0, reduction="none", dim=(1, 2, 3))

    return score


def _ssim(device: torch.device, folder: Path) -> ImageScorer:
    from torchmetrics.functional.image import structural_similarity_index_measure

    pad = (SSIM_WINDOW - 1) // 2

    def score(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        _, full = structural_similarity_index_measure(
            pred,
            ref,
            gaussian_kernel=False,
            kernel_size=SSIM_WINDOW,
            data_range=255.0,
            k2=SSIM_K2,
            reduction="none",
            return_full_image=True,
        )
        return full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))

    return score


def _ciede2000(pair: tuple[np.ndarray, np.ndarray]) -> float:
    from skimage.color import deltaE_ciede2000, rgb2lab

    pred, ref = pair
    return float(deltaE_ciede2000(rgb2lab(pred), rgb2lab(ref)).mean())


def _deltae(device: torch.device, folder: Path) -> ImageScorer:
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="spc-fast-deltae")

    def score(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        # scikit-image's rgb2lab takes floats in [0, 1]: the 0-255 values over 255, in float64 as it computes
        host_pred = (pred.double() / 255.0).permute(0, 2, 3, 1).cpu().numpy()
        host_ref = (ref.double() / 255.0).permute(0, 2, 3, 1).cpu().numpy()
        return torch.tensor(list(pool.map(_ciede2000, zip(host_pred, host_ref, strict=True))), dtype=torch.float64)

    return score


def lpips_scorer(model: torch.nn.Module) -> ImageScorer:
    """LPIPS distances of a loaded ``lpips.LPIPS`` model (on the images' device), images mapped to its [-1, 1]."""

    def score(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(pred / 127.5 - 1.0, ref / 127.5 - 1.0).reshape(-1)

    return score


def _lpips(device: torch.device, folder: Path) -> ImageScorer:
    from spc_fast.rewards import load_lpips

    (path,) = require("lpips", folder).values()
    return lpips_scorer(load_lpips(path).to(device))


METRICS: dict[str, Metric] = {
    "psnr": Metric("psnr", "torchmetrics peak_signal_noise_ratio (= scikit-image's)", "ref", True, True, _psnr),
    "ssim": Metric(
        "ssim",
        "torchmetrics SSIM, scikit-image's window (= scikit-image's)",
        "ref",
        True,
        True,
        _ssim,
        min_side=SSIM_WINDOW,
    ),
    "deltae": Metric("deltae", "scikit-image deltaE_ciede2000 over rgb2lab", "ref", False, True, _deltae),
    "lpips": Metric("lpips", "lpips (AlexNet, v0.1)", "ref", False, True, _lpips, min_side=LPIPS_MIN_SIDE),
    "dists": Metric("dists", "pyiqa DISTS", "ref", False, True, networks.dists),
    "musiq": Metric("musiq", "pyiqa MUSIQ (KonIQ-10k)", "", True, True, networks.musiq),
    "nima": Metric("nima", "pyiqa NIMA (AVA, Inception-ResNet-v2)", "", True, True, networks.nima),
    "clip": Metric(
        "clip", "CLIP ViT-L/14 (transformers) cosine similarity to the input", "input", True, True, networks.clip
    ),
    "dino": Metric(
        "dino", "DINO ViT-S/16 (transformers) cosine similarity to the input", "input", True, True, networks.dino
    ),
    "fid": Metric(
        "fid", "torchmetrics FrechetInceptionDistance (torch-fidelity Inception)", "ref", False, False, networks.fid
    ),
}
DEFAULT_METRICS = ("psnr", "ssim", "deltae")


def parse_metrics(text: str) -> list[Metric]:
    """``"psnr,ssim"`` -> the metrics, in order, each once; an unknown name is an error listing the known ones."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
            f"{', '.join(METRICS)} (comma-separated)"
        )
    return [METRICS[n] for n in dict.fromkeys(names)]


def needs_weights(metric: Metric) -> bool:
    return metric.name in WEIGHT_FILES


def build_scorers(metrics: list[Metric], device: torch.device, folder: Path) -> dict[str, ImageScorer | SetScorer]:
    """Every metric's scorer on ``device``; the weights of all of them are checked before any model loads, so a
    missing file is reported before minutes of loading."""
    for metric in metrics:
        require(metric.name, folder)
    scorers = {}
    for metric in metrics:
        try:
            scorers[metric.name] = metric.build(device, folder)
        except ImportError as error:  # an optional library (pyiqa, torch-fidelity) is not installed
            package = {"torch_fidelity": "torch-fidelity"}.get(error.name or "", error.name)
            fix = f"pip install {package}" if package else "install the package it names"
            raise ValueError(
                f"metric {metric.name!r} needs a Python package that is not installed ({error}); {fix}"
            ) from error
    return scorers
