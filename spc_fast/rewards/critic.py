"""Critic rewards (SPEC.md §5): format, rank (eq. 14), suggestion and restoration-constraint rewards.

Each is a (B,) float32 tensor, one value per critic answer. The suggestion reward executes the critic's own
tone/colour suggestions with the rule executor (``spc_fast.executor`` + ``retouch.apply``) and scores the result
against the reference like the artist's photometric control.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from spc_fast import retouch
from spc_fast.critic.format import parse, parse_suggestions
from spc_fast.critic.vocabulary import CriticOutput
from spc_fast.degrade import DEGRADATIONS
from spc_fast.executor import retouch_parameters
from spc_fast.images import check_batch
from spc_fast.rewards.artist import (
    DEFAULT_EPS,
    DEFAULT_TAU,
    SuggestionBatch,
    measure,
    photometric_control_from_attributes,
)


def well_formed(output: CriticOutput) -> bool:
    """All three sections present, closed, unique and in order, a score in [0, 100] and at least one
    suggestion or the explicit "no edit needed" item.

    Suggestion-level problems ("edits: …" errors) do not count: they are about the content, not the format.
    """
    structural = any(e.startswith(("tags:", "score:")) for e in output.errors)
    return not structural and output.score is not None and (len(output.suggestions) > 0 or output.no_edit)


def format_reward(texts: Sequence[str | CriticOutput], device: torch.device | str | None = None) -> torch.Tensor:
    """1 per critic answer (raw text or an already parsed ``CriticOutput``) that is ``well_formed``,
    else 0."""
    outputs = [t if isinstance(t, CriticOutput) else parse(t) for t in texts]
    return torch.tensor([float(well_formed(o)) for o in outputs], dtype=torch.float32, device=device)


def _scores(scores, device) -> torch.Tensor:
    if isinstance(scores, torch.Tensor):
        return scores.reshape(-1).float()
    return torch.tensor([math.nan if s is None else float(s) for s in scores], dtype=torch.float32, device=device)


def rank_reward(score_x, score_edit, device: torch.device | str | None = None) -> torch.Tensor:
    """Eq. 14: 1 where the critic scores the edit above the input, S(X) < S(X_e), else 0.

    Scores are (B,) tensors or sequences of floats; a missing score (None or NaN) gives 0.
    """
    if device is None:
        device = next((s.device for s in (score_x, score_edit) if isinstance(s, torch.Tensor)), None)
    before, after = _scores(score_x, device), _scores(score_edit, device)
    if before.shape != after.shape:
        raise ValueError(f"got {before.shape[0]} input scores and {after.shape[0]} edit scores; pass one per image")
    return (before.to(after.device) < after).float()


def _executor_parameters(suggestions: SuggestionBatch, device: torch.device) -> dict[str, float | torch.Tensor]:
    # retouch.apply's keyword parameters executing each image's suggestions: a number where every image shares
    # the value (so a step neutral for the whole batch is skipped), else a (B,) float64 tensor on ``device``
    rows = [retouch_parameters(image_suggestions)[0] for image_suggestions in suggestions]
    params: dict[str, float | torch.Tensor] = {}
    for name in rows[0]:
        values = [row[name] for row in rows]
        shared = all(v == values[0] for v in values)
        params[name] = values[0] if shared else torch.tensor(values, dtype=torch.float64, device=device)
    return params


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
    a_x, a_gt = measure(x, x_gt)  # checks both batches' values, once
    batch, _ = check_batch(x, check_values=False)
    if len(suggestions) != batch.shape[0]:
        raise ValueError(
            f"got {len(suggestions)} suggestion lists for {batch.shape[0]} images; pass one list per image "
            "(an empty list when the critic suggested nothing)"
        )
    # the executor's parameters are valid by construction: retouch trusts them and the checked images
    x_ref = retouch.apply(batch, **_executor_parameters(suggestions, batch.device), validate=False)
    a_ref = a_x if x_ref is batch else measure(x_ref, validate=False)[0]
    return photometric_control_from_attributes(a_x, a_ref, a_gt, tau, eps)


def corrective_op(degradation: str) -> str:
    """The critic op (``critic.vocabulary`` constant) that undoes a degradation named in
    ``degrade.DEGRADATIONS``."""
    if degradation not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {degradation!r}; known: {', '.join(sorted(DEGRADATIONS))}")
    phrase = DEGRADATIONS[degradation].corrective_op
    parsed, errors = parse_suggestions(phrase)
    if errors or len(parsed) != 1:
        raise ValueError(f"corrective op {phrase!r} of {degradation!r} is not one critic suggestion: {errors}")
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
