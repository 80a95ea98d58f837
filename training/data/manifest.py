"""The training manifest: ``DATA/manifest.jsonl``, one JSON object (a ``Record``) per line, and its validation.

Paths in the file are relative to the manifest's folder (absolute when the image lives outside it); a ``Record``
holds them resolved. Required keys: ``id``, ``task``, ``input``, ``width``, ``height``; optional: ``target``
(null), ``suggestions`` ([]), ``parameters`` ({}), ``degradations`` ([]), ``mos`` (null), ``annotation`` (null).
Unknown keys are an error, so a misspelt field is never ignored.

Validation names the file and line of every problem (``Problem``): a line that is not a record (``malformed
line``), an unknown task, a duplicate id (the first record keeps it), a missing file, an unreadable image, a size
that differs from the record's or a target whose size differs from its input's (``size mismatch``), a suggestion
that is not one critic-grammar phrase (``bad suggestion``), an annotation that does not parse without errors
(``malformed annotation``). A bad record is either an error (``ManifestError``) or, with ``skip_bad``, left out and
returned among the problems: never dropped silently. Image sizes are read from the file header (EXIF rotation
applied) unless ``decode`` asks for a full decode, which also finds truncated data.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from spc_fast import imagefiles
from spc_fast.critic.format import parse, parse_suggestions
from spc_fast.degrade import DEGRADATIONS
from spc_fast.images import from_unit_float
from spc_fast.retouch import NEUTRAL

MANIFEST_NAME = "manifest.jsonl"
TASKS = ("retouch", "restore", "score")
_REQUIRED = ("id", "task", "input", "width", "height")
_OPTIONAL = {"target": None, "suggestions": [], "parameters": {}, "degradations": [], "mos": None, "annotation": None}
_ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True, kw_only=True)
class Record:
    """One training sample. ``input``/``target`` are resolved paths; ``width``/``height`` the input's size;
    ``suggestions`` the ideal corrective critic phrases; ``parameters`` the retouch parameters that made the input
    from the target when known (``synthesis`` applies them one op at a time, in the reverse of the executor's
    chain order); ``degradations`` ``{"name": DEGRADATIONS key, param: value, ..., ["seed": int]}``."""

    id: str
    input: Path
    task: str
    width: int
    height: int
    target: Path | None = None
    suggestions: tuple[str, ...] = ()
    parameters: dict[str, float] = field(default_factory=dict)
    degradations: tuple[dict, ...] = ()
    mos: float | None = None
    annotation: str | None = None


@dataclass(frozen=True)
class Problem:
    """A bad record or input row: where it is (file, line: 1-based, None for a folder entry), its kind and what."""

    file: Path
    line: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.kind}: {self.message}"


class ManifestError(ValueError):
    """Bad records where none may be skipped; ``problems`` lists them all, the message counts them on one line."""

    def __init__(self, problems: list[Problem], hint: str = "pass --skip-bad to leave them out (they are counted)"):
        kinds = ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in problems).items())
        super().__init__(f"{len(problems)} bad records ({kinds}); first: {problems[0]}; {hint}")
        self.problems = problems


class BadRecord(ValueError):
    """One record's problem: its kind (see the module docstring) and message."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def manifest_path(data: str | os.PathLike) -> Path:
    """``DATA/manifest.jsonl`` for a data folder, or the path itself when it names a file."""
    path = Path(data)
    return path / MANIFEST_NAME if path.is_dir() or not path.suffix else path


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as uint8 [3, H, W] sRGB (16-bit and float sources rounded to 8 bits)."""
    pixels = imagefiles.load_tensor(path)
    return pixels if pixels.dtype == torch.uint8 else from_unit_float(pixels, torch.uint8)


def image_size(path: str | os.PathLike, *, decode: bool = False) -> tuple[int, int]:
    """(width, height) of an image file as ``load_image`` returns it: from the header (EXIF rotation applied), or
    by decoding it all when ``decode`` or when only the full decoder reads the file. ``ImageError`` if unreadable."""
    path = Path(path)
    if not decode:
        try:
            with Image.open(path) as image:
                width, height = image.size
                rotated = image.getexif().get(0x0112, 1) in _ROTATED
            return (height, width) if rotated else (width, height)
        except (OSError, ValueError, SyntaxError):
            pass  # not a Pillow header (a TIFF only tifffile reads) or a damaged one: the decoder decides
    pixels = imagefiles.load_tensor(path)
    return pixels.shape[2], pixels.shape[1]


def _number(value, what: str, *, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRecord("malformed line", f"{what} must be a finite number, got {json.dumps(value)}")
    return float(value)


def _text(value, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise BadRecord("malformed line", f"{what} must be a non-empty string, got {json.dumps(value)[:60]}")
    return value


def _path(value: str, root: Path) -> Path:
    return (root / value).resolve() if not os.path.isabs(value) else Path(value).resolve()


def record_from_json(obj, root: Path) -> Record:
    """A ``Record`` from one decoded JSON line (paths relative to ``root``); raises ``BadRecord`` with its problem."""
    if not isinstance(obj, dict):
        raise BadRecord("malformed line", f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in _REQUIRED if key not in obj]
    unknown = sorted(set(obj) - set(_REQUIRED) - set(_OPTIONAL))
    if missing or unknown:
        found = [f"missing {', '.join(missing)}"] if missing else []
        found += [f"unknown {', '.join(unknown)} (fields: {', '.join([*_REQUIRED, *_OPTIONAL])})"] if unknown else []
        raise BadRecord("malformed line", "; ".join(found))
    values = {**_OPTIONAL, **obj}
    if values["task"] not in TASKS:
        raise BadRecord("unknown task", f"task {json.dumps(values['task'])} is not one of {', '.join(TASKS)}")
    width, height = values["width"], values["height"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (width, height)):
        raise BadRecord("malformed line", f"width and height must be positive whole numbers, got {width}, {height}")
    suggestions, parameters, degradations = values["suggestions"], values["parameters"], values["degradations"]
    if not isinstance(suggestions, list) or not all(isinstance(s, str) for s in suggestions):
        raise BadRecord("malformed line", "suggestions must be a list of strings")
    for phrase in suggestions:
        found, errors = parse_suggestions(phrase)
        if errors or len(found) != 1:
            detail = "; ".join(errors) or f"{len(found)} suggestions in one phrase"
            raise BadRecord("bad suggestion", f"{json.dumps(phrase)} is not one critic suggestion ({detail})")
    if not isinstance(parameters, dict) or not set(parameters) <= set(NEUTRAL):
        raise BadRecord("malformed line", f"parameters must be an object with keys among {', '.join(NEUTRAL)}")
    if not isinstance(degradations, list) or not all(
        isinstance(d, dict) and d.get("name") in DEGRADATIONS for d in degradations
    ):
        names = ", ".join(DEGRADATIONS)
        raise BadRecord("malformed line", f"degradations must be objects whose name is one of {names}")
    annotation = _text(values["annotation"], "annotation", optional=True)
    if annotation is not None and (errors := parse(annotation).errors):
        raise BadRecord("malformed annotation", f"{'; '.join(errors[:3])}")
    target = _text(values["target"], "target", optional=True)
    return Record(
        id=_text(values["id"], "id"),
        task=values["task"],
        input=_path(_text(values["input"], "input"), root),
        target=None if target is None else _path(target, root),
        width=width,
        height=height,
        suggestions=tuple(suggestions),
        parameters={k: _number(v, f"parameters.{k}") for k, v in parameters.items()},
        degradations=tuple(dict(d) for d in degradations),
        mos=_number(values["mos"], "mos", optional=True),
        annotation=annotation,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def record_to_json(record: Record, root: Path) -> dict:
    """The JSON object of ``record`` with paths relative to ``root`` where the image lies inside it."""
    root = Path(root).resolve()
    return {
        "id": record.id,
        "task": record.task,
        "input": _relative(Path(record.input).resolve(), root),
        "target": None if record.target is None else _relative(Path(record.target).resolve(), root),
        "width": record.width,
        "height": record.height,
        "suggestions": list(record.suggestions),
        "parameters": dict(record.parameters),
        "degradations": [dict(d) for d in record.degradations],
        "mos": record.mos,
        "annotation": record.annotation,
    }


def check_record(record: Record, *, decode: bool = False) -> None:
    """Raise ``BadRecord`` when an image of ``record`` is missing, unreadable or of the wrong size."""
    sizes = {}
    for role, path in (("input", record.input), ("target", record.target)):
        if path is None:
            continue
        if not path.exists():
            raise BadRecord("missing file", f"{role} {path}: no such file")
        try:
            sizes[role] = image_size(path, decode=decode)
        except ValueError as error:
            raise BadRecord("unreadable image", str(error)) from None
    if sizes["input"] != (record.width, record.height):
        raise BadRecord(
            "size mismatch",
            f"input {record.input} is {sizes['input'][0]}x{sizes['input'][1]}, the record "
            f"says {record.width}x{record.height}",
        )
    if "target" in sizes and sizes["target"] != sizes["input"]:
        raise BadRecord(
            "size mismatch",
            f"target {record.target} is {sizes['target'][0]}x{sizes['target'][1]}, its "
            f"input {record.input} {sizes['input'][0]}x{sizes['input'][1]}",
        )


def read_manifest(
    path: str | os.PathLike, *, skip_bad: bool = False, check_files: bool = True, decode: bool = False
) -> tuple[list[Record], list[Problem]]:
    """The records of a manifest (a file, or a data folder holding ``manifest.jsonl``) and its problems.

    Without ``skip_bad`` any problem raises ``ManifestError`` (all of them listed in its ``problems``); with it the
    good records come back with the problems of the bad ones. ``check_files``: look at every image (existence,
    header, sizes); ``decode``: decode every image in full (``spc-fast data check``).
    """
    path = manifest_path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        hint = "make one with spc-fast data build or spc-fast data import"
        raise ValueError(f"{path}: no such manifest; {hint}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the manifest ({error})") from None
    root = path.parent.resolve()
    records: list[Record] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadRecord("malformed line", f"not JSON ({error.msg} at column {error.colno})") from None
            record = record_from_json(obj, root)
            if record.id in first_line:
                raise BadRecord("duplicate id", f"id {json.dumps(record.id)} is taken by line {first_line[record.id]}")
            first_line[record.id] = number
            if check_files:
                check_record(record, decode=decode)
        except BadRecord as bad:
            problems.append(Problem(path, number, bad.kind, str(bad)))
            continue
        records.append(record)
    if problems and not skip_bad:
        raise ManifestError(problems)
    return records, problems


def write_manifest(path: str | os.PathLike, records: list[Record]) -> Path:
    """Write ``records`` as a manifest, atomically (a reader sees the old file or the new one, never a part).
    Raises ValueError on a duplicate id."""
    path = manifest_path(path)
    seen = Counter(r.id for r in records)
    if duplicates := [i for i, n in seen.items() if n > 1]:
        raise ValueError(f"{path}: duplicate ids {', '.join(map(json.dumps, duplicates[:5]))}; ids must be unique")
    root = path.parent.resolve()
    text = "".join(json.dumps(record_to_json(r, root), ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    path.parent.mkdir(parents=True, exist_ok=True)
    imagefiles.atomic_write(path, lambda file: file.write(text.encode("utf-8")), overwrite=True)
    return path
