"""The manifest written beside every exported artifact: what was exported, from which weights, over which shape
ranges, how it compared with eager, and with which library versions. The runtime reads it to load and to check
inputs, so it is plain JSON."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

MANIFEST = "manifest.json"

# max relative error (max |a - b| / max |b|) allowed against eager in the same dtype; LPIPS on real weights is separate
PARITY_THRESHOLDS = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 3e-2, "fp8": 1e-1}
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp8": "bfloat16"}  # fp8: TensorRT quantises

_LIBRARIES = ("torch", "diffusers", "spc-fast", "onnx", "onnxscript", "onnxruntime", "torch_tensorrt", "tensorrt")
_MODULES = {"spc-fast": "spc_fast", "torch_tensorrt": "torch_tensorrt", "tensorrt": "tensorrt"}


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries that took part (those imported in this process)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        if _MODULES.get(name, name) in sys.modules:
            try:
                versions[name] = metadata.version(name.replace("_", "-"))
            except metadata.PackageNotFoundError:
                versions[name] = getattr(sys.modules[_MODULES.get(name, name)], "__version__", "unknown")
    return versions


def files_sha256(paths: list[Path]) -> str:
    """One sha256 over the files' names (relative to their common root) and bytes, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(state: dict) -> str:
    """One sha256 over a state_dict's names and tensor bytes (the tiny weights exist only in memory)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(tensor.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(weights: str, release: str | None, state: dict) -> str:
    """The hash of the exported weights: their safetensors files for a directory, the state_dict for ``tiny``."""
    if weights == "tiny":
        return state_dict_sha256(state)
    roots = [Path(weights)] + ([Path(release)] if release and Path(release) != Path(weights) else [])
    files = [path for root in roots for path in root.rglob("*.safetensors")]
    if not files:
        raise ValueError(f"no .safetensors files under {', '.join(map(str, roots))} to hash")
    return files_sha256(files)


def write_manifest(directory: Path, entries: dict) -> Path:
    """``directory/manifest.json`` with ``entries`` plus ``versions`` and ``created``."""
    manifest = {
        **entries,
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an export directory, with a clear error when the directory is not one."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the directory `spc-fast export --out` wrote")
    return json.loads(path.read_text())
