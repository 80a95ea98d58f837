"""Enhancing files: read, enhance and write each file of a ``batch_plan.plan_batch``, one failure never stopping
the rest.

Any failure of one file (unreadable, an odd decoder error, out of memory, an output that appeared meanwhile) is
recorded with the file's name and the rest still run. Every image is written atomically by
``imagefiles.save_image``, so an interrupted or failed write never leaves a partial file, and an existing file is
never replaced unless asked. A run stopped by Ctrl-C (or a signal the command line turns into one) keeps what it
did in the ``BatchResult`` it was given.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spc_fast import imagefiles
from spc_fast.batch_plan import (
    OUTPUT_EXISTS,
    BatchPlan,
    Failure,
    Skipped,
    check_report_path,
    collect_inputs,
    plan_batch,
    plan_outputs,
)
from spc_fast.pipeline import Pipeline

__all__ = [
    "OUTPUT_EXISTS",
    "BatchPlan",
    "BatchResult",
    "Failure",
    "Pipeline",
    "Skipped",
    "check_report_path",
    "collect_inputs",
    "enhance_files",
    "failure_message",
    "output_bit_depth",
    "plan_batch",
    "plan_outputs",
    "run_batch",
    "write_report",
]

logger = logging.getLogger(__name__)

_HIGH_DEPTH_SUFFIXES = (".png", ".tif", ".tiff")
# Peak memory of the analytic pipeline per image pixel (measured: about 33 bytes for an 8-bit image), with margin;
# the neural models need theirs on top.
_BYTES_PER_PIXEL = 40


@dataclass
class BatchResult:
    """Per written image: input, output, size and the pipeline's record; per failed input: the error; the inputs
    skipped, and, for a run that was stopped (``interrupted``: the signal's name), those never finished."""

    written: list[dict[str, object]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    not_started: list[str] = field(default_factory=list)
    interrupted: str | None = None

    @classmethod
    def from_plan(cls, plan: BatchPlan) -> BatchResult:
        """A result holding what planning already failed or skipped."""
        return cls(failures=list(plan.failures), skipped=list(plan.skipped))

    def stop(self, plan: BatchPlan, reason: str) -> None:
        """Record that the run stopped (``reason``: e.g. the signal's name) before finishing ``plan``."""
        done = {item["input"] for item in self.written} | {f.input for f in self.failures}
        done |= {s.path for s in self.skipped}
        self.interrupted = reason
        self.not_started = [str(source) for source, _ in plan.pairs if str(source) not in done]

    def to_json(self) -> dict[str, object]:
        return {
            "images": self.written,
            "failures": [{"input": f.input, "error": f.error} for f in self.failures],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "not_started": self.not_started,
            "interrupted": self.interrupted,
        }


def output_bit_depth(image: torch.Tensor, path: str | os.PathLike) -> int:
    """16 for a float image (a 16-bit source, as ``imagefiles.read_photo`` gives it) written to PNG or TIFF, else 8."""
    return 16 if image.is_floating_point() and Path(path).suffix.lower() in _HIGH_DEPTH_SUFFIXES else 8


def _is_out_of_memory(error: BaseException) -> bool:
    # torch's CPU allocator reports failure as a RuntimeError, its CUDA one as torch.cuda.OutOfMemoryError
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error)
    )


def failure_message(path: str | os.PathLike, error: Exception, size: tuple[int, int] | None = None) -> str:
    """One line for the user: what went wrong with ``path`` and what to do about it (``size``: the image's width
    and height when known, for what running out of memory means)."""
    path = Path(path)
    if _is_out_of_memory(error):
        need = ""
        if size is not None:
            width, height = size
            need = f"{width}x{height} pixels need about {width * height * _BYTES_PER_PIXEL / 2**30:.1f} GiB; "
        message = (f"out of memory ({need}free memory, use --batch 1, downscale the image, or set "
                   f"{imagefiles.MAX_PIXELS_ENV} below its pixel count to refuse such images)")
    elif isinstance(error, ValueError):
        message = str(error)
    elif isinstance(error, OSError):
        message = f"cannot read or write a file ({error.strerror or error}); check the disk and permissions"
    else:
        logger.info("%s: traceback", path, exc_info=error)
        message = (f"unexpected {type(error).__name__}: {error} (an error in spc-fast or a library; spc-fast -v "
                   "prints the traceback)")
    return message if str(path) in message else f"{path}: {message}"


def run_batch(
    plan: BatchPlan,
    pipeline: Pipeline,
    *,
    batch_size: int = 1,
    on_file: Callable[[dict[str, object] | Failure | Skipped], None] | None = None,
    result: BatchResult | None = None,
) -> BatchResult:
    """Read, enhance and write each pair of ``plan``, ``batch_size`` files through the pipeline together (a batch
    that fails is retried file by file, so one bad image fails alone). The alpha channel passes through unchanged;
    16-bit sources stay float32 and are written as 16-bit PNG or TIFF. ``on_file`` sees each written record,
    failure or skip of a pair as it happens. Pass your own ``result`` (``BatchResult.from_plan``) to keep what was
    done when the run is interrupted."""
    if batch_size < 1:
        raise ValueError(f"--batch must be at least 1, got {batch_size}")
    result = result if result is not None else BatchResult.from_plan(plan)
    record = _Recorder(result, on_file)
    loaded: list[tuple[Path, Path, imagefiles.Photo]] = []
    for source, target in plan.pairs:
        try:
            loaded.append((source, target, imagefiles.read_photo(source)))
        except Exception as error:
            record(Failure(str(source), failure_message(source, error)))
        if len(loaded) == batch_size:
            _enhance_and_save(pipeline, loaded, plan, record)
            loaded = []
    _enhance_and_save(pipeline, loaded, plan, record)
    return result


def enhance_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    pipeline: Pipeline | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    batch_size: int = 1,
    on_file: Callable[[dict[str, object] | Failure | Skipped], None] | None = None,
) -> BatchResult:
    """Enhance every image named by ``inputs`` into ``output`` (a file for one input file, else a folder):
    ``plan_batch`` then ``run_batch`` with the default pipeline unless one is given."""
    plan = plan_batch(inputs, output, overwrite=overwrite, skip_existing=skip_existing)
    return run_batch(plan, pipeline or Pipeline(), batch_size=batch_size, on_file=on_file)


@dataclass
class _Recorder:
    result: BatchResult
    on_file: Callable[[dict[str, object] | Failure | Skipped], None] | None

    def __call__(self, entry: dict[str, object] | Failure | Skipped) -> None:
        if isinstance(entry, Failure):
            self.result.failures.append(entry)
        elif isinstance(entry, Skipped):
            self.result.skipped.append(entry)
        else:
            self.result.written.append(entry)
        if self.on_file is not None:
            self.on_file(entry)


def _enhance_and_save(
    pipeline: Pipeline, items: list[tuple[Path, Path, imagefiles.Photo]], plan: BatchPlan, record: _Recorder
) -> None:
    if not items:
        return
    try:
        enhanced = pipeline.enhance([photo.pixels for _, _, photo in items])
    except Exception as error:
        if len(items) > 1:  # find the image the pipeline refused: the others still go through
            for item in items:
                _enhance_and_save(pipeline, [item], plan, record)
            return
        source, _, photo = items[0]
        record(Failure(str(source), failure_message(source, error, size=photo.pixels.shape[:0:-1])))
        return
    for (source, target, photo), edited, outcome in zip(items, enhanced.images, enhanced.records, strict=True):
        try:
            imagefiles.save_image(target, edited, source=source, overwrite=plan.overwrite, alpha=photo.alpha,
                                  bit_depth=output_bit_depth(photo.pixels, target))
        except Exception as error:
            if plan.skip_existing and target.exists():  # another run wrote it meanwhile
                record(Skipped(str(source), OUTPUT_EXISTS))
            else:
                record(Failure(str(source), failure_message(source, error)))
            continue
        record({"input": str(source), "output": str(target), "width": photo.pixels.shape[2],
                "height": photo.pixels.shape[1], **outcome.to_json()})


def write_report(path: str | os.PathLike, payload: dict[str, object], *, overwrite: bool = False) -> Path:
    """Write ``payload`` as JSON through a temporary file in the same folder (never a partial report); an existing
    file is replaced only with ``overwrite``."""
    path = Path(path)
    if not path.absolute().parent.is_dir():
        raise ValueError(f"{path}: the folder {path.absolute().parent} does not exist; create it first")
    text = json.dumps(payload, indent=2, default=str).encode()
    imagefiles.atomic_write(path, lambda file: file.write(text), overwrite=overwrite)
    return path
