"""Enhancing files: expand the inputs (files and folders), plan the outputs, run the pipeline file by file.

A failing file (unreadable, truncated, an output that would replace its input, a folder that cannot be
written) is recorded and the rest still run; ``BatchResult.failures`` lists them. Every image is written
atomically by ``imagefiles.save_image`` (temporary file, then rename), so a failure never leaves a partial file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spc_fast import imagefiles
from spc_fast.pipeline import Pipeline


@dataclass
class Failure:
    input: str
    error: str


@dataclass
class BatchResult:
    """Per written image: input, output, size and the pipeline's record; per failed input: the error."""

    written: list[dict[str, object]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "images": self.written,
            "failures": [{"input": f.input, "error": f.error} for f in self.failures],
        }


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Failure]]:
    """Image files named by ``inputs``: files as given, folders expanded to their image files (by extension,
    not recursive, sorted). A folder without images is a failure; a missing path is left to the loader."""
    files, failures = [], []
    for entry in map(Path, inputs):
        if entry.is_dir():
            found = sorted(p for p in entry.iterdir() if p.is_file() and p.suffix.lower() in imagefiles.FORMATS)
            if not found:
                extensions = ", ".join(sorted(imagefiles.FORMATS))
                failures.append(Failure(str(entry), f"{entry}: folder contains no images ({extensions})"))
            files.extend(found)
        else:
            files.append(entry)
    return files, failures


def plan_outputs(inputs: Sequence[str | os.PathLike], files: Sequence[Path], output: str | os.PathLike) -> list[Path]:
    """Output path of each file: ``output`` itself for a single file input when ``output`` has an extension and
    is not a folder, else ``output / file name`` (the folder is created)."""
    output = Path(output)
    single = len(inputs) == 1 and len(files) == 1 and not Path(inputs[0]).is_dir()
    if single and output.suffix and not output.is_dir():
        return [output]
    if output.exists() and not output.is_dir():
        raise ValueError(
            f"{output}: is a file, but several images (or a folder) need an output folder; name a folder"
        )
    if output.suffix.lower() in imagefiles.FORMATS and not output.exists():
        raise ValueError(
            f"{output}: looks like a file name, but {len(files)} images need an output folder; name a folder"
        )
    output.mkdir(parents=True, exist_ok=True)
    return [output / f.name for f in files]


def output_bit_depth(image: torch.Tensor, path: Path) -> int:
    """16 for a float image (a 16-bit source, as ``imagefiles.load_tensor`` gives it) written to a PNG, else 8."""
    return 16 if image.is_floating_point() and path.suffix.lower() == ".png" else 8


def enhance_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    pipeline: Pipeline | None = None,
    overwrite: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    batch_size: int = 1,
) -> BatchResult:
    """Enhance every image named by ``inputs`` into ``output`` (a file for one input file, else a folder).

    ``batch_size`` files go through the pipeline together (the neural models batch images of one size); a batch the
    pipeline rejects is retried file by file, so one bad image fails alone. 16-bit sources stay float32 through the
    pipeline and are written as 16-bit when the output is a PNG. ``progress`` wraps the iteration over files.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pipeline = pipeline or Pipeline()
    files, failures = collect_inputs(inputs)
    result = BatchResult(failures=failures)
    if not files:
        return result
    targets = plan_outputs(inputs, files, output)
    seen: dict[Path, Path] = {}
    pairs = list(zip(files, targets, strict=True))
    loaded: list[tuple[Path, Path, torch.Tensor]] = []
    for source, target in progress(pairs) if progress else pairs:
        try:
            key = target.absolute()
            if key in seen:
                raise imagefiles.ImageError(
                    f"{source}: its output {target} is also the output of {seen[key]}; rename one of them"
                )
            seen[key] = source
            imagefiles.check_output_path(target, source=source, overwrite=overwrite)
            loaded.append((source, target, imagefiles.load_tensor(source)))
        except ValueError as error:
            result.failures.append(Failure(str(source), str(error)))
        if len(loaded) == batch_size:
            _enhance_and_save(pipeline, loaded, overwrite, result)
            loaded = []
    _enhance_and_save(pipeline, loaded, overwrite, result)
    return result


def _enhance_and_save(
    pipeline: Pipeline, items: list[tuple[Path, Path, torch.Tensor]], overwrite: bool, result: BatchResult
) -> None:
    if not items:
        return
    try:
        enhanced = pipeline.enhance([image for _, _, image in items])
    except ValueError as error:
        if len(items) > 1:  # find the image the pipeline refused: the others still go through
            for item in items:
                _enhance_and_save(pipeline, [item], overwrite, result)
            return
        result.failures.append(Failure(str(items[0][0]), str(error)))
        return
    for (source, target, image), edited, record in zip(items, enhanced.images, enhanced.records, strict=True):
        try:
            imagefiles.save_image(
                target, edited, source=source, overwrite=overwrite, bit_depth=output_bit_depth(image, target)
            )
        except ValueError as error:
            result.failures.append(Failure(str(source), str(error)))
            continue
        result.written.append(
            {"input": str(source), "output": str(target), "width": image.shape[2], "height": image.shape[1],
             **record.to_json()}
        )


def write_report(path: str | os.PathLike, payload: dict[str, object]) -> Path:
    """Write ``payload`` as JSON through a temporary file in the same folder (never a partial report)."""
    path = Path(path)
    if not path.absolute().parent.is_dir():
        raise ValueError(f"{path}: the folder {path.absolute().parent} does not exist; create it first")
    text = json.dumps(payload, indent=2, default=str).encode()
    imagefiles.atomic_write(path, lambda file: file.write(text))
    return path
