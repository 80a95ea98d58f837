"""The neural models: real architecture configs (``qwen_vl``, ``qwen_image``), loading from local directories, and
ready-to-run ``ImageCritic``/``PhotoArtist`` instances (``factory``): ``load_critic``, ``load_artist``,
``tiny_critic``, ``tiny_artist``. Those four are exported lazily, so importing a config module stays light.
"""

import importlib

_LAZY = ("load_critic", "load_artist", "tiny_critic", "tiny_artist", "default_device", "default_dtype")

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("spc_fast.models.factory"), name)
