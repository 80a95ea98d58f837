"""Records from the layouts users already have; ``spc-fast data import`` adds them to a data folder's manifest.

- ``import_pairs(FOLDER)``: ``FOLDER/input/`` and ``FOLDER/target/`` holding files of the same name (matched
  without the extension, so ``input/a.tif`` pairs with ``target/a.jpg``, as FiveK exports and restoration sets
  ship). Suggestions are unknown (empty) and the task is given (retouch or restore); no annotation is written for
  them (``annotate.annotate_record``). A file without a partner, two files of one name, an unreadable image and a
  pair whose sizes differ are problems naming the file.
- ``import_iqa(TABLE)``: a CSV table with a header, one row per image: its path (relative to ``images`` or to the
  table's folder) and its MOS. The columns are found by name (``IMAGE_COLUMNS``, ``MOS_COLUMNS``, any case) unless
  given. Score records; with ``annotate`` each gets ``annotate.critic_answer`` with the MOS rescaled to 0-100 on
  ``mos_range`` (default: the table's lowest and highest MOS). Problems name the table and line.
- ``merge_annotations(records, FILE)``: a JSONL file of ``{"id": ..., "text": ...}`` or ``{"image": PATH,
  "text": ...}`` (``annotation`` is read as ``text``; paths relative to the file's folder) put onto existing
  records; a text must parse without errors (``critic.format.parse``). Problems name the file and line.

Every function returns ``(records, problems)``; the caller decides whether problems stop it (``--skip-bad``).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace
from pathlib import Path

from spc_fast import imagefiles
from spc_fast.critic.format import parse
from spc_fast.critic.rules import AnalyticCriticConfig
from spc_fast.training.data.annotate import annotate_record
from spc_fast.training.data.manifest import Problem, Record, image_size
from spc_fast.training.data.workers import parallel_map

__all__ = ["IMAGE_COLUMNS", "MOS_COLUMNS", "import_iqa", "import_pairs", "merge_annotations"]

IMAGE_COLUMNS = ("image", "image_name", "img_name", "img", "filename", "file", "path", "name", "dist_img")
MOS_COLUMNS = ("mos", "score", "dmos", "mos_zscore", "rating", "quality")


def _by_stem(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() not in imagefiles.READABLE:
            problems.append(Problem(entry, None, "unreadable image", "not an image extension this install reads"))
        elif entry.stem in found:
            problems.append(Problem(entry, None, "duplicate id", f"{found[entry.stem].name} has the same name"))
        else:
            found[entry.stem] = entry
    return found


def import_pairs(folder: str | os.PathLike, *, task: str = "retouch", prefix: str = "") -> tuple[list, list]:
    """Records of the pairs in ``folder/input`` and ``folder/target`` (module docstring); ids ``prefix + name``."""
    folder = Path(folder)
    if task not in ("retouch", "restore"):
        raise ValueError(f"paired folders make retouch or restore records, not {task!r}")
    inputs_dir, targets_dir = folder / "input", folder / "target"
    if not inputs_dir.is_dir() or not targets_dir.is_dir():
        raise ValueError(f"{folder}: needs the sub-folders input/ and target/ holding files of matching names")
    problems: list[Problem] = []
    inputs, targets = _by_stem(inputs_dir, problems), _by_stem(targets_dir, problems)
    for stem in sorted(set(inputs) ^ set(targets)):
        lone, other = (inputs[stem], "target") if stem in inputs else (targets[stem], "input")
        problems.append(Problem(lone, None, "missing file", f"no {other}/{stem}.* to pair it with"))
    records = []
    for stem in sorted(set(inputs) & set(targets)):
        try:
            size, target_size = image_size(inputs[stem]), image_size(targets[stem])
        except ValueError as error:
            problems.append(Problem(inputs[stem], None, "unreadable image", str(error)))
            continue
        if size != target_size:
            message = f"input {size[0]}x{size[1]}, target {targets[stem]} {target_size[0]}x{target_size[1]}"
            problems.append(Problem(inputs[stem], None, "size mismatch", message))
            continue
        records.append(
            Record(
                id=prefix + stem,
                task=task,
                input=inputs[stem].resolve(),
                target=targets[stem].resolve(),
                width=size[0],
                height=size[1],
            )
        )
    return records, problems


def _column(names: list[str], given: str | None, candidates: tuple[str, ...], what: str, table: Path) -> str:
    if given is not None:
        if given not in names:
            raise ValueError(f"{table}: no column {given!r}; the columns are {', '.join(names)}")
        return given
    lower = {name.strip().lower(): name for name in names}
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    flag = "--image-column" if what == "image" else "--mos-column"
    raise ValueError(
        f"{table}: cannot tell which column holds the {what} (columns: {', '.join(names)}); name it with {flag}"
    )


def _annotation(task: tuple[Record, tuple[float, float], AnalyticCriticConfig | None]) -> str | None:
    record, mos_range, config = task
    return annotate_record(record, mos_range=mos_range, config=config)


def import_iqa(
    table: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    image_column: str | None = None,
    mos_column: str | None = None,
    mos_range: tuple[float, float] | None = None,
    annotate: bool = True,
    workers: int = 1,
    critic: AnalyticCriticConfig | None = None,
) -> tuple[list[Record], list[Problem]]:
    """Score records of an IQA table (module docstring); annotations written by ``workers`` processes with the
    analytic critic configured by ``critic`` (default: its default configuration)."""
    table = Path(table)
    root = Path(images) if images is not None else table.parent
    try:
        with table.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            names = list(reader.fieldnames or [])
            image_key = _column(names, image_column, IMAGE_COLUMNS, "image", table)
            mos_key = _column(names, mos_column, MOS_COLUMNS, "MOS", table)
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{table}: cannot read the table ({error})") from None
    records: list[Record] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        name, raw = (row.get(image_key) or "").strip(), (row.get(mos_key) or "").strip()
        try:
            mos = float(raw)
        except ValueError:
            mos = math.nan
        if not name or not math.isfinite(mos):
            problems.append(Problem(table, line, "malformed line", f"needs an image and a numeric MOS, got {row}"))
            continue
        if name in seen:
            problems.append(Problem(table, line, "duplicate id", f"{name} is listed on line {seen[name]} already"))
            continue
        seen[name] = line
        path = (root / name).resolve()
        if not path.exists():
            problems.append(Problem(table, line, "missing file", f"{path}: no such file"))
            continue
        try:
            width, height = image_size(path)
        except ValueError as error:
            problems.append(Problem(table, line, "unreadable image", str(error)))
            continue
        records.append(Record(id=name, task="score", input=path, width=width, height=height, mos=mos))
    if records and annotate:
        scores = [r.mos for r in records]
        span = mos_range if mos_range is not None else (min(scores), max(scores))
        texts = parallel_map(_annotation, [(r, span, critic) for r in records], workers=workers)
        records = [replace(r, annotation=text) for r, text in zip(records, texts, strict=True)]
    return records, problems


def merge_annotations(records: list[Record], annotations: str | os.PathLike) -> tuple[list[Record], list[Problem]]:
    """``records`` with the annotation texts of a JSONL file put on them (module docstring)."""
    annotations = Path(annotations)
    try:
        lines = annotations.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{annotations}: cannot read the annotations ({error})") from None
    by_id = {r.id: i for i, r in enumerate(records)}
    by_path = {r.input: i for i, r in enumerate(records)}
    merged, problems, done = list(records), [], {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(Problem(annotations, number, "malformed line", f"not JSON ({error.msg})"))
            continue
        text = obj.get("text", obj.get("annotation")) if isinstance(obj, dict) else None
        key = obj.get("id", obj.get("image")) if isinstance(obj, dict) else None
        if not isinstance(text, str) or not isinstance(key, str):
            problems.append(Problem(annotations, number, "malformed line", 'needs "id" or "image", and "text"'))
            continue
        index = by_id.get(key) if "id" in obj else by_path.get((annotations.parent / key).resolve())
        if index is None:
            what = "id" if "id" in obj else "image"
            problems.append(Problem(annotations, number, "unknown record", f"no record has the {what} {key!r}"))
            continue
        if index in done:
            message = f"record {records[index].id!r} is annotated on line {done[index]} already"
            problems.append(Problem(annotations, number, "duplicate id", message))
            continue
        if errors := parse(text).errors:
            problems.append(Problem(annotations, number, "malformed annotation", "; ".join(errors[:3])))
            continue
        done[index] = number
        merged[index] = replace(merged[index], annotation=text)
    return merged, problems
