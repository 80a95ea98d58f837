"""The Photographic Artist: the Qwen-Image-Edit DiT, its VAE and the flow-matching sampler (``PhotoArtist``, with its
training entry points ``rollout`` and ``velocity``), the real-valued RoPE, the release's feed-forward activation
(``use_release_mlp``), the named LoRA adapters and the full-resolution transfer of an edit (``upsample_edit``)."""

from spc_fast.artist.lora import add_lora, merge_lora, set_adapter, unmerge_lora
from spc_fast.artist.mlp import SigmoidGELU, use_release_mlp
from spc_fast.artist.model import EditResult, PhotoArtist
from spc_fast.artist.rope import RealQwenRope, RealRopeJointAttnProcessor, apply_real_rope, use_real_rope
from spc_fast.artist.sampler import (
    Trajectory,
    denoise,
    dynamic_shift,
    output_size,
    pack_latents,
    predict_velocity,
    schedule,
    unpack_latents,
)
from spc_fast.artist.upsample import upsample_edit

__all__ = [
    "EditResult",
    "PhotoArtist",
    "RealQwenRope",
    "RealRopeJointAttnProcessor",
    "SigmoidGELU",
    "Trajectory",
    "add_lora",
    "apply_real_rope",
    "denoise",
    "dynamic_shift",
    "merge_lora",
    "output_size",
    "pack_latents",
    "predict_velocity",
    "schedule",
    "set_adapter",
    "unmerge_lora",
    "unpack_latents",
    "upsample_edit",
    "use_real_rope",
    "use_release_mlp",
]
