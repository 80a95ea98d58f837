"""Running an exported artist step: ``load_engine(DIR)`` reads the manifest, loads the artifact by its format and
checks every call's shapes against the exported ranges (neither AOTInductor nor ONNX Runtime does).

Nothing here imports diffusers or the artist's model code: a deployment needs torch, the artifact's runtime
(onnxruntime or torch_tensorrt for those formats) and this module.
"""

from __future__ import annotations

from pathlib import Path

import torch

from spc_fast.export.manifest import read_manifest
from spc_fast.export.ranges import ExportRanges

FORMATS = ("aoti", "onnx", "tensorrt")


class Engine:
    """An exported step: ``engine(noise, source, t, h_c, h_c_mask)`` -> velocity [B, Hn, Wn, 64], shapes checked."""

    def __init__(self, directory: str | Path, device: str | None = None) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        self.format = self.manifest["format"]
        self.ranges = ExportRanges.from_manifest(self.manifest["ranges"])
        self.device = device or self.manifest["device"]
        self.dtype = getattr(torch, self.manifest["dtype"])
        path = self.directory / self.manifest["artifact"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} (named in {self.directory}/manifest.json) is missing")
        self._run = _loader(self.format)(path, self.device)

    def __call__(
        self, noise: torch.Tensor, source: torch.Tensor, t: torch.Tensor, h_c: torch.Tensor, h_c_mask: torch.Tensor
    ) -> torch.Tensor:
        self.ranges.check(tuple(noise.shape), tuple(source.shape), tuple(h_c.shape))
        # compiled artifacts assume the traced (contiguous) strides: slices and expanded timesteps are not
        return self._run(*(x.contiguous() for x in (noise, source, t, h_c, h_c_mask)))

    def __repr__(self) -> str:
        return f"Engine({self.format}, {self.directory}, {self.ranges.describe()})"


def _loader(format_name: str):
    if format_name == "aoti":
        from spc_fast.export.aoti import load_aoti

        return load_aoti
    if format_name == "onnx":
        from spc_fast.export.onnx_format import load_onnx

        return load_onnx
    if format_name == "tensorrt":
        from spc_fast.export.tensorrt import load_tensorrt

        return load_tensorrt
    raise ValueError(f"unknown export format {format_name!r} in the manifest; expected one of {', '.join(FORMATS)}")


def load_engine(directory: str | Path, device: str | None = None) -> Engine:
    """The exported step in ``directory`` (written by ``spc-fast export``), on the manifest's device by default."""
    return Engine(directory, device)


class EngineDenoiser:
    """An exported step behind the DiT's call signature, so the sampler runs it in place of the transformer
    (``artist.denoiser = EngineDenoiser(load_engine(DIR))``): the token sequences are laid back on their grids from
    ``img_shapes``, a missing H_c mask becomes all ones, and the velocity comes back as the noisy tokens."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(
        self,
        *,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_mask: torch.Tensor | None,
        img_shapes: list,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        if return_dict:
            raise ValueError("an exported step returns a tuple; call it with return_dict=False")
        grids = {tuple(tuple(shape) for shape in sample) for sample in img_shapes}
        if len(grids) != 1 or len(next(iter(grids))) != 2:
            raise ValueError(f"an exported step takes one (noise, source) grid pair shared by the batch, got {grids}")
        (_, noise_h, noise_w), (_, source_h, source_w) = next(iter(grids))
        batch, engine = hidden_states.shape[0], self.engine
        tokens = hidden_states.to(engine.device, engine.dtype)
        noise = tokens[:, : noise_h * noise_w].reshape(batch, noise_h, noise_w, -1)
        source = tokens[:, noise_h * noise_w :].reshape(batch, source_h, source_w, -1)
        h_c = encoder_hidden_states.to(engine.device, engine.dtype)
        mask = encoder_hidden_states_mask
        mask = torch.ones(h_c.shape[:2], dtype=torch.bool, device=h_c.device) if mask is None else mask.bool()
        velocity = engine(noise, source, timestep.to(engine.device, engine.dtype), h_c, mask.to(engine.device))
        return (velocity.reshape(batch, noise_h * noise_w, -1).to(hidden_states.device, hidden_states.dtype),)
