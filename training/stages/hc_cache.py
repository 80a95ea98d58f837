"""The critic's generated H_c on disk: stage II conditions the artist on the frozen critic's own answer, and generating
it (up to 1280 greedy decode steps of a 7B model per image) costs far more than the artist's training step, so each
image's answer and H_c are computed once and reused across epochs and runs.

An entry is one safetensors file ``ROOT/<fingerprint>/<key[:2]>/<key>.safetensors`` holding ``hidden`` [S, D] (the
real rows of H_c, in the critic's dtype) and, as metadata, the answer text (the targets are computed from its
suggestions), the key and the fingerprint. ``key`` = a hash of the image the critic is shown; ``fingerprint`` = a hash
of the critic's weights and of every setting that changes its answer (prompts, decoding, dtype). Files are written
atomically; an entry that cannot be read or does not match is reported once and generated again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from spc_fast.imagefiles.atomic import atomic_write
from spc_fast.notices import say_once

logger = logging.getLogger(__name__)

CACHE_DIR = ".hc-cache"  # inside the data folder: runs over the same data and critic share it
_DECODING_FIELDS = ("system_prompt", "instruction", "max_new_tokens", "temperature", "top_p", "bucket")


def image_key(image: np.ndarray) -> str:
    """A hex key of an H x W x 3 uint8 image: blake2b of its shape and bytes."""
    array = np.ascontiguousarray(image)
    digest = hashlib.blake2b(f"{array.shape}{array.dtype}".encode(), digest_size=16)
    digest.update(array.tobytes())
    return digest.hexdigest()


def _weights_digest(critic, weights: str | None) -> hashlib.blake2b:
    """Weights loaded from a directory are named by its files (path, size, modification time: hashing 15 GB would
    take longer than a step); weights built in memory (the tiny model) by their values."""
    digest = hashlib.blake2b(digest_size=16)
    root = Path(weights) if weights else None
    if root is not None and root.is_dir():
        files = [Path(folder) / name for folder, _, names in os.walk(root, followlinks=True) for name in names]
        for path in sorted(files):  # a linked base (a training run's vlm/) is followed to its files
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}\n".encode())
        return digest
    for name, tensor in sorted(critic.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest


def critic_fingerprint(critic) -> str:
    """A hex fingerprint of an ``ImageCritic``: its weights (``critic.config.weights``), dtype and answer settings."""
    config = critic.config
    digest = _weights_digest(critic, config.weights)
    settings = [str(getattr(config, name)) for name in _DECODING_FIELDS]
    digest.update("\x1f".join([*settings, str(critic.model.dtype), str(config.weights)]).encode())
    return digest.hexdigest()


@dataclass
class CachedHc:
    """One image's critic answer and its H_c rows [S, D]."""

    hidden: torch.Tensor
    text: str


class HcCache:
    """H_c entries of one critic (``fingerprint``) under ``root``; ``load``/``store`` per image key."""

    def __init__(self, root: str | os.PathLike, fingerprint: str) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0
        self.regenerated = 0

    def path(self, key: str) -> Path:
        return self.root / self.fingerprint / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> CachedHc | None:
        """The entry of ``key``, or None when there is none or it is unreadable or belongs to another key or critic
        (then it will be regenerated and overwritten)."""
        path = self.path(key)
        if not path.is_file():
            self.misses += 1
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                hidden = handle.get_tensor("hidden")
            if meta.get("key") != key or meta.get("fingerprint") != self.fingerprint or "text" not in meta:
                raise ValueError(f"metadata {sorted(meta)} names another image or critic")
            if hidden.dim() != 2 or hidden.shape[0] < 1:
                raise ValueError(f"hidden has shape {tuple(hidden.shape)}, expected [S >= 1, D]")
        except Exception as error:  # any unreadable file (truncated, foreign, corrupt) is regenerated
            self.regenerated += 1
            say_once(logger, f"H_c cache entry {path} is unusable ({error}); generating it again (reported once)")
            return None
        self.hits += 1
        return CachedHc(hidden, meta["text"])

    def store(self, key: str, hidden: torch.Tensor, text: str) -> None:
        """Write the entry of ``key`` atomically (a reader sees the old file or the new one, never a part)."""
        if hidden.dim() != 2:
            raise ValueError(f"store H_c rows [S, D] of one image, got shape {tuple(hidden.shape)}")
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = save(
            {"hidden": hidden.detach().cpu().contiguous()},
            metadata={"key": key, "fingerprint": self.fingerprint, "text": text},
        )
        atomic_write(path, lambda handle: handle.write(data), overwrite=True)
