"""The metrics that run a network: built from local weights only (``weights``), the numbers the libraries' own.

- ``dists`` (full reference), ``musiq`` (KonIQ-10k checkpoint, 0-100) and ``nima`` (AVA, Inception-ResNet-v2,
  1-10): pyiqa's ``create_metric`` with ``pretrained_model_path`` set to the local checkpoint. DISTS' VGG16 trunk
  is torchvision's ImageNet file, read from the weights folder. NIMA's checkpoint holds every tensor of the model
  (pyiqa loads it strictly), so its timm backbone is built without timm's ImageNet weights, which pyiqa would
  otherwise download first only to overwrite them.
- ``clip``: cosine similarity of the CLIP ViT-L/14 image embeddings of the edit and the input (CLIP-I), the model
  and its preprocessing from transformers. torchmetrics' ``clip_score`` would be the library call, but torchmetrics
  1.9 fails on transformers 5 (``get_image_features`` now returns a model output, not a tensor).
- ``dino``: cosine similarity of the DINO ViT-S/16 [CLS] embeddings of the edit and the input (the DINO score of
  DreamBooth), the model and its preprocessing from transformers. No metrics library packages it.
- ``fid``: torchmetrics' ``FrechetInceptionDistance`` (2048 features) with torch-fidelity's Inception weights from
  the weights folder: predictions against references as two sets; one value for the whole set.

Images arrive as float32 [B, 3, H, W] on the 0-255 scale (``metrics``); the inputs of ``clip``/``dino`` as a list
(their sizes may differ from the predictions').
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch

from spc_fast.evaluate.weights import CLIP_FOLDER, DINO_FOLDER, offline, quiet, require, torchvision_cache


def _uint8(image: torch.Tensor) -> torch.Tensor:
    return image.round().clamp(0, 255).to(torch.uint8)


def _pyiqa_metric(name: str, device: torch.device, checkpoint: Path) -> torch.nn.Module:
    with offline(), quiet():
        import pyiqa

        return pyiqa.create_metric(name, device=device, pretrained_model_path=str(checkpoint))


def _scored_by(model: torch.nn.Module, reference: bool):
    def score(pred: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():  # pyiqa takes RGB in [0, 1]
            values = model(pred / 255.0, ref / 255.0) if reference else model(pred / 255.0)
        return values.reshape(-1)

    return score


def dists(device: torch.device, folder: Path):
    files = require("dists", folder)
    with torchvision_cache(folder):
        model = _pyiqa_metric("dists", device, files["DISTS_weights-f5e65c96.pth"])
    return _scored_by(model, reference=True)


def musiq(device: torch.device, folder: Path):
    (checkpoint,) = require("musiq", folder).values()
    return _scored_by(_pyiqa_metric("musiq", device, checkpoint), reference=False)


@contextlib.contextmanager
def _timm_without_imagenet_weights() -> Iterator[None]:
    import timm

    create = timm.create_model

    def without_download(name: str, *args, **kwargs):
        return create(name, *args, **{**kwargs, "pretrained": False})

    with mock.patch.object(timm, "create_model", without_download):
        yield


def nima(device: torch.device, folder: Path):
    (checkpoint,) = require("nima", folder).values()
    with _timm_without_imagenet_weights():
        model = _pyiqa_metric("nima", device, checkpoint)
    return _scored_by(model, reference=False)


def _embedder(model: torch.nn.Module, processor, device: torch.device, features):
    def embed(images: list[torch.Tensor]) -> torch.Tensor:
        pixels = processor(images=[_uint8(x).cpu() for x in images], return_tensors="pt")["pixel_values"]
        return features(model, pixels.to(device))

    def score(pred: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.cosine_similarity(embed(list(pred)), embed(inputs), dim=-1)

    return score


def _clip_image_embedding(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    out = model.get_image_features(pixel_values=pixels)
    return getattr(out, "pooler_output", out)  # transformers 5 returns the projected embedding as pooler_output


def clip(device: torch.device, folder: Path):
    path = require("clip", folder)[CLIP_FOLDER]
    with offline(), quiet():
        from transformers import CLIPImageProcessor, CLIPModel

        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
    return _embedder(model, processor, device, _clip_image_embedding)


def dino(device: torch.device, folder: Path):
    path = require("dino", folder)[DINO_FOLDER]
    with offline(), quiet():
        from transformers import AutoImageProcessor, AutoModel

        model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return _embedder(model, processor, device, lambda m, pixels: m(pixel_values=pixels).last_hidden_state[:, 0])


class _FrechetDistance:
    """torchmetrics' FID over the whole set: references are the real images, predictions the generated ones."""

    def __init__(self, device: torch.device, checkpoint: Path) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        with quiet():
            self.metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(checkpoint))
        self.metric = self.metric.to(device)
        self.count = 0

    def update(self, pred: torch.Tensor, ref: torch.Tensor) -> None:
        self.metric.update(_uint8(ref), real=True)
        self.metric.update(_uint8(pred), real=False)
        self.count += pred.shape[0]

    def compute(self) -> float:
        if self.count < 2:
            raise ValueError(f"FID needs at least 2 image pairs, got {self.count}; evaluate a larger set")
        return float(self.metric.compute())


def fid(device: torch.device, folder: Path) -> _FrechetDistance:
    (checkpoint,) = require("fid", folder).values()
    return _FrechetDistance(device, checkpoint)
