"""Artist rewards (SPEC.md §5): compliance r_comp (eq. 8-9), photometric control r_photo (eq. 10-12) and
r_PA = r_comp (λ1 r_photo + λ2 r_perc) (eq. 7).

Validation happens once, at the boundary: the public functions check the images (``validate=True``, the
default) and turn suggestion lists into the dense tensor of ``suggestion_tensor``. With ``validate=False`` they
trust their tensors: no host sync, no tensor built from Python values, no branch on a tensor's value, so r_PA
compiles with ``torch.compile(fullgraph=True)`` and the same compiled graph serves every suggestion set.

Deviation from the paper: eq. 11's third case is printed as the distance |Δe - Δgt| / (|Δgt| + ε), which would
reward missing the target. We implement the reward its text describes (SPEC.md §5):
max(0, 1 - |Δe - Δgt| / (|Δgt| + ε)), 1 for an exact match, 0 at or beyond twice the target change.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from spc_fast.critic.vocabulary import TONE_OPS, Suggestion
from spc_fast.photometric import NUM_ATTRIBUTES, attributes
from spc_fast.rewards.perceptual import perceptual_reward

# Tolerances τ_k for (exposure L*, contrast L*, saturation C*, cct mired) and ε of eq. 11.
DEFAULT_TAU = (1.0, 0.5, 1.0, 5.0)
DEFAULT_EPS = 1e-6
LAMBDA_PHOTO, LAMBDA_PERC = 1.0, 0.5

# The last axis of a suggestion tensor: how many suggestions ask to increase, and to decrease, attribute k.
SUGGESTION_DIRECTIONS = (1, -1)

SuggestionBatch = Sequence[Sequence[Suggestion]]


def to_mired(attrs: torch.Tensor) -> torch.Tensor:
    """Attributes [..., 4] with the CCT column converted from kelvin to mired."""
    return torch.cat([attrs[..., :3], 1e6 / attrs[..., 3:]], dim=-1)


def suggestion_tensor(suggestions: SuggestionBatch, device: torch.device | str | None = None) -> torch.Tensor:
    """Suggestion lists (one per image) as counts [B, K, 2] (float32): ``[b, k, 0]`` how many of image b's
    suggestions increase attribute k (``TONE_OPS[k]``), ``[b, k, 1]`` how many decrease it.

    Restoration and other non-tone suggestions are left out (compliance does not check them); a repeated
    suggestion counts each time. Build it once per batch of critic answers: every reward call can reuse it.
    """
    counts = [[[0, 0] for _ in TONE_OPS] for _ in suggestions]
    for row, image_suggestions in zip(counts, suggestions, strict=True):
        for s in image_suggestions:
            if s.op not in TONE_OPS:
                continue
            if s.direction not in SUGGESTION_DIRECTIONS:
                raise ValueError(f"suggestion {s} has direction {s.direction!r}; a tone/colour suggestion is +1 or -1")
            row[TONE_OPS.index(s.op)][SUGGESTION_DIRECTIONS.index(s.direction)] += 1
    return torch.tensor(counts, dtype=torch.float32, device=device).reshape(len(counts), len(TONE_OPS), 2)


def _suggestion_counts(
    suggestions: SuggestionBatch | torch.Tensor, like: torch.Tensor, *, validate: bool = True
) -> torch.Tensor:
    """``suggestions`` for the images whose attributes are ``like`` [B, 4], as a [B, K, 2] tensor on their device.

    Lists are converted (``suggestion_tensor``); a tensor is checked for its shape only. ``validate=False``
    accepts only a tensor (converting lists builds a tensor from Python values: not for the trusted path).
    """
    batch = like.shape[0]
    if not isinstance(suggestions, torch.Tensor):
        if not validate:
            raise TypeError(
                "validate=False needs the suggestions as a tensor; convert the lists once with "
                "rewards.suggestion_tensor(suggestions, device) and pass that"
            )
        if len(suggestions) != batch:
            raise ValueError(
                f"got {len(suggestions)} suggestion lists for {batch} images; pass one list per image "
                "(an empty list when the critic suggested nothing)"
            )
        return suggestion_tensor(suggestions, like.device)
    expected = (batch, len(TONE_OPS), len(SUGGESTION_DIRECTIONS))
    if tuple(suggestions.shape) != expected:
        raise ValueError(
            f"suggestion tensor has shape {tuple(suggestions.shape)}, expected {expected} (images, tone ops, "
            "directions); build it with rewards.suggestion_tensor"
        )
    return suggestions.to(like.device)


def measure(*images: torch.Tensor, validate: bool = True) -> list[torch.Tensor]:
    """Attributes [B, 4] (CCT in kelvin) of each image batch; the batches must hold the same number of images.

    ``validate=False`` skips the float range checks (host syncs) for images checked once already.
    """
    measured = [attributes(x, validate=validate).reshape(-1, NUM_ATTRIBUTES) for x in images]
    sizes = {a.shape[0] for a in measured}
    if len(sizes) > 1:
        raise ValueError(
            f"image batches hold different numbers of images {[a.shape[0] for a in measured]}; "
            "pass input, edited and reference batches of the same size"
        )
    return measured


@functools.cache
def _tau_constant(tau: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # made once per device: no host-to-device copy per reward call
    return torch.tensor(tau, dtype=dtype, device=device)


def _tau(tau: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if not isinstance(tau, torch.Tensor):
        tau = tuple(float(t) for t in tau)
    shape = tuple(tau.shape) if isinstance(tau, torch.Tensor) else (len(tau),)
    if shape != (NUM_ATTRIBUTES,):
        raise ValueError(
            f"tau needs one tolerance per attribute (exposure, contrast, saturation, cct), got shape {shape}; "
            f"the default is {DEFAULT_TAU}"
        )
    if isinstance(tau, torch.Tensor):
        return tau.to(dtype=like.dtype, device=like.device)
    return _tau_constant(tau, like.dtype, like.device)


def _deltas(a_x: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    # changes [B, 4] of each attribute set from a_x, CCT in mired, in float32 or wider
    dtype = torch.promote_types(torch.float32, a_x.dtype)
    base = to_mired(a_x.to(dtype))
    return [to_mired(a.to(dtype)) - base for a in others]


def compliance_from_attributes(
    a_x: torch.Tensor, a_edit: torch.Tensor, suggestions: SuggestionBatch | torch.Tensor, tau=DEFAULT_TAU
) -> torch.Tensor:
    """r_comp (eq. 8-9) from attributes [B, 4] (CCT in kelvin) of the inputs and the edits.

    Each tone/colour suggestion on attribute k with direction d complies when d (a_k(X_e) - a_k(X)) > τ_k
    (temperature in mired: warmer = mired up); r_comp is the mean over an image's tone/colour suggestions,
    and 1 when it has none. ``suggestions``: one list per image, or their ``suggestion_tensor``.
    """
    counts = _suggestion_counts(suggestions, a_x).float()  # [B, K, 2]
    (delta,) = _deltas(a_x, a_edit)  # [B, K]
    moved = torch.stack([delta, -delta], dim=-1)  # change in each suggested direction, [B, K, 2]
    complied = (moved > _tau(tau, delta)[:, None]).float()
    hits, total = (counts * complied).sum((1, 2)), counts.sum((1, 2))  # [B]
    return torch.where(total > 0, hits / total.clamp_min(1.0), 1.0)


def compliance_reward(
    x: torch.Tensor, x_edit: torch.Tensor, suggestions: SuggestionBatch | torch.Tensor, tau=DEFAULT_TAU
) -> torch.Tensor:
    """r_comp (eq. 8-9) of edits ``x_edit`` of ``x`` given one suggestion list per image."""
    a_x, a_edit = measure(x, x_edit)
    return compliance_from_attributes(a_x, a_edit, suggestions, tau)


def photometric_control_from_attributes(
    a_x: torch.Tensor, a_edit: torch.Tensor, a_gt: torch.Tensor, tau=DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """r_photo (eq. 10-12) from attributes [B, 4] (CCT in kelvin) of input, edit and reference.

    With Δe = a(X_e) - a(X), Δgt = a(X_gt) - a(X) per attribute (CCT in mired): r_k = 1 if |Δgt| < τ and
    |Δe| <= τ; 0 if |Δgt| < τ and |Δe| > τ; else max(0, 1 - |Δe - Δgt| / (|Δgt| + ε)) — the paper prints this
    last case as a distance, we use the reward its text intends (module docstring). r_photo = mean_k r_k.
    """
    delta_edit, delta_gt = _deltas(a_x, a_edit, a_gt)  # [B, 4] each
    tau = _tau(tau, delta_edit)
    keep = (delta_edit.abs() <= tau).to(delta_edit.dtype)
    follow = (1.0 - (delta_edit - delta_gt).abs() / (delta_gt.abs() + eps)).clamp_min(0.0)
    per_attribute = torch.where(delta_gt.abs() < tau, keep, follow)
    return per_attribute.mean(dim=-1).float()


def photometric_control_reward(
    x: torch.Tensor, x_edit: torch.Tensor, x_gt: torch.Tensor, tau=DEFAULT_TAU, eps: float = DEFAULT_EPS
) -> torch.Tensor:
    """r_photo (eq. 10-12): how closely the edit's attribute changes follow the reference's."""
    a_x, a_edit, a_gt = measure(x, x_edit, x_gt)
    return photometric_control_from_attributes(a_x, a_edit, a_gt, tau, eps)


def artist_reward(
    x: torch.Tensor,
    x_edit: torch.Tensor,
    x_gt: torch.Tensor,
    suggestions: SuggestionBatch | torch.Tensor,
    lpips_model: torch.nn.Module,
    lambda_photo: float = LAMBDA_PHOTO,
    lambda_perc: float = LAMBDA_PERC,
    tau=DEFAULT_TAU,
    eps: float = DEFAULT_EPS,
    *,
    validate: bool = True,
) -> torch.Tensor:
    """r_PA = r_comp (λ1 r_photo + λ2 r_perc) (eq. 7), each image's attributes measured once.

    ``validate=True`` checks every image's values here, once (a host sync for float images on an accelerator),
    and takes suggestions as lists or as their ``suggestion_tensor``. ``validate=False`` is the trusted path of a
    training step: images already checked, suggestions as a ``suggestion_tensor`` (build it once per batch of
    critic answers); it never syncs with the host and compiles with ``torch.compile(fullgraph=True)``.
    """
    a_x, a_edit, a_gt = measure(x, x_edit, x_gt, validate=validate)
    counts = _suggestion_counts(suggestions, a_x, validate=validate)
    r_comp = compliance_from_attributes(a_x, a_edit, counts, tau)
    r_photo = photometric_control_from_attributes(a_x, a_edit, a_gt, tau, eps)
    r_perc = perceptual_reward(x_edit, x_gt, lpips_model, validate=False)  # measure checked the values
    return r_comp * (lambda_photo * r_photo + lambda_perc * r_perc)
