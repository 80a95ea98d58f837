"""Planning a batch before any work: the input files (folders expanded), their outputs, the report's path and the
output folders.

``plan_batch`` does every check that needs no pixels: an output shared by two inputs, equal to its input or already
existing fails that input before anything is decoded; ``--skip-existing`` skips an input whose output exists;
the report may be neither an input nor an output; the output folders are created and checked for writing, and
the temporaries a killed run left there are removed. ``batch.run_batch`` then does the work.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spc_fast import imagefiles

logger = logging.getLogger(__name__)

OUTPUT_EXISTS = "its output exists (--skip-existing)"


@dataclass
class Failure:
    input: str
    error: str


@dataclass
class Skipped:
    """An entry not enhanced, and why: an entry of an input folder that is not an image, or (``--skip-existing``)
    an input whose output exists."""

    path: str
    reason: str


@dataclass
class BatchPlan:
    """What a run will do: the (input, output) pairs still to enhance, and what planning already failed or skipped."""

    pairs: list[tuple[Path, Path]]
    failures: list[Failure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    overwrite: bool = False
    skip_existing: bool = False


def _list_folder(folder: Path) -> tuple[list[Path], list[Skipped]]:
    """The image files of ``folder`` (sorted, not recursive) and every other entry with the reason it is left out."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        raise imagefiles.ImageError(
            f"{folder}: cannot list the folder ({error.strerror or error}); check its permissions"
        ) from error
    files, skipped = [], []
    for entry in entries:
        path = Path(entry.path)
        if entry.name.startswith("."):
            reason = "hidden file"
        elif entry.is_symlink() and not path.exists():
            reason = "dangling symlink"
        elif entry.is_dir():
            reason = "folder (folders are not searched)"
        elif not entry.is_file():
            reason = "not a regular file"
        elif path.suffix.lower() not in imagefiles.READABLE:
            reason = "not an image extension"
        else:
            files.append(path)
            continue
        skipped.append(Skipped(str(path), reason))
    return files, skipped


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Failure], list[Skipped]]:
    """Image files named by ``inputs``: files as given, folders expanded to the files whose extension Pillow reads
    (not recursive, sorted; hidden files, sub-folders, dangling symlinks and other entries are listed as skipped).
    A folder that cannot be listed or holds no image is a failure; a missing path is left to the loader."""
    files, failures, skipped = [], [], []
    for entry in map(Path, inputs):
        if not entry.is_dir():
            files.append(entry)
            continue
        try:
            found, left_out = _list_folder(entry)
        except imagefiles.ImageError as error:
            failures.append(Failure(str(entry), str(error)))
            continue
        if not found:
            failures.append(Failure(str(entry), f"{entry}: folder contains no images Pillow can read "
                                    f"({len(left_out)} other entries); pass a folder of photos"))
        files.extend(found)
        skipped.extend(left_out)
    return files, failures, skipped


def plan_outputs(inputs: Sequence[str | os.PathLike], files: Sequence[Path], output: str | os.PathLike) -> list[Path]:
    """Output path of each file: ``output`` itself for a single file input when ``output`` has an extension and
    is not a folder, else ``output / file name`` (``plan_batch`` creates the folder); a file in a format that is
    read but not written (BMP, GIF, ...) gets a ``.png`` name, which keeps its transparency and depth."""
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
    return [output / (f.name if f.suffix.lower() in imagefiles.FORMATS else f"{f.stem}.png") for f in files]


def _same_path(a: Path, b: Path) -> bool:
    if a.absolute() == b.absolute() or a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_report_path(
    report: str | os.PathLike, inputs: Sequence[Path], outputs: Sequence[Path], *, overwrite: bool = False
) -> Path:
    """The report's path once it is neither an input nor an image output of the run, nor (without ``overwrite``)
    an existing file, and its folder exists; else a ValueError naming the problem and the fix."""
    report = Path(report)
    for name, paths in (("an input of this run", inputs), ("an image output of this run", outputs)):
        clash = next((p for p in paths if _same_path(report, p)), None)
        if clash is not None:
            raise ValueError(f"--report {report}: is {name} ({clash}); choose another report file")
    if report.is_dir():
        raise ValueError(f"--report {report}: is a folder; name a file such as {report / 'report.json'}")
    if not overwrite and (report.exists() or report.is_symlink()):
        raise ValueError(f"--report {report}: already exists; choose another report file, or pass --overwrite "
                         "to replace it")
    folder = report.absolute().parent
    if not folder.is_dir():
        raise ValueError(f"--report {report}: the folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--report {report}: the folder {folder} is not writable; choose another report file")
    return report


def _prepare_folder(folder: Path, *, create: bool) -> None:
    """Create the output folder (when ``create``), check that it can be written, and remove the temporaries that a
    killed run left there. A missing folder that is not to be created is left to ``check_output_path``."""
    if not create and not folder.is_dir():
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        raise ValueError(f"{folder}: cannot create the output folder: a part of its path is a file; "
                         "choose another output folder") from error
    except OSError as error:
        raise ValueError(f"{folder}: cannot create the output folder ({error.strerror or error}); "
                         "choose a folder you can write to") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{folder}: the output folder is not writable; fix its permissions or choose another")
    for stale in imagefiles.remove_stale_temporaries(folder):
        logger.info("%s: removed a temporary file left by an interrupted run", stale)


def plan_batch(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    overwrite: bool = False,
    skip_existing: bool = False,
    report: str | os.PathLike | None = None,
) -> BatchPlan:
    """Every check that needs no pixels, before any work: the inputs, their outputs (an output shared by two
    inputs, equal to its input or, without ``overwrite``, existing fails that input; with ``skip_existing`` an
    existing output skips it), the ``report`` path, and the output folders (created; stale temporaries removed)."""
    if overwrite and skip_existing:
        raise ValueError("--overwrite and --skip-existing contradict each other; pass one of them")
    files, failures, skipped = collect_inputs(inputs)
    plan = BatchPlan([], failures, skipped, overwrite, skip_existing)
    if not files:
        return plan
    targets = plan_outputs(inputs, files, output)
    folders = dict.fromkeys(target.absolute().parent for target in targets)
    if report is not None:
        check_report_path(report, [*map(Path, inputs), *files], targets, overwrite=overwrite)
        folders.setdefault(Path(report).absolute().parent)
    for folder in folders:
        _prepare_folder(folder, create=targets != [Path(output)])
    seen: dict[Path, Path] = {}
    for source, target in zip(files, targets, strict=True):
        key = target.absolute()
        if key in seen:
            plan.failures.append(Failure(str(source), f"{source}: its output {target} is also the output of "
                                         f"{seen[key]}; rename one of them"))
            continue
        seen[key] = source
        if skip_existing and (target.exists() or target.is_symlink()):
            plan.skipped.append(Skipped(str(source), OUTPUT_EXISTS))
            continue
        try:
            imagefiles.check_output_path(target, source=source, overwrite=overwrite)
        except ValueError as error:
            plan.failures.append(Failure(str(source), str(error)))
            continue
        plan.pairs.append((source, target))
    return plan
