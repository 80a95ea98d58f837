"""``spc-fast data build``: a training set synthesised from a folder of good photos.

Layout of the data folder it writes::

    DATA/manifest.jsonl        one record per pair (``manifest``), written last and atomically
    DATA/photos/photo00000.png the photos, resized so the long side is at most ``max_side`` (the targets)
    DATA/inputs/<id>.png       the synthesised inputs, ids ``retouch-000000``, ``restore-000001``, ``stack-000002``

Pair ``i`` is of kind ``KINDS[i % 3]`` (retouch, restore, stack: see ``synthesis``) and uses readable photo
``(i // 3) mod n`` in name order, so every photo gets every kind in turn (only the photos used are resized in);
all its random numbers come from ``pair_generator(seed, i)``. Each pair runs with torch on one thread
(``workers``), so the same photos, seed and settings give byte-identical images and manifest for any number of
workers. Retouch pairs have task ``retouch``; restore and stack pairs ``restore`` (their target is the clean
photo). With ``annotate`` each record carries the analytic critic's annotation with the known suggestions
(``annotate``).

Photos are resized (PIL bicubic) so the long side is at most ``max_side`` pixels (default 1024, about the
release's 1 MP working size; small values such as 64 make the tiny datasets that the tiny presets train on in
seconds) and written as 8-bit PNG. An unreadable photo is an error, or with ``skip_bad`` left out and listed;
files in the folder that are not images (by extension) are listed as ignored. A folder that already holds a
manifest is refused; images left by an interrupted build (no manifest yet) are replaced.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spc_fast import imagefiles
from spc_fast.images import resize_bicubic
from spc_fast.training.data.annotate import annotate as annotate_pair
from spc_fast.training.data.manifest import MANIFEST_NAME, ManifestError, Problem, Record, load_image, write_manifest
from spc_fast.training.data.synthesis import KINDS, pair_generator, synthesise
from spc_fast.training.data.workers import parallel_map

__all__ = ["DEFAULT_MAX_SIDE", "BuildSummary", "build", "list_photos", "resized"]

DEFAULT_MAX_SIDE = 1024
PHOTOS, INPUTS = "photos", "inputs"


@dataclass(frozen=True)
class BuildSummary:
    """What a build wrote: the manifest, the record count per kind, photos used, and what it left out."""

    manifest: Path
    records: int
    photos: int
    kinds: dict[str, int]
    skipped: list[Problem] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def list_photos(folder: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The image files directly in ``folder`` by name (extensions this install reads, hidden files excluded), and
    the other entries (ignored, so that the caller can say so)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder of photos; pass the folder that holds them")
    photos, ignored = [], []
    for entry in sorted(folder.iterdir()):
        readable = entry.is_file() and not entry.name.startswith(".")
        (photos if readable and entry.suffix.lower() in imagefiles.READABLE else ignored).append(entry)
    return photos, ignored


def resized(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """An H x W x 3 photo (uint8, or float in [0, 1]) as uint8 with its long side at most ``max_side`` (bicubic)."""
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1.0:
        pixels = resize_bicubic(pixels, (max(1, round(height * scale)), max(1, round(width * scale))))
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return pixels


def _prepare_photo(task: tuple[str, str, int]) -> str | None:
    # one photo resized into the data folder; the error message of an unreadable one
    source, destination, max_side = task
    try:
        pixels = imagefiles.load_image(source)
    except ValueError as error:
        return str(error)
    imagefiles.save_image(destination, resized(pixels, max_side), overwrite=True)
    return None


def _make_pair(task: tuple[int, int, str, str, bool]) -> Record:
    index, seed, photo_path, out, annotate = task
    photo = load_image(photo_path)
    kind = KINDS[index % len(KINDS)]
    pair = synthesise(photo, kind, pair_generator(seed, index))
    record_id = f"{kind}-{index:06d}"
    input_path = Path(out) / INPUTS / f"{record_id}.png"
    imagefiles.save_image(input_path, pair.image, overwrite=True)
    return Record(
        id=record_id,
        task="retouch" if kind == "retouch" else "restore",
        input=input_path.resolve(),
        target=Path(photo_path).resolve(),
        width=photo.shape[2],
        height=photo.shape[1],
        suggestions=pair.suggestions,
        parameters=pair.parameters,
        degradations=pair.degradations,
        annotation=annotate_pair(pair.image, pair.suggestions) if annotate else None,
    )


def build(
    photos: str | os.PathLike,
    out: str | os.PathLike,
    *,
    pairs: int,
    seed: int,
    workers: int = 1,
    max_side: int = DEFAULT_MAX_SIDE,
    annotate: bool = True,
    skip_bad: bool = False,
    progress: Callable[[int, int], object] | None = None,
) -> BuildSummary:
    """Synthesise ``pairs`` pairs from the photos in ``photos`` into the data folder ``out`` (module docstring).
    ``progress(done, total)`` is called as pairs finish."""
    if pairs < 1 or seed < 0 or workers < 1 or max_side < 8:
        raise ValueError(
            f"need pairs >= 1, seed >= 0, workers >= 1 and max_side >= 8; got pairs={pairs}, "
            f"seed={seed}, workers={workers}, max_side={max_side}"
        )
    out = Path(out)
    manifest = out / MANIFEST_NAME
    if manifest.exists():
        raise ValueError(f"{manifest}: already exists; build into a new folder (nothing there is replaced)")
    sources, ignored = list_photos(photos)
    if not sources:
        readable = ", ".join(sorted(imagefiles.READABLE)[:10])
        raise ValueError(f"{photos}: no image files found (extensions read here: {readable}, …)")
    (out / PHOTOS).mkdir(parents=True, exist_ok=True)
    (out / INPUTS).mkdir(parents=True, exist_ok=True)
    # only the photos the pairs use: the first ceil(pairs / 3) readable ones
    need = min(len(sources), -(-pairs // len(KINDS)))
    good: list[str] = []
    skipped: list[Problem] = []
    start = 0
    while len(good) < need and start < len(sources):
        batch = range(start, min(len(sources), start + need - len(good)))
        tasks = [(str(sources[k]), str(out / PHOTOS / f"photo{k:05d}.png"), max_side) for k in batch]
        for (source, target, _), error in zip(tasks, parallel_map(_prepare_photo, tasks, workers=workers), strict=True):
            if error is None:
                good.append(target)
            else:
                skipped.append(Problem(Path(source), None, "unreadable image", error))
        start = batch.stop
    if skipped and not skip_bad:
        raise ManifestError(skipped, "pass --skip-bad to build from the readable photos (the others are listed)")
    if not good:
        raise ValueError(f"{photos}: none of the {len(sources)} photos could be read")
    pair_tasks = [(i, seed, good[(i // len(KINDS)) % len(good)], str(out), annotate) for i in range(pairs)]
    records = []
    for record in parallel_map(_make_pair, pair_tasks, workers=workers):
        records.append(record)
        if progress is not None:
            progress(len(records), pairs)
    write_manifest(manifest, records)
    used = len({r.target for r in records})
    kinds = dict(Counter(r.id.split("-")[0] for r in records))
    return BuildSummary(manifest, len(records), used, kinds, skipped, ignored)
