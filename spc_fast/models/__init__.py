"""The neural models: real architecture configs (``qwen_vl``, ``qwen_image``), loading from local directories
(``weights``: built on the meta device, each tensor read once) and ready-to-run ``ImageCritic``/``PhotoArtist``
instances (``factory``): ``build_critic``/``build_artist`` from a config, ``load_critic``, ``load_artist``,
``tiny_critic``, ``tiny_artist``.
"""

from spc_fast.models.factory import (
    build_artist,
    build_critic,
    default_device,
    default_dtype,
    load_artist,
    load_critic,
    tiny_artist,
    tiny_critic,
)

__all__ = [
    "build_artist",
    "build_critic",
    "default_device",
    "default_dtype",
    "load_artist",
    "load_critic",
    "tiny_artist",
    "tiny_critic",
]
