"""The perceptual reward r_perc = exp(-LPIPS(X_e, X_gt)) (eq. 13, SPEC.md §5) and where its network comes from.

LPIPS v0.1 with the AlexNet trunk, from the ``lpips`` package: its linear calibration layers ship inside the
package, the ImageNet AlexNet weights are read from a local file (torchvision's cache, $SPC_LPIPS_BACKBONE or an
explicit path) and never downloaded.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from spc_fast.images import check_batch, to_unit_float

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
BACKBONE_ENV = "SPC_LPIPS_BACKBONE"
# AlexNet's pooling stages need at least this many pixels per side.
LPIPS_MIN_SIDE = 31


def lpips_backbone_path(backbone_path: str | os.PathLike | None = None) -> Path:
    """Where the AlexNet backbone is looked up: ``backbone_path``, else $SPC_LPIPS_BACKBONE, else
    torchvision's cache ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth``."""
    if backbone_path is not None:
        return Path(backbone_path)
    if os.environ.get(BACKBONE_ENV):
        return Path(os.environ[BACKBONE_ENV])
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def _load_alexnet_features(net: torch.nn.Module, path: Path) -> None:
    """Copy torchvision's AlexNet ``features.{i}`` weights into lpips' slices (``slice{k}.{i}``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = {}
    for slice_name, block in net.named_children():
        for index, layer in block.named_children():
            for param_name, _ in layer.named_parameters(recurse=False):
                key = f"features.{index}.{param_name}"
                if key not in state:
                    raise ValueError(
                        f"{path} is not torchvision's AlexNet state dict (no {key}); use torchvision's {ALEXNET_FILE}"
                    )
                mapped[f"{slice_name}.{index}.{param_name}"] = state[key]
    net.load_state_dict(mapped, strict=True)


def load_lpips(backbone_path: str | os.PathLike | None = None, *, random_backbone: bool = False) -> torch.nn.Module:
    """LPIPS v0.1 with the AlexNet trunk, in eval mode and without gradients, on the CPU.

    The linear calibration layers ship inside the ``lpips`` package. The ImageNet AlexNet weights are read
    from ``lpips_backbone_path(backbone_path)`` and never downloaded: a missing file raises FileNotFoundError
    saying where to put it. ``random_backbone=True`` builds a randomly initialised trunk instead (tests and
    benchmarks only: its distances are not LPIPS).
    """
    if random_backbone and backbone_path is not None:
        raise ValueError("pass either backbone_path or random_backbone=True, not both")
    path = None
    if not random_backbone:
        path = lpips_backbone_path(backbone_path)
        if not path.is_file():
            default = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
            raise FileNotFoundError(
                f"LPIPS AlexNet backbone weights not found at {path}. spc-fast never downloads weights: copy "
                f"torchvision's ImageNet AlexNet file {ALEXNET_FILE} to {default} (torchvision's cache under "
                f"$TORCH_HOME), or set {BACKBONE_ENV}=/path/to/{ALEXNET_FILE}, or pass backbone_path"
            )
    import lpips  # imports torchvision: only when a model is asked for

    with warnings.catch_warnings():
        # lpips builds torchvision's AlexNet with the deprecated ``pretrained=False`` (random weights).
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_alexnet_features(model.net, path)
    return model.eval().requires_grad_(False)


def perceptual_reward(
    x_edit: torch.Tensor, x_gt: torch.Tensor, lpips_model: torch.nn.Module, *, validate: bool = True
) -> torch.Tensor:
    """r_perc = exp(-LPIPS(X_e, X_gt)) (eq. 13), images mapped to [-1, 1]; the model must be on their device.

    ``validate=False`` skips the float range checks (host syncs) for images checked once already; shapes and
    devices are always checked (that costs nothing).
    """
    edit, _ = check_batch(x_edit, check_values=validate)
    ref, _ = check_batch(x_gt, check_values=validate)
    if edit.shape != ref.shape:
        raise ValueError(
            f"edited images {tuple(edit.shape)} and references {tuple(ref.shape)} differ in shape; "
            "resize the edits to the references' size before comparing them"
        )
    if min(edit.shape[-2:]) < LPIPS_MIN_SIDE:
        raise ValueError(
            f"LPIPS (AlexNet) needs images of at least {LPIPS_MIN_SIDE} pixels per side, got "
            f"{tuple(edit.shape[-2:])}; upsample them first"
        )
    param = next(lpips_model.parameters())
    if param.device != edit.device:
        raise ValueError(
            f"lpips_model is on {param.device} but the images are on {edit.device}; "
            "move the model with .to(images.device)"
        )
    with torch.no_grad():
        distance = lpips_model(to_unit_float(edit, param.dtype) * 2 - 1, to_unit_float(ref, param.dtype) * 2 - 1)
    return torch.exp(-distance.reshape(-1).float())
