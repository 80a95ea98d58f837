"""Which files are compared with which, and reading them a few batches at a time.

Files pair by name without the extension (``0001.png`` in the predictions with ``0001.jpg`` in the references):
every file directly in each folder whose extension this install reads (``imagefiles.READABLE``), hidden files
aside. A prediction without its reference (or input, when a metric needs the input), or a reference without its
prediction, is a problem named by its file; so is a pair whose prediction and reference differ in size, and a
file that does not decode. Names are checked for every file before any image is read; sizes and decoding as
each pair is read.

Images are read with ``imagefiles.read_photo`` (upright sRGB; alpha ignored: the colour is compared as stored) and
held as float32 [3, H, W] on the 0-255 scale: 8-bit files exactly, 16-bit and float files at full precision.
``batches`` keeps at most two batches in memory (the one being scored and the next, decoded in worker threads
meanwhile), so a set of any size streams.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spc_fast import imagefiles
from spc_fast.images import resize_bicubic

FIVEK_SHORT_SIDE = 480


class EvaluationError(ValueError):
    """Bad input to an evaluation: the message names the file and the fix."""


@dataclass(frozen=True)
class Pair:
    """One image's files: the prediction, its reference and input (None when no metric needs them)."""

    name: str
    pred: Path
    ref: Path | None = None
    input: Path | None = None


@dataclass(frozen=True)
class Problem:
    """A pair that cannot be scored: the file at fault and why."""

    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class LoadedPair:
    name: str
    pred: torch.Tensor
    ref: torch.Tensor | None
    input: torch.Tensor | None


def image_files(folder: Path, role: str) -> dict[str, Path]:
    """Name (without extension) -> file for the readable images directly in ``folder``; two files of one name
    are an error (which one is meant is not knowable)."""
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: the {role} folder does not exist or is not a folder; check --{role}")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in imagefiles.READABLE or not path.is_file():
            continue
        if path.stem in files:
            raise EvaluationError(
                f"{path}: {files[path.stem].name} has the same name; keep one of the two files "
                f"in {folder} (files pair by name without the extension)"
            )
        files[path.stem] = path
    return files


def pair_folders(pred: Path, ref: Path | None, inputs: Path | None) -> tuple[list[Pair], list[Problem]]:
    """The pairs in name order, and every file whose partner is missing."""
    predictions = image_files(pred, "pred")
    references = image_files(ref, "ref") if ref is not None else None
    originals = image_files(inputs, "input") if inputs is not None else None
    pairs, problems = [], []
    for name, path in predictions.items():
        missing = [
            (kind, folder)
            for kind, found, folder in (("reference", references, ref), ("input", originals, inputs))
            if found is not None and name not in found
        ]
        if missing:
            problems.extend(Problem(path, f"no {kind} named {name}.* in {folder}") for kind, folder in missing)
            continue
        pairs.append(Pair(name, path, references and references[name], originals and originals[name]))
    for name, path in (references or {}).items():
        if name not in predictions:
            problems.append(Problem(path, f"no prediction named {name}.* in {pred}"))
    if not pairs and not problems:
        raise EvaluationError(f"{pred}: no images to evaluate (readable extensions: {', '.join(imagefiles.READABLE)})")
    return pairs, problems


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side ``short_side`` and the long side scaled to match, rounded to the nearest pixel."""
    scale = short_side / min(height, width)
    return (short_side, round(width * scale)) if height <= width else (round(height * scale), short_side)


def read_image(path: Path, short_side: int | None = None) -> torch.Tensor:
    """A file as float32 [3, H, W] on the 0-255 scale; with ``short_side``, resized (PIL bicubic, which
    antialiases when it shrinks; ``images.resize_bicubic``) so its short side has that many pixels, unless it has
    already."""
    pixels = imagefiles.read_photo(path).pixels.permute(1, 2, 0).numpy()
    if short_side is not None and min(pixels.shape[:2]) != short_side:
        pixels = resize_bicubic(pixels, short_side_size(*pixels.shape[:2], short_side))
        if pixels.dtype != np.uint8:
            pixels = np.clip(pixels, 0.0, 1.0)  # bicubic overshoot at edges, as the 8-bit path clips it
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)
    return image.float() if image.dtype == torch.uint8 else image.float() * 255.0


def load_pair(pair: Pair, short_side: int | None = None) -> LoadedPair:
    """The pair's images (``read_image``); a prediction whose size differs from its reference's is an error."""
    pred = read_image(pair.pred, short_side)
    ref = None if pair.ref is None else read_image(pair.ref, short_side)
    if ref is not None and ref.shape != pred.shape:
        raise EvaluationError(
            f"{pair.pred}: {pred.shape[2]}x{pred.shape[1]} pixels but its reference {pair.ref} has "
            f"{ref.shape[2]}x{ref.shape[1]}; predictions must have their reference's size"
            + (" after the preset's resize" if short_side else " (resize them, or use a preset that resizes both)")
        )
    inputs = None if pair.input is None else read_image(pair.input, short_side)
    return LoadedPair(pair.name, pred, ref, inputs)


def _load_or_problem(task: tuple[Pair, int | None]) -> LoadedPair | Problem:
    pair, short_side = task
    try:
        return load_pair(pair, short_side)
    except ValueError as error:  # ImageError (undecodable, too large, ...) and size mismatches
        message = str(error)
        prefix = f"{pair.pred}: "
        return Problem(pair.pred, message.removeprefix(prefix))


def batches(
    pairs: list[Pair], batch_size: int, short_side: int | None = None, workers: int | None = None
) -> Iterator[list[LoadedPair | Problem]]:
    """The pairs read ``batch_size`` at a time, in order, the next batch decoding in threads while the caller
    scores this one; a pair that cannot be read comes back as its ``Problem``."""
    if batch_size < 1:
        raise EvaluationError(f"batch size must be at least 1, got {batch_size}")
    workers = workers or min(batch_size, os.cpu_count() or 1)
    chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spc-fast-read") as pool:
        pending = [pool.submit(_load_or_problem, (p, short_side)) for p in chunks[0]] if chunks else []
        for index in range(len(chunks)):
            current = pending
            following = chunks[index + 1] if index + 1 < len(chunks) else []
            pending = [pool.submit(_load_or_problem, (p, short_side)) for p in following]
            yield [future.result() for future in current]
