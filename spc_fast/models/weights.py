"""Loading safetensors weights at real scale: build a model with its parameters on the meta device, then read each
tensor of the checkpoint once, straight into the model, in the requested dtype and on the requested device.

Peak host memory is about one copy of the weights: a tensor loaded on the CPU in its file's dtype is a view of the
file's (private, copy-on-write) memory map, so its pages are the model's weights; a tensor converted or moved to a GPU
is copied, and the file is reopened every ``CHUNK_BYTES`` so the pages read only for that copy are released.
Buffers (rotary ``inv_freq`` and the like) are computed by the modules themselves while they are built, as in
``from_pretrained``: only parameters go to the meta device.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import init_empty_weights
from safetensors import safe_open

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)

CHUNK_BYTES = 1 << 30


def build_empty(build: Callable[[], ModuleT]) -> ModuleT:
    """``build()`` with every parameter on the meta device (no memory, no random init); buffers are real."""
    with init_empty_weights(include_buffers=False):
        return build()


def weight_files(directory: str | Path, stem: str) -> list[Path]:
    """The safetensors files of ``directory/stem.safetensors`` or of its sharded form ``stem.safetensors.index.json``;
    raises FileNotFoundError naming what is missing."""
    directory = Path(directory)
    single = directory / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = directory / f"{stem}.safetensors.index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{directory} holds neither {single.name} nor its shards' index {index.name}")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [name for name in shards if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shards that are missing from {directory}: {missing}")
    return [directory / name for name in shards]


def _file_keys(files: Sequence[Path], rename: Callable[[str], str]) -> dict[str, tuple[Path, str, torch.Size]]:
    """Model key -> (file, key in the file, shape), read from the files' headers only."""
    found: dict[str, tuple[Path, str, torch.Size]] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            stored = handle.keys()  # a safe_open handle is not iterable
            for key in stored:
                name = rename(key)
                if name in found:
                    raise ValueError(f"{key} is stored twice: in {found[name][0]} and in {file}")
                found[name] = (file, key, torch.Size(handle.get_slice(key).get_shape()))
    return found


def _check_keys(module: torch.nn.Module, found: dict[str, tuple[Path, str, torch.Size]], source: str,
               hint: str) -> None:
    """Raise ValueError naming every missing key, unexpected key and shape mismatch between ``module``'s state
    dict and the checkpoint's keys ``found``."""
    expected = {name: tensor.shape for name, tensor in module.state_dict().items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(found[name][1] for name in set(found) - set(expected))
    wrong = sorted(
        f"{name}: {tuple(found[name][2])} in the file, {tuple(expected[name])} in the model"
        for name in set(found) & set(expected) if found[name][2] != expected[name]
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"{source} does not match the model: {len(missing)} missing keys {missing[:8]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:8]}, {len(wrong)} shape mismatches {wrong[:8]}; {hint}"
        )


def _stream(file: Path, keys: Sequence[str], dtype: torch.dtype, device: torch.device
            ) -> Iterator[dict[str, torch.Tensor]]:
    """Chunks {file key: tensor on device} of about CHUNK_BYTES each, every tensor read once."""
    queue = deque(keys)
    while queue:
        # get_tensor returns views of one memory map of the whole file; pages read only to be copied (another dtype,
        # another device) stay resident until the file is closed, hence one opening per chunk.
        with safe_open(str(file), framework="pt") as handle:
            chunk: dict[str, torch.Tensor] = {}
            read = 0
            while queue and read < CHUNK_BYTES:
                key = queue.popleft()
                tensor = handle.get_tensor(key)
                read += tensor.nbytes
                chunk[key] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else tensor.dtype)
            yield chunk


def load_weights(module: torch.nn.Module, files: Sequence[Path], *, dtype: torch.dtype,
                 device: torch.device | str = "cpu", rename: Callable[[str], str] | None = None,
                 hint: str = "check that the weights belong to this model's config") -> None:
    """Fill ``module`` (built by ``build_empty``) from safetensors ``files``: every key of its state dict must be
    in the files and nothing else (ValueError naming the keys otherwise). Floating tensors become ``dtype``; all
    land on ``device``, buffers computed at build time included. ``rename`` maps a file's key to the model's."""
    device = torch.device(device)
    found = _file_keys(files, rename or (lambda key: key))
    source = str(files[0]) if len(files) == 1 else f"the {len(files)} shards in {files[0].parent}"
    _check_keys(module, found, source, hint)
    model_key = {(file, key): name for name, (file, key, _) in found.items()}
    for file in files:
        keys = [key for (owner, key) in model_key if owner == file]
        for chunk in _stream(file, keys, dtype, device):
            state = {model_key[file, key]: tensor for key, tensor in chunk.items()}
            result = module.load_state_dict(state, strict=False, assign=True)
            if result.unexpected_keys:
                raise RuntimeError(f"load_state_dict refused {result.unexpected_keys[:8]} from {file}")
    module.to(device)
