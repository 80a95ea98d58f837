"""Rewards of the reinforcement stage (SPEC.md §5), batched torch; every reward is a (B,) float32 tensor.

- ``artist``: compliance r_comp (eq. 8-9), photometric control r_photo (eq. 10-12) and the artist total
  r_PA = r_comp (λ1 r_photo + λ2 r_perc) (eq. 7), with the suggestions as a dense tensor
  (``suggestion_tensor``) and a trusted, host-sync-free path (``validate=False``) for the training step.
- ``perceptual``: r_perc = exp(-LPIPS(X_e, X_gt)) (eq. 13) and the local lookup of its AlexNet backbone.
- ``critic``: format, rank (eq. 14), suggestion and restoration-constraint rewards.

Images are (B, 3, H, W) uint8 or float in [0, 1], passed in the order input X, edited X_e, reference X_gt.
Each image's attributes (``photometric.attributes``) are measured once per call; the ``*_from_attributes``
variants take them precomputed (attributes in kelvin, as ``attributes`` returns them). CCT is compared in
mired (1e6 / cct), so a warmer edit raises it. Results live on the device of the inputs.
"""

from spc_fast.rewards.artist import (
    DEFAULT_EPS,
    DEFAULT_TAU,
    LAMBDA_PERC,
    LAMBDA_PHOTO,
    SUGGESTION_DIRECTIONS,
    SuggestionBatch,
    artist_reward,
    compliance_from_attributes,
    compliance_reward,
    photometric_control_from_attributes,
    photometric_control_reward,
    suggestion_tensor,
    to_mired,
)
from spc_fast.rewards.critic import (
    corrective_op,
    format_reward,
    rank_reward,
    restoration_constraint_reward,
    suggestion_reward,
    well_formed,
)
from spc_fast.rewards.perceptual import (
    ALEXNET_FILE,
    BACKBONE_ENV,
    LPIPS_MIN_SIDE,
    load_lpips,
    lpips_backbone_path,
    perceptual_reward,
)

__all__ = [
    "ALEXNET_FILE",
    "BACKBONE_ENV",
    "DEFAULT_EPS",
    "DEFAULT_TAU",
    "LAMBDA_PERC",
    "LAMBDA_PHOTO",
    "LPIPS_MIN_SIDE",
    "SUGGESTION_DIRECTIONS",
    "SuggestionBatch",
    "artist_reward",
    "compliance_from_attributes",
    "compliance_reward",
    "corrective_op",
    "format_reward",
    "load_lpips",
    "lpips_backbone_path",
    "perceptual_reward",
    "photometric_control_from_attributes",
    "photometric_control_reward",
    "rank_reward",
    "restoration_constraint_reward",
    "suggestion_reward",
    "suggestion_tensor",
    "to_mired",
    "well_formed",
]
