"""Export of the artist DiT to deployable artifacts (import name ``spc_fast.export``): AOTInductor, ONNX and
TensorRT, each checked against eager and described by a manifest (``spc-fast export``). Loading one
(``load_engine``) needs torch and the format's runtime, not diffusers or the artist's model code."""

from spc_fast.export.ranges import ExportRanges
from spc_fast.export.runtime import Engine, EngineDenoiser, load_engine
from spc_fast.export.step import ArtistStep

__all__ = ["ArtistStep", "Engine", "EngineDenoiser", "ExportRanges", "load_engine"]
