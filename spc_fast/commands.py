"""The bodies of the ``spc-fast`` subcommands (``cli`` parses the flags and resolves the configuration).

Heavy modules (torch, the image files, the models) are imported inside the command that needs them, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

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
    from spc_fast.imagefiles import load_tensor

    rows, failures = [], []
    for path in args.images:
        try:
            image = load_tensor(path)
            values = photometric.attributes(image).tolist()
        except ValueError as error:
            failures.append(str(error))
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


def run_enhance(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Critique each image and execute the critique. Without model directories the analytic critic judges and
    the rule-based operators execute the tone/colour suggestions (no weights needed); --critic DIR makes the
    Qwen2.5-VL critic judge, and --artist DIR makes the Qwen-Image-Edit artist execute, conditioned on the critic's
    hidden states. IN may be files or folders (their images, not recursive); OUT is the output file for a single
    input file, else a folder keeping the input names. Outputs keep the input size and EXIF; 16-bit sources are
    written as 16-bit PNG. Failing images are listed at the end (exit status 1); the others are written."""
    from spc_fast import batch
    from spc_fast.pipeline import Pipeline

    progress = None
    if len(args.inputs) > 1 or any(p.is_dir() for p in args.inputs):
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="enhance", unit="image", file=sys.stderr, disable=len(items) < 2)

    pipeline = Pipeline.from_config(config)
    description = describe(pipeline, config)
    logger.info("pipeline: %s", json.dumps(description))
    result = batch.enhance_files(
        args.inputs, args.output, pipeline=pipeline, overwrite=args.overwrite, progress=progress,
        batch_size=config.batch_size,
    )
    for item in result.written:
        score = f"score {_score(item['critique']['score'])}"
        if config.rescore:
            score += f" -> {_score(item['score_after'])}"
        edits = "; ".join(item["critique"]["suggestions"]) or "no edit"
        print(f"{item['input']} -> {item['output']}: {score}; {edits}")
        if item.get("truncated"):
            print(f"{PROG}: warning: {item['input']}: the critic's answer hit the token limit and was cut off",
                  file=sys.stderr)
    if args.report is not None:
        batch.write_report(args.report, {"version": version(), **description, **result.to_json()})
        print(f"wrote {args.report}")
    total = len(result.written) + len(result.failures)
    return report_failures([f.error for f in result.failures], total)


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
    from spc_fast.imagefiles import load_tensor
    from spc_fast.pipeline import Pipeline

    critic = Pipeline.from_config(config).critic
    failures = []
    for path in args.images:
        try:
            judgement = critic.critique([load_tensor(path)])
        except ValueError as error:
            failures.append(str(error))
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
    IN's EXIF (orientation reset) and writing an sRGB profile when IN had one. 16-bit sources are processed in
    float32 and written as 16-bit when OUT is a PNG, as 8-bit otherwise."""
    import torch

    from spc_fast import imagefiles, photometric, retouch
    from spc_fast.batch import output_bit_depth

    imagefiles.check_output_path(args.output, source=args.input, overwrite=args.overwrite)
    image = imagefiles.load_tensor(args.input)
    edited = retouch.apply(
        image.unsqueeze(0),
        exposure=args.exposure,
        contrast=args.contrast,
        saturation=args.saturation,
        temperature=args.temperature,
    )[0]
    bit_depth = output_bit_depth(image, args.output)
    if image.is_floating_point() and bit_depth == 8:
        logger.info("%s: 16-bit source written as 8-bit (16-bit output needs a .png name)", args.output)
    imagefiles.save_image(args.output, edited, source=args.input, overwrite=args.overwrite, bit_depth=bit_depth)
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
