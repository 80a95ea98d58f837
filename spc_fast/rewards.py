"""Rewards of the reinforcement stage (SPEC.md §5), batched torch; every reward is a (B,) float32 tensor.

Artist: compliance r_comp (eq. 8-9), photometric control r_photo (eq. 10-12), perceptual r_perc (eq. 13)
and their combination r_PA = r_comp (λ1 r_photo + λ2 r_perc) (eq. 7). Critic: format, rank (eq. 14),
suggestion and restoration-constraint rewards.

Images are (B, 3, H, W) uint8 or float in [0, 1], passed in the order input X, edited X_e, reference X_gt.
Each image's attributes (``photometric.attributes``) are measured once per call; the ``*_from_attributes``
variants take them precomputed (attributes in kelvin, as ``attributes`` returns them). CCT is compared in
mired (1e6 / cct), so a warmer edit raises it. Results live on the device of the inputs.

Deviation from the paper: eq. 11's third case is printed as the distance |Δe - Δgt| / (|Δgt| + ε), which would
reward missing the target. We implement the reward its text describes (SPEC.md §5):
max(0, 1 - |Δe - Δgt| / (|Δgt| + ε)), 1 for an exact match, 0 at or beyond twice the target change.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from spc_fast.critic.format import (
    TONE_OPS,
    CriticOutput,
    Suggestion,
    parse,
    parse_suggestions,
    retouch_parameters,
)
from spc_fast.images import check_batch, to_unit_float
from spc_fast.photometric import NUM_ATTRIBUTES, attributes

# Tolerances τ_k for (exposure L*, contrast L*, saturation C*, cct mired) and ε of eq. 11.
DEFAULT_TAU = (1.0, 0.5, 1.0, 5.0)
DEFAULT_EPS = 1e-6
LAMBDA_PHOTO, LAMBDA_PERC = 1.0, 0.5

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
BACKBONE_ENV = "SPC_LPIPS_BACKBONE"
# AlexNet's pooling stages need at least this many pixels per side.
LPIPS_MIN_SIDE = 31

SuggestionBatch = Sequence[Sequence[Suggestion]]


# ---- attributes --------------------------------------------------------------------------------------------


def to_mired(attrs: torch.Tensor) -> torch.Tensor:
    """Attributes [..., 4] with the CCT column converted from kelvin to mired."""
    return torch.cat([attrs[..., :3], 1e6 / attrs[..., 3:]], dim=-1)


def _measure(*images: torch.Tensor) -> list[torch.Tensor]:
    """Attributes [B, 4] of each image batch; the batches must hold the same number of images."""
    measured = [attributes(x).reshape(-1, NUM_ATTRIBUTES) for x in images]
    sizes = {a.shape[0] for a in measured}
    if len(sizes) > 1:
        raise ValueError(
            f"image batches hold different numbers of images {[a.shape[0] for a in measured]}; "
            "pass input, edited and reference batches of the same size"
        )
    return measured


def _tau(tau: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    tau = torch.as_tensor(tau, dtype=like.dtype, device=like.device)
    if tau.shape != (NUM_ATTRIBUTES,):
        raise ValueError(
            f"tau needs one tolerance per attribute (exposure, contrast, saturation, cct), got shape "
            f"{tuple(tau.shape)}; the default is {DEFAULT_TAU}"
        )
    return tau


def _working_dtype(*attrs: torch.Tensor) -> torch.dtype:
    return torch.promote_types(torch.float32, attrs[0].dtype)


def _check_suggestions(suggestions: SuggestionBatch, batch: int) -> None:
    if len(suggestions) != batch:
        raise ValueError(
            f"got {len(suggestions)} suggestion lists for {batch} images; pass one list per image "
            "(an empty list when the critic suggested nothing)"
        )


# ---- artist rewards ----------------------------------------------------------------------------------------


def compliance_from_attributes(
    a_x: torch.Tensor, a_edit: torch.Tensor, suggestions: SuggestionBatch, tau=DEFAULT_TAU
) -> torch.Tensor:
    """r_comp (eq. 8-9) from attributes [B, 4] (CCT in kelvin) of the inputs and the edits.

    Each tone/colour suggestion on attribute k with direction d complies when d (a_k(X_e) - a_k(X)) > τ_k
    (temperature in mired: warmer = mired up); r_comp is the mean over an image's tone/colour suggestions,
    and 1 when it has none.
    """
    _check_suggestions(suggestions, a_x.shape[0])
    dtype = _working_dtype(a_x)
    delta = to_mired(a_edit.to(dtype)) - to_mired(a_x.to(dtype))  # [B, 4]
    rows, cols, signs = [], [], []
    for b, image_suggestions in enumerate(suggestions):
        for s in image_suggestions:
            if s.op in TONE_OPS:
                rows.append(b)
                cols.append(TONE_OPS.index(s.op))
                signs.append(float(s.direction))
    ones = torch.ones(a_x.shape[0], dtype=torch.float32, device=a_x.device)
    if not rows:
        return ones
    device = a_x.device
    rows_t = torch.tensor(rows, device=device)
    cols_t = torch.tensor(cols, device=device)
    signs_t = torch.tensor(signs, dtype=dtype, device=device)
    complied = (signs_t * delta[rows_t, cols_t] > _tau(tau, delta)[cols_t]).float()  # [N]
    hits = torch.zeros_like(ones).index_add_(0, rows_t, complied)
    counts = torch.zeros_like(ones).index_add_(0, rows_t, torch.ones_like(complied))
    return torch.where(counts > 0, hits / counts.clamp_min(1.0), ones)


def compliance_reward(
    x: torch.Tensor, x_edit: torch.Tensor, suggestions: SuggestionBatch, tau=DEFAULT_TAU
) -> torch.Tensor:
    """r_comp (eq. 8-9) of edits ``x_edit`` of ``x`` given one suggestion list per image."""
    a_x, a_edit = _measure(x, x_edit)
    return compliance_from_attributes(a_x, a_edit, suggestions, tau)


def photometric_control_from_attributes(
    a_x: torch.Tensor, a_edit: torch.Tensor, a_gt: torch.Tensor, tau=DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """r_photo (eq. 10-12) from attributes [B, 4] (CCT in kelvin) of input, edit and reference.

    With Δe = a(X_e) - a(X), Δgt = a(X_gt) - a(X) per attribute (CCT in mired): r_k = 1 if |Δgt| < τ and
    |Δe| <= τ; 0 if |Δgt| < τ and |Δe| > τ; else max(0, 1 - |Δe - Δgt| / (|Δgt| + ε)) — the paper prints this
    last case as a distance, we use the reward its text intends (module docstring). r_photo = mean_k r_k.
    """
    dtype = _working_dtype(a_x)
    base = to_mired(a_x.to(dtype))
    delta_edit = to_mired(a_edit.to(dtype)) - base  # [B, 4]
    delta_gt = to_mired(a_gt.to(dtype)) - base
    tau = _tau(tau, base)
    keep = (delta_edit.abs() <= tau).to(dtype)
    follow = (1.0 - (delta_edit - delta_gt).abs() / (delta_gt.abs() + eps)).clamp_min(0.0)
    per_attribute = torch.where(delta_gt.abs() < tau, keep, follow)
    return per_attribute.mean(dim=-1).float()


def photometric_control_reward(
    x: torch.Tensor, x_edit: torch.Tensor, x_gt: torch.Tensor, tau=DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """r_photo (eq. 10-12): how closely the edit's attribute changes follow the reference's."""
    a_x, a_edit, a_gt = _measure(x, x_edit, x_gt)
    return photometric_control_from_attributes(a_x, a_edit, a_gt, tau, eps)


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
                        f"{path} is not torchvision's AlexNet state dict (no {key}); "
                        f"use torchvision's {ALEXNET_FILE}"
                    )
                mapped[f"{slice_name}.{index}.{param_name}"] = state[key]
    net.load_state_dict(mapped, strict=True)


def load_lpips(
    backbone_path: str | os.PathLike | None = None, *, random_backbone: bool = False
) -> torch.nn.Module:
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
    import lpips

    with warnings.catch_warnings():
        # lpips builds torchvision's AlexNet with the deprecated ``pretrained=False`` (random weights).
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_alexnet_features(model.net, path)
    return model.eval().requires_grad_(False)


def perceptual_reward(x_edit: torch.Tensor, x_gt: torch.Tensor, lpips_model: torch.nn.Module) -> torch.Tensor:
    """r_perc = exp(-LPIPS(X_e, X_gt)) (eq. 13), images mapped to [-1, 1]; the model must be on their
    device."""
    edit, _ = check_batch(x_edit)
    ref, _ = check_batch(x_gt)
    return _lpips_similarity(edit, ref, lpips_model)


def _lpips_similarity(edit: torch.Tensor, ref: torch.Tensor, lpips_model: torch.nn.Module) -> torch.Tensor:
    # exp(-LPIPS) of batches whose values were already validated (check_batch reads every pixel once more)
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
        distance = lpips_model(
            to_unit_float(edit, param.dtype) * 2 - 1, to_unit_float(ref, param.dtype) * 2 - 1
        )
    return torch.exp(-distance.reshape(-1).float())


def artist_reward(
    x: torch.Tensor,
    x_edit: torch.Tensor,
    x_gt: torch.Tensor,
    suggestions: SuggestionBatch,
    lpips_model: torch.nn.Module,
    lambda_photo: float = LAMBDA_PHOTO,
    lambda_perc: float = LAMBDA_PERC,
    tau=DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """r_PA = r_comp (λ1 r_photo + λ2 r_perc) (eq. 7), each image's attributes measured once."""
    a_x, a_edit, a_gt = _measure(x, x_edit, x_gt)
    r_comp = compliance_from_attributes(a_x, a_edit, suggestions, tau)
    r_photo = photometric_control_from_attributes(a_x, a_edit, a_gt, tau, eps)
    # _measure validated every batch already: skip perceptual_reward's second pass over the pixels
    batched = [x if x.dim() == 4 else x.unsqueeze(0) for x in (x_edit, x_gt)]
    r_perc = _lpips_similarity(*batched, lpips_model)
    return r_comp * (lambda_photo * r_photo + lambda_perc * r_perc)


# ---- critic rewards ----------------------------------------------------------------------------------------


def well_formed(output: CriticOutput) -> bool:
    """All three sections present, closed, unique and in order, a score in [0, 100] and at least one
    suggestion.

    Suggestion-level problems ("edits: …" errors) do not count: they are about the content, not the format.
    """
    structural = any(e.startswith(("tags:", "score:")) for e in output.errors)
    return not structural and output.score is not None and len(output.suggestions) > 0


def format_reward(
    texts: Sequence[str | CriticOutput], device: torch.device | str | None = None
) -> torch.Tensor:
    """1 per critic answer (raw text or an already parsed ``CriticOutput``) that is ``well_formed``,
    else 0."""
    outputs = [t if isinstance(t, CriticOutput) else parse(t) for t in texts]
    return torch.tensor([float(well_formed(o)) for o in outputs], dtype=torch.float32, device=device)


def _scores(scores, device) -> torch.Tensor:
    if isinstance(scores, torch.Tensor):
        return scores.reshape(-1).float()
    return torch.tensor(
        [math.nan if s is None else float(s) for s in scores], dtype=torch.float32, device=device
    )


def rank_reward(score_x, score_edit, device: torch.device | str | None = None) -> torch.Tensor:
    """Eq. 14: 1 where the critic scores the edit above the input, S(X) < S(X_e), else 0.

    Scores are (B,) tensors or sequences of floats; a missing score (None or NaN) gives 0.
    """
    if device is None:
        device = next((s.device for s in (score_x, score_edit) if isinstance(s, torch.Tensor)), None)
    before, after = _scores(score_x, device), _scores(score_edit, device)
    if before.shape != after.shape:
        raise ValueError(
            f"got {before.shape[0]} input scores and {after.shape[0]} edit scores; pass one per image"
        )
    return (before.to(after.device) < after).float()


def suggestion_reward(
    x: torch.Tensor,
    x_gt: torch.Tensor,
    suggestions: SuggestionBatch,
    tau=DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
) -> torch.Tensor:
    """r_photo(X, X_ref, X_gt) with X_ref the rule-based execution (``retouch.apply``) of each image's own
    tone/colour suggestions. Conflicting suggestions leave their attribute neutral and the temperature shift is
    clamped to the range the operator supports (``retouch_parameters``)."""
    from spc_fast import retouch

    batch, _ = check_batch(x)
    _check_suggestions(suggestions, batch.shape[0])
    columns: dict[str, list[float]] = {}
    for image_suggestions in suggestions:
        params, _ = retouch_parameters(image_suggestions)
        for name, value in params.items():
            columns.setdefault(name, []).append(value)
    per_image = {name: torch.tensor(values, dtype=torch.float64) for name, values in columns.items()}
    x_ref = retouch.apply(x, **per_image)
    a_x, a_gt = _measure(x, x_gt)
    a_ref = a_x if x_ref is x else _measure(x_ref)[0]
    return photometric_control_from_attributes(a_x, a_ref, a_gt, tau, eps)


def corrective_op(degradation: str) -> str:
    """The critic op (``format`` constant) that undoes a degradation named in ``degrade.DEGRADATIONS``."""
    from spc_fast.degrade import DEGRADATIONS

    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; known: {', '.join(sorted(DEGRADATIONS))}")
    phrase = DEGRADATIONS[degradation].corrective_op
    parsed, errors = parse_suggestions(phrase)
    if errors or len(parsed) != 1:
        raise ValueError(
            f"corrective op {phrase!r} of {degradation!r} is not one critic suggestion: {errors}"
        )
    return parsed[0].op


def restoration_constraint_reward(
    suggestions: SuggestionBatch,
    degradations: Sequence[str | Sequence[str] | None],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """1 where the critic suggested the corrective op of every known degradation of the image, else 0.

    ``degradations`` holds per image a name from ``degrade.DEGRADATIONS``, several names, or None (no known
    degradation: nothing is required, reward 1).
    """
    if len(degradations) != len(suggestions):
        raise ValueError(
            f"got {len(suggestions)} suggestion lists and {len(degradations)} degradation entries; "
            "pass one of each per image"
        )
    values = []
    for image_suggestions, known in zip(suggestions, degradations, strict=True):
        names = [] if known is None else [known] if isinstance(known, str) else list(known)
        suggested = {s.op for s in image_suggestions}
        values.append(float(all(corrective_op(name) in suggested for name in names)))
    return torch.tensor(values, dtype=torch.float32, device=device)
