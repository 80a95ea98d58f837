"""What the subcommands that run the pipeline over files (``enhance``, ``edit``) share: every check that needs no
pixels before a model loads, one progress line per file as it finishes, the summary, the report (JSON, or a page
with thumbnails for a ``.html`` name), and a clean stop on Ctrl-C or SIGTERM (``Terminated``). ``commands`` holds
the subcommands themselves.

Heavy modules (torch, the image files, the models) are imported inside the functions that need them, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

from spc_fast.config import PipelineConfig

if TYPE_CHECKING:
    from spc_fast.pipeline import Pipeline

logger = logging.getLogger("spc_fast")

PROG = "spc-fast"
HTML_SUFFIXES = (".html", ".htm")  # --report with one of these writes a page (report_html), else JSON


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spc-fast")
    except PackageNotFoundError:
        return "unknown"


def _score(value: float | None) -> str:
    # a neural critic may answer without a parseable score
    return "?" if value is None or value != value else f"{value:.0f}"


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


def run_files(
    args: argparse.Namespace,
    config: PipelineConfig,
    build_pipeline: Callable[[], Pipeline],
    *,
    scored: bool = True,
    header: dict[str, object] | None = None,
    drop_rewards: Collection[str] = (),
) -> int:
    """Run the pipeline ``build_pipeline()`` makes over the files that ``args`` names (``inputs``, ``output``,
    ``overwrite``, ``skip_existing``, ``report``, ``batch`` as enhance and edit take them) and return the exit
    status. Every check that needs no pixels runs first and the pipeline is built only when a file is left to do
    (the models may take minutes to load). Each file's outcome is printed as it finishes (``scored``: with the
    critic's score); the report starts with ``header`` and leaves out the rewards named in ``drop_rewards``."""
    from spc_fast import batch

    plan = batch.plan_batch(
        args.inputs, args.output, overwrite=args.overwrite, skip_existing=args.skip_existing, report=args.report
    )
    _summarise_skipped_entries(plan.skipped)
    progress = _Progress(plan, rescore=config.rescore, scored=scored)
    for failure in plan.failures:  # before the models load: they may take minutes
        progress(failure)
    result = batch.BatchResult.from_plan(plan)
    status, description = 0, {}
    try:
        if plan.pairs:
            pipeline = build_pipeline()
            description = describe(pipeline, config)
            logger.info("pipeline: %s", json.dumps(description))
            batch.run_batch(plan, pipeline, batch_size=config.batch_size, on_file=progress, result=result)
    except KeyboardInterrupt as stop:
        name, status = interrupted_status(stop)
        result.stop(plan, name)
    if args.report is not None:
        try:
            report = result.to_json()
            report["images"] = [_without_rewards(record, drop_rewards) for record in report["images"]]
            write_report(args.report, {"version": version(), **(header or {}), **description, **report},
                         overwrite=args.overwrite)
            print(f"wrote {args.report}")
        except ValueError as error:  # the per-image lines are already out; say this and finish the summary
            print(f"{PROG}: error: --report: {error}", file=sys.stderr)
            status = status or 1
    _print_summary(result)
    return status or (1 if result.failures else 0)


def write_report(path: Path, report: dict[str, object], *, overwrite: bool = False) -> Path:
    """Write the run's report in the format its extension names: ``.html`` / ``.htm`` a page with thumbnails
    (``report_html``), anything else JSON."""
    if path.suffix.lower() in HTML_SUFFIXES:
        from spc_fast import report_html

        return report_html.write_report(path, report, overwrite=overwrite)
    from spc_fast import batch

    return batch.write_report(path, report, overwrite=overwrite)


def _without_rewards(record: dict, names: Collection[str]) -> dict:
    if not names:
        return record
    return {**record, "rewards": {name: value for name, value in record["rewards"].items() if name not in names}}


class _Progress:
    """Prints each file's outcome as it finishes: written images on stdout (``scored``: with the critic's score, and
    with the score after when re-scoring), failures on stderr."""

    def __init__(self, plan, *, rescore: bool, scored: bool = True):
        self.total, self.done = len(plan.pairs) + len(plan.failures), 0
        self.rescore, self.scored = rescore, scored

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
        edits = "; ".join(entry["critique"]["suggestions"]) or "no edit"
        if self.scored:
            score = f"score {_score(entry['critique']['score'])}"
            if self.rescore:
                score += f" -> {_score(entry['score_after'])}"
            edits = f"{score}; {edits}"
        print(f"{counter}{entry['input']} -> {entry['output']}: {edits}", flush=True)
        if entry.get("truncated"):
            print(
                f"{PROG}: warning: {entry['input']}: the critic's answer hit the token limit and was cut off",
                file=sys.stderr,
            )


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
        print(
            f"{PROG}: interrupted by {result.interrupted}: {', '.join(counts)}; run the same command with "
            "--skip-existing to finish",
            file=sys.stderr,
        )
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
        if getattr(model, "attention", None) is not None:  # a neural model's (the InstructionCritic's may be None)
            out[f"{role}_attention"] = model.attention
    out["config"] = to_dict(config)
    return out
