"""``spc-fast data {build,import,check}``: argparse for the data commands lives here; ``main(argv)`` runs one.

Bad records are printed one per line as ``FILE:LINE: KIND: message``; with ``--skip-bad`` the command goes on
without them and says how many it left out, else it stops. An error ends the command with one line on stderr and
exit status 1 (``data check``: 1 when it found any problem).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from spc_fast.imagefiles import ImageError
from spc_fast.training.data.build import DEFAULT_MAX_SIDE, build
from spc_fast.training.data.importers import import_iqa, import_pairs, merge_annotations
from spc_fast.training.data.manifest import ManifestError, Problem, manifest_path, read_manifest, write_manifest

PROG = "spc-fast data"


def _whole(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Make, import and check training data.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    skip = argparse.ArgumentParser(add_help=False)
    skip.add_argument("--skip-bad", action="store_true", help="go on without bad inputs (each is listed, all counted)")

    made = commands.add_parser("build", parents=[skip], help="synthesise pairs from a folder of good photos")
    made.add_argument("--photos", type=Path, required=True, metavar="DIR", help="folder of good photos (the targets)")
    made.add_argument("--out", type=Path, required=True, metavar="DATA", help="new data folder to write")
    made.add_argument("--pairs", type=_whole(1), default=1000, metavar="N", help="pairs to make (default 1000)")
    made.add_argument("--seed", type=_whole(0), default=0, metavar="S", help="seed (default 0)")
    made.add_argument(
        "--workers",
        type=_whole(1),
        default=1,
        metavar="K",
        help="processes (default 1); the result does not depend on it",
    )
    made.add_argument(
        "--max-side",
        type=_whole(8),
        default=DEFAULT_MAX_SIDE,
        metavar="PX",
        help=f"resize photos to at most PX on the long side (default {DEFAULT_MAX_SIDE})",
    )
    made.add_argument("--no-annotate", action="store_true", help="write no critic annotations")

    imports = commands.add_parser("import", help="add records from paired folders, an IQA table or annotations")
    kinds = imports.add_subparsers(dest="kind", required=True, metavar="KIND")
    pairs = kinds.add_parser("pairs", parents=[skip], help="FOLDER/input and FOLDER/target with matching names")
    pairs.add_argument("folder", type=Path, metavar="FOLDER")
    pairs.add_argument("--task", choices=("retouch", "restore"), default="retouch", help="task of the pairs")
    pairs.add_argument("--prefix", default="", help="prefix of the record ids (default: none; ids are file names)")
    iqa = kinds.add_parser("iqa", parents=[skip], help="a CSV table of images and their MOS")
    iqa.add_argument("table", type=Path, metavar="TABLE")
    iqa.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="folder the image paths are relative to (default: the table's folder)",
    )
    iqa.add_argument("--image-column", metavar="NAME", help="column of the image paths (default: found by name)")
    iqa.add_argument("--mos-column", metavar="NAME", help="column of the MOS (default: found by name)")
    iqa.add_argument(
        "--mos-range",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="the MOS scale, rescaled to "
        "0-100 for the annotations' scores (default: the table's lowest and highest MOS; LOW > HIGH "
        "when lower is better)",
    )
    iqa.add_argument("--no-annotate", action="store_true", help="write no critic annotations")
    iqa.add_argument("--workers", type=_whole(1), default=1, metavar="K", help="processes annotating (default 1)")
    notes = kinds.add_parser("annotations", parents=[skip], help='JSONL of {"id" or "image", "text"} annotations')
    notes.add_argument("file", type=Path, metavar="FILE")
    for sub in (pairs, iqa, notes):
        sub.add_argument(
            "--out",
            type=Path,
            required=True,
            metavar="DATA",
            help="data folder whose manifest is extended (created if missing)",
        )

    check = commands.add_parser("check", help="validate a data folder and list every problem")
    check.add_argument("data", type=Path, metavar="DATA", help="data folder or manifest file")
    check.add_argument("--headers-only", action="store_true", help="read image headers, not the whole images")
    return parser


def _report(problems: list[Problem]) -> None:
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)


def _counted(problems: list[Problem]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in Counter(p.kind for p in problems).items())


def _accept(problems: list[Problem], skip_bad: bool) -> None:
    """List the problems; stop unless they may be skipped."""
    _report(problems)
    if problems and not skip_bad:
        raise ManifestError(problems)
    if problems:
        print(f"{PROG}: skipped {len(problems)} bad inputs ({_counted(problems)})", file=sys.stderr)


def _run_build(args: argparse.Namespace) -> int:
    step = -(-args.pairs // 10)  # about ten progress lines

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"{PROG} build: {done}/{total} pairs", file=sys.stderr, flush=True)

    summary = build(
        args.photos,
        args.out,
        pairs=args.pairs,
        seed=args.seed,
        workers=args.workers,
        max_side=args.max_side,
        annotate=not args.no_annotate,
        skip_bad=args.skip_bad,
        progress=progress,
    )
    for path in summary.ignored:
        print(f"{PROG} build: ignored {path} (not an image file)", file=sys.stderr)
    if summary.skipped:
        _report(summary.skipped)
        print(f"{PROG} build: skipped {len(summary.skipped)} unreadable photos", file=sys.stderr)
    kinds = ", ".join(f"{n} {kind}" for kind, n in summary.kinds.items())
    print(f"wrote {summary.manifest}: {summary.records} records ({kinds}) from {summary.photos} photos")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    manifest = manifest_path(args.out)
    existing, problems = read_manifest(manifest, skip_bad=True, check_files=False) if manifest.exists() else ([], [])
    if args.kind == "annotations":
        records, found = merge_annotations(existing, args.file)
    else:
        if args.kind == "pairs":
            new, found = import_pairs(args.folder, task=args.task, prefix=args.prefix)
        else:
            new, found = import_iqa(
                args.table,
                images=args.images,
                image_column=args.image_column,
                mos_column=args.mos_column,
                mos_range=args.mos_range,
                annotate=not args.no_annotate,
                workers=args.workers,
            )
        taken = {r.id for r in existing}
        records = list(existing)
        for record in new:
            if record.id in taken:
                found.append(Problem(record.input, None, "duplicate id", f"id {record.id!r} is in {manifest} already"))
            else:
                taken.add(record.id)
                records.append(record)
    _accept(problems + found, args.skip_bad)
    write_manifest(manifest, records)
    print(f"wrote {manifest}: {len(records)} records ({len(records) - len(existing)} new)")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    records, problems = read_manifest(args.data, skip_bad=True, decode=not args.headers_only)
    _report(problems)
    tasks = ", ".join(f"{n} {task}" for task, n in Counter(r.task for r in records).items()) or "none"
    annotated = sum(r.annotation is not None for r in records)
    bad = f"; {len(problems)} bad ({_counted(problems)})" if problems else ""
    print(f"{manifest_path(args.data)}: {len(records)} good records ({tasks}; {annotated} annotated){bad}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast data``; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    run = {"build": _run_build, "import": _run_import, "check": _run_check}[args.command]
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImageError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
