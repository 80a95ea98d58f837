"""The bodies of the ``spc-fast`` subcommands (``cli`` parses the flags and resolves the configuration).

Heavy modules (torch, the image files, the models) are imported inside the command that needs them, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from spc_fast.config import PipelineConfig

logger = logging.getLogger("spc_fast")

PROG = "spc-fast"
_COLUMNS = (
    ("exposure", "exposure"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("cct", "cct (K)"),
)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spc-fast")
    except PackageNotFoundError:
        return "unknown"


def _score(value: float | None) -> str:
    # a neural critic may answer without a parseable score
    return "?" if value is None or value != value else f"{value:.0f}"


def run_analyze(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Load each image and print its photometric attributes (exposure = mean L*, contrast = std of L*,
    saturation = mean chroma, cct in kelvin). A file that fails is reported at the end; the rest still run."""
    from spc_fast import photometric
    from spc_fast.batch import failure_message
    from spc_fast.imagefiles import load_tensor

    rows, failures = [], []
    for path in args.images:
        try:
            image = load_tensor(path)
            values = photometric.attributes(image).tolist()
        except Exception as error:
            failures.append(failure_message(path, error))
            continue
        attributes = dict(zip(photometric.ATTRIBUTE_NAMES, values, strict=True))
        rows.append(
            {"file": str(path), "width": image.shape[2], "height": image.shape[1], "attributes": attributes}
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(_table(rows))
    return report_failures(failures, len(args.images))


def report_failures(failures: list[str], total: int) -> int:
    for failure in failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    if failures:
        print(f"{PROG}: {len(failures)} of {total} images failed", file=sys.stderr)
    return 1 if failures else 0


class Terminated(KeyboardInterrupt):
    """A termination signal (SIGTERM) turned into an exception by the command line, so that a run stops as it does
    on Ctrl-C: the file being written is cleaned up, the summary printed and the report written."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupted_status(stop: KeyboardInterrupt) -> tuple[str, int]:
    """The name of what stopped a run and the exit status for it: SIGINT (Ctrl-C) 130, SIGTERM 143."""
    signum = stop.signum if isinstance(stop, Terminated) else signal.SIGINT
    return signal.Signals(signum).name, 128 + signum


def run_enhance(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Critique each image and execute the critique. Without model directories the analytic critic judges and
    the rule-based operators execute the tone/colour suggestions (no weights needed); --critic DIR makes the
    Qwen2.5-VL critic judge, and --artist DIR makes the Qwen-Image-Edit artist execute, conditioned on the critic's
    hidden states. IN may be files or folders (the files Pillow reads, not recursive); OUT is the output file for
    a single input file, else a folder keeping the input names (a format that is read but not written, such as
    BMP or GIF, becomes PNG). Outputs keep the input size, EXIF and
    transparency; 16-bit sources are written as 16-bit PNG or TIFF. An existing output is never replaced without
    --overwrite; --skip-existing resumes an interrupted run. A failing image is reported as it happens (exit
    status 1) and the others are written; Ctrl-C or SIGTERM stops after cleaning up (exit status 130 or 143)."""
    from spc_fast import batch
    from spc_fast.pipeline import Pipeline

    plan = batch.plan_batch(args.inputs, args.output, overwrite=args.overwrite, skip_existing=args.skip_existing,
                            report=args.report)
    _summarise_skipped_entries(plan.skipped)
    progress = _Progress(plan, config.rescore)
    for failure in plan.failures:  # before the models load: they may take minutes
        progress(failure)
    result = batch.BatchResult.from_plan(plan)
    status, description = 0, {}
    try:
        if plan.pairs:
            pipeline = Pipeline.from_config(config)
            description = describe(pipeline, config)
            logger.info("pipeline: %s", json.dumps(description))
            batch.run_batch(plan, pipeline, batch_size=config.batch_size, on_file=progress, result=result)
    except KeyboardInterrupt as stop:
        name, status = interrupted_status(stop)
        result.stop(plan, name)
    if args.report is not None:
        try:
            payload = {"version": version(), **description, **result.to_json()}
            batch.write_report(args.report, payload, overwrite=args.overwrite)
            print(f"wrote {args.report}")
        except ValueError as error:  # the per-image lines are already out; say this and finish the summary
            print(f"{PROG}: error: --report: {error}", file=sys.stderr)
            status = status or 1
    _print_summary(result)
    return status or (1 if result.failures else 0)


class _Progress:
    """Prints each file's outcome as it finishes: written images on stdout, failures on stderr."""

    def __init__(self, plan, rescore: bool):
        self.total, self.rescore, self.done = len(plan.pairs) + len(plan.failures), rescore, 0

    def __call__(self, entry) -> None:
        from spc_fast.batch import Failure, Skipped

        self.done += 1
        counter = f"[{self.done}/{self.total}] " if self.total > 1 else ""
        if isinstance(entry, Skipped):  # its output appeared while it was being enhanced
            print(f"{counter}{entry.path}: skipped: {entry.reason}", flush=True)
            return
        if isinstance(entry, Failure):
            print(f"{PROG}: error: {entry.error}", file=sys.stderr, flush=True)
            return
        score = f"score {_score(entry['critique']['score'])}"
        if self.rescore:
            score += f" -> {_score(entry['score_after'])}"
        edits = "; ".join(entry["critique"]["suggestions"]) or "no edit"
        print(f"{counter}{entry['input']} -> {entry['output']}: {score}; {edits}", flush=True)
        if entry.get("truncated"):
            print(f"{PROG}: warning: {entry['input']}: the critic's answer hit the token limit and was cut off",
                  file=sys.stderr)


def _summarise_skipped_entries(skipped) -> None:
    """One line per input folder with entries that are not images, and one for the outputs that exist."""
    from collections import Counter, defaultdict

    from spc_fast.batch import OUTPUT_EXISTS

    by_folder: dict[str, Counter] = defaultdict(Counter)
    for entry in skipped:
        logger.info("%s: skipped: %s", entry.path, entry.reason)
        by_folder["" if entry.reason == OUTPUT_EXISTS else str(Path(entry.path).parent)][entry.reason] += 1
    existing = by_folder.pop("", Counter())[OUTPUT_EXISTS]
    if existing:
        images = "image" if existing == 1 else "images"
        print(f"{PROG}: skipping {existing} {images} whose output exists (--skip-existing)", file=sys.stderr)
    for folder, reasons in by_folder.items():
        counts = ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        more = "" if logger.isEnabledFor(logging.INFO) else "; -v lists them"
        print(f"{PROG}: {folder}: skipped {reasons.total()} entries ({counts}){more}", file=sys.stderr)


def _print_summary(result) -> None:
    from spc_fast.batch import OUTPUT_EXISTS

    counts = [f"{len(result.written)} written", f"{len(result.failures)} failed"]
    existing = sum(entry.reason == OUTPUT_EXISTS for entry in result.skipped)
    if existing:
        counts.append(f"{existing} skipped (output exists)")
    total = len(result.written) + len(result.failures) + existing + len(result.not_started)
    if result.interrupted:
        counts.append(f"{len(result.not_started)} not started")
        print(f"{PROG}: interrupted by {result.interrupted}: {', '.join(counts)}; run the same command with "
              "--skip-existing to finish", file=sys.stderr)
    elif result.failures:
        print(f"{PROG}: {len(result.failures)} of {total} images failed ({', '.join(counts)})", file=sys.stderr)
    elif total > 1 or existing:
        print(f"{PROG}: {', '.join(counts)}", file=sys.stderr)


def describe(pipeline, config: PipelineConfig) -> dict[str, object]:
    """What ran, for the report and the log: the parts, the backends they picked and the resolved config."""
    import dataclasses

    from spc_fast.config import to_dict

    out: dict[str, object] = {"critic": type(pipeline.critic).__name__, "artist": type(pipeline.artist).__name__}
    if dataclasses.is_dataclass(getattr(pipeline.critic, "config", None)) and config.critic.weights is None:
        out["critic_config"] = dataclasses.asdict(pipeline.critic.config)
    for role in ("critic", "artist"):
        model = getattr(pipeline, role)
        model = getattr(model, "artist", model)  # the DiffusionArtist's PhotoArtist
        if hasattr(model, "attention"):
            out[f"{role}_attention"] = model.attention
    out["config"] = to_dict(config)
    return out


def run_critique(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Print each image's critique in the release's tag format (<think>, <edit_start>, <answer>): the analytic
    critic's, or with --critic DIR the Qwen2.5-VL critic's answer as generated (a malformed answer is printed as
    is and its parse errors go to stderr). A file that fails is reported at the end; the rest still run."""
    from spc_fast.batch import failure_message
    from spc_fast.imagefiles import load_tensor
    from spc_fast.pipeline import Pipeline

    critic = Pipeline.from_config(config).critic
    failures = []
    for path in args.images:
        try:
            judgement = critic.critique([load_tensor(path)])
        except Exception as error:
            failures.append(failure_message(path, error))
            continue
        if len(args.images) > 1:
            print(f"== {path}")
        print(judgement.texts[0])
        for error in judgement.outputs[0].errors:
            print(f"{PROG}: warning: {path}: critic answer: {error}", file=sys.stderr)
        if judgement.truncated[0]:
            print(f"{PROG}: warning: {path}: the answer hit the token limit and was cut off", file=sys.stderr)
    return report_failures(failures, len(args.images))


def _format_attributes(attributes: dict[str, float]) -> list[str]:
    return [f"{attributes[name]:.0f}" if name == "cct" else f"{attributes[name]:.2f}" for name, _ in _COLUMNS]


def _table(rows: list[dict]) -> str:
    header = ["file", "size", *(title for _, title in _COLUMNS)]
    body = [
        [row["file"], f"{row['width']}x{row['height']}", *_format_attributes(row["attributes"])]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = []
    for line in [header, *body]:
        cells = [
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_retouch(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Apply exposure (EV), contrast, saturation and temperature (mired) edits to IN and write OUT, keeping
    IN's EXIF (orientation reset), its transparency, and writing an sRGB profile when IN had one. 16-bit sources
    are processed in float32 and written as 16-bit when OUT is a PNG or TIFF, as 8-bit otherwise."""
    import torch

    from spc_fast import imagefiles, photometric, retouch
    from spc_fast.batch import output_bit_depth

    for name in retouch.RANGES:  # before any reading: a bad value is the flag's problem
        try:
            retouch.check_parameter(name, getattr(args, name))
        except ValueError as error:
            raise ValueError(f"--{error}") from None
    imagefiles.check_output_path(args.output, source=args.input, overwrite=args.overwrite)
    photo = imagefiles.read_photo(args.input)
    image = photo.pixels
    edited = retouch.apply(
        image.unsqueeze(0),
        exposure=args.exposure,
        contrast=args.contrast,
        saturation=args.saturation,
        temperature=args.temperature,
    )[0]
    bit_depth = output_bit_depth(image, args.output)
    if image.is_floating_point() and bit_depth == 8:
        logger.info("%s: 16-bit source written as 8-bit (16-bit output needs a .png or .tif name)", args.output)
    imagefiles.save_image(args.output, edited, source=args.input, overwrite=args.overwrite, bit_depth=bit_depth,
                          alpha=photo.alpha)
    before, after = photometric.attributes(torch.stack([image, edited])).tolist()
    print(_comparison(dict(zip(photometric.ATTRIBUTE_NAMES, zip(before, after, strict=True), strict=True))))
    print(f"wrote {args.output} ({bit_depth}-bit)")
    return 0


def _comparison(pairs: dict[str, tuple[float, float]]) -> str:
    width = max(len(title) for _, title in _COLUMNS)
    lines = [f"{'':<{width}}  {'before':>10}  {'after':>10}"]
    for name, title in _COLUMNS:
        digits = 0 if name == "cct" else 2
        before, after = pairs[name]
        lines.append(f"{title:<{width}}  {before:>10.{digits}f}  {after:>10.{digits}f}")
    return "\n".join(lines)
