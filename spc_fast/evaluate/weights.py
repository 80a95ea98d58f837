"""Where the metrics' network weights are, and keeping the libraries that load them off the network.

Every file lives in one weights folder: ``--weights DIR``, else ``$SPC_FAST_WEIGHTS``, else torchvision's cache
``$TORCH_HOME/hub/checkpoints`` (where torchvision, torch-fidelity and the LPIPS reward look by default, so weights
already cached there are found; LPIPS' AlexNet is also taken from ``$SPC_LPIPS_BACKBONE``, as the reward does). A
metric whose files are missing is an error naming each file and where it comes from; nothing is ever downloaded:
Hugging Face libraries run with their offline switches on, pyiqa is handed local paths, and torchvision backbones
are looked up in the weights folder.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from spc_fast.rewards.perceptual import ALEXNET_FILE, BACKBONE_ENV

WEIGHTS_ENV = "SPC_FAST_WEIGHTS"
_PYIQA = "pyiqa's weights, Hugging Face repository chaofengc/IQA-PyTorch-Weights, file {name}"
_TORCHVISION = "torchvision's ImageNet weights, https://download.pytorch.org/models/{name}"
_HF_FOLDER = (
    "the Hugging Face model {repo} as a folder (config, weights and processor files), e.g. "
    "`huggingface-cli download {repo} --local-dir WEIGHTS/{name}`"
)


@dataclass(frozen=True)
class WeightFile:
    """One file (or model folder) a metric reads, and where a user gets it."""

    name: str
    source: str
    folder: bool = False


def _torchvision(name: str) -> WeightFile:
    return WeightFile(name, _TORCHVISION.format(name=name))


def _pyiqa(name: str) -> WeightFile:
    return WeightFile(name, _PYIQA.format(name=name))


def _hugging_face(name: str, repo: str) -> WeightFile:
    return WeightFile(name, _HF_FOLDER.format(name=name, repo=repo), folder=True)


CLIP_FOLDER = "clip-vit-large-patch14"
DINO_FOLDER = "dino-vits16"
WEIGHT_FILES: dict[str, tuple[WeightFile, ...]] = {
    "lpips": (_torchvision(ALEXNET_FILE),),
    "dists": (_pyiqa("DISTS_weights-f5e65c96.pth"), _torchvision("vgg16-397923af.pth")),
    "musiq": (_pyiqa("musiq_koniq_ckpt-e95806b9.pth"),),
    "nima": (_pyiqa("NIMA_InceptionV2_ava-b0c77c00.pth"),),
    "clip": (_hugging_face(CLIP_FOLDER, "openai/clip-vit-large-patch14"),),
    "dino": (_hugging_face(DINO_FOLDER, "facebook/dino-vits16"),),
    "fid": (
        WeightFile(
            "weights-inception-2015-12-05-6726825d.pth",
            "torch-fidelity's Inception v3, https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
            "weights-inception-2015-12-05-6726825d.pth",
        ),
    ),
}


def weights_folder(given: str | os.PathLike | None = None) -> Path:
    """The weights folder: ``given``, else $SPC_FAST_WEIGHTS, else ``$TORCH_HOME/hub/checkpoints``."""
    if given is not None:
        return Path(given)
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    return Path(torch.hub.get_dir()) / "checkpoints"


def require(metric: str, folder: Path) -> dict[str, Path]:
    """The paths of ``metric``'s files in ``folder`` (by file name); FileNotFoundError naming every missing one,
    where it comes from, and how to point at another folder."""
    found, missing = {}, []
    for weight in WEIGHT_FILES.get(metric, ()):
        path = folder / weight.name
        if weight.name == ALEXNET_FILE and not path.is_file() and os.environ.get(BACKBONE_ENV):
            path = Path(os.environ[BACKBONE_ENV])  # where the LPIPS reward finds its backbone
        if (path.is_dir() and any(path.iterdir())) if weight.folder else path.is_file():
            found[weight.name] = path
        else:
            kind = "folder" if weight.folder else "file"
            missing.append(f"{kind} {path} ({weight.source})")
    if missing:
        raise FileNotFoundError(
            f"metric {metric!r} needs weights that are not there: {'; '.join(missing)}. spc-fast never downloads "
            f"weights: put them in {folder}, or pass --weights DIR (or set {WEIGHTS_ENV}) for another folder"
        )
    return found


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hugging Face libraries (transformers, huggingface_hub, timm) refuse the network while models load."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    before = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def torchvision_cache(folder: Path) -> Iterator[None]:
    """torchvision's pretrained-weight lookup (``$hub/checkpoints/<file>``) reads ``folder`` while models load:
    pyiqa builds its backbones with ``weights='IMAGENET1K_V1'``, which would otherwise download."""
    previous = torch.hub.get_dir()
    if Path(previous) / "checkpoints" == folder:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="spc-fast-hub-") as hub:
        os.symlink(folder.resolve(), Path(hub) / "checkpoints", target_is_directory=True)
        torch.hub.set_dir(hub)
        try:
            yield
        finally:
            torch.hub.set_dir(previous)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Library loaders that print to stdout ("Loading pretrained model ...") print to stderr instead, so the
    command's own output (the table) stays clean."""
    with contextlib.redirect_stdout(sys.stderr):
        yield
