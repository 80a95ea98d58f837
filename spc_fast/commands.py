"""The bodies of the ``spc-fast`` subcommands (``cli`` parses the flags and resolves the configuration).

Heavy modules (torch, the image files, the models) are imported inside the command that needs them, so ``--help``
answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from spc_fast.batch_command import PROG, run_files
from spc_fast.config import PipelineConfig

logger = logging.getLogger("spc_fast")

_COLUMNS = (
    ("exposure", "exposure"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("cct", "cct (K)"),
)


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
    from spc_fast.pipeline import Pipeline

    return run_files(args, config, lambda: Pipeline.from_config(config))


def run_edit(args: argparse.Namespace, config: PipelineConfig) -> int:
    """Edit each image as the instruction says (the release's manual mode), e.g. --instruction "slightly increase
    light&exposure; remove haze": phrases of the critic's suggestion language separated by ";" or new lines
    (increase/decrease light&exposure, contrast, saturation; change color temperature to warmer/cooler; remove
    blur, noise, haze, moire, shadow, compression artifacts; enhance low light; each slightly, moderately or
    significantly). Without model directories the rule-based operators execute the tone/colour edits and
    restoration edits are reported as not executed; --critic DIR --artist DIR make the Qwen-Image-Edit artist
    execute every edit, conditioned on the critic's hidden states of the image and the instruction (no answer is
    generated). An instruction that is not understood is refused before any image is read. Files, folders,
    outputs, --overwrite, --skip-existing, --report and interrupts work as for enhance."""
    from spc_fast.critic.format import suggestion_phrase
    from spc_fast.critic.vocabulary import TONE_OPS
    from spc_fast.instruct import InstructionCritic
    from spc_fast.pipeline import Pipeline

    given = InstructionCritic(_read_instruction(args))  # a bad instruction fails here, before any file is touched
    instruction = given.instruction
    if config.rescore:
        raise ValueError("rescore is set, but edit follows an instruction and no critic judges the result; "
                         "drop --set rescore=true (or rescore from the config file)")
    neural = config.artist.weights is not None
    if config.critic.weights is not None and not neural:
        raise ValueError("--critic without --artist: in edit mode the critic only conditions the diffusion "
                         "artist; add --artist DIR, or drop --critic to run the rule-based operators")
    untouched = [suggestion_phrase(s) for s in given.output.suggestions if s.op not in TONE_OPS]
    if untouched and not neural:
        print(f"{PROG}: warning: not executed without the neural artist: {'; '.join(untouched)} (the rule-based "
              "operators do tone and colour only; add --critic DIR --artist DIR)", file=sys.stderr)

    def build() -> Pipeline:
        built = Pipeline.from_config(config)
        return Pipeline(InstructionCritic(instruction, built.critic if neural else None), built.artist)

    # the format reward scores a generated critic answer, and edit generates none
    return run_files(args, config, build, scored=False, header={"instruction": instruction},
                     drop_rewards=("format",))


def _read_instruction(args: argparse.Namespace) -> str:
    if args.instruction is not None:
        return args.instruction
    try:
        return args.instruction_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"--instruction-file {args.instruction_file}: not UTF-8 text ({error.reason}); save it "
                         "as UTF-8") from None


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
