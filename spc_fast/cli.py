"""The ``spc-fast`` command line: ``enhance``, ``critique``, ``analyze``, ``retouch`` and ``bench``.

argparse lives here and only here; each subcommand maps its flags onto the library's public functions.
Heavy modules (torch, the image I/O, the benchmarks) are imported inside the subcommand that needs them, so
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger("spc_fast")

PROG = "spc-fast"
ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "xformers")  # spc_fast.attention.BACKENDS, without importing torch
# flags that only mean something with the model they configure, and their defaults
_CRITIC_FLAGS = {"attention": "auto", "compile": False, "max_new_tokens": 512, "device": None, "dtype": None}
_ARTIST_FLAGS = {"release": None, "steps": 20, "seed": 0, "pixels": 1024 * 1024}
_COLUMNS = (
    ("exposure", "exposure"),
    ("contrast", "contrast"),
    ("saturation", "saturation"),
    ("cct", "cct (K)"),
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spc-fast")
    except PackageNotFoundError:
        return "unknown"


def _score(value: float | None) -> str:
    # a neural critic may answer without a parseable score
    return "?" if value is None or value != value else f"{value:.0f}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="SmartPhotoCrafter, fast: measure and retouch photographs."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what runs and why")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enhance = commands.add_parser(
        "enhance", help="critique and edit images (analytic or neural critic, rule or diffusion artist)",
        description=_enhance.__doc__,
    )
    enhance.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders of images")
    enhance.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT",
        help="output file (one input file) or folder (several inputs or a folder; created if missing)",
    )
    enhance.add_argument("--report", type=Path, metavar="JSON", help="write each image's critique, attributes "
                         "before/after and rewards to this JSON file")
    enhance.add_argument("--overwrite", action="store_true", help="replace existing outputs (even the inputs)")
    enhance.add_argument("--batch", type=_at_least(1), default=1, metavar="N", help="images enhanced together "
                         "(default 1); the neural models batch the images of one size")
    _model_arguments(enhance, artist=True)
    enhance.set_defaults(run=_enhance)

    critique = commands.add_parser(
        "critique", help="print the critic's tagged answer for images", description=_critique.__doc__
    )
    critique.add_argument("images", nargs="+", type=Path, metavar="IMG")
    _model_arguments(critique, artist=False)
    critique.set_defaults(run=_critique)

    analyze = commands.add_parser(
        "analyze", help="print the photometric attributes of images", description=_analyze.__doc__
    )
    analyze.add_argument("images", nargs="+", type=Path, metavar="IMG")
    analyze.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    analyze.set_defaults(run=_analyze)

    retouch = commands.add_parser(
        "retouch", help="apply rule-based tone/colour edits to one image", description=_retouch.__doc__
    )
    retouch.add_argument("input", type=Path, metavar="IN")
    retouch.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    retouch.add_argument("--exposure", type=float, default=0.0, metavar="EV", help="stops (default 0)")
    retouch.add_argument(
        "--contrast", type=float, default=1.0, metavar="C", help="L* stretch, > 0 (default 1)"
    )
    retouch.add_argument(
        "--saturation", type=float, default=1.0, metavar="S", help="chroma scale, >= 0 (default 1)"
    )
    retouch.add_argument(
        "--temperature", type=float, default=0.0, metavar="MIRED", help="mired shift, + is warmer (default 0)"
    )
    retouch.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    retouch.set_defaults(run=_retouch)

    commands.add_parser(
        "bench", help="run the benchmarks (all further arguments go to the benchmark runner)", add_help=False
    )
    return parser


def _analyze(args: argparse.Namespace) -> int:
    """Load each image and print its photometric attributes (exposure = mean L*, contrast = std of L*,
    saturation = mean chroma, cct in kelvin). A file that fails is reported at the end; the rest still run."""
    from spc_fast import photometric
    from spc_fast.io import load_tensor

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
    return _report_failures(failures, len(args.images))


def _report_failures(failures: list[str], total: int) -> int:
    for failure in failures:
        print(f"{PROG}: error: {failure}", file=sys.stderr)
    if failures:
        print(f"{PROG}: {len(failures)} of {total} images failed", file=sys.stderr)
    return 1 if failures else 0


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _model_arguments(parser: argparse.ArgumentParser, *, artist: bool) -> None:
    group = parser.add_argument_group("neural models (local directories only; nothing is downloaded)")
    group.add_argument("--critic", type=Path, metavar="DIR",
                       help="Qwen2.5-VL critic in the release layout (vlm/, optional vlm_lora/)")
    if artist:
        group.add_argument("--artist", type=Path, metavar="DIR",
                           help="diffusers Qwen-Image-Edit-2509 directory (transformer/, vae/, scheduler/); needs "
                           "--critic")
        group.add_argument("--release", type=Path, metavar="DIR", help="directory with the release's "
                           "dit.safetensors and dit_lora/ (default: the --artist directory)")
        group.add_argument("--steps", type=_at_least(2), default=_ARTIST_FLAGS["steps"], metavar="N",
                           help="sampling steps (default 20)")
        group.add_argument("--seed", type=int, default=_ARTIST_FLAGS["seed"],
                           help="base seed; each image's noise comes from it and the "
                           "image's pixels, so an edit does not depend on the other inputs (default 0)")
        group.add_argument("--pixels", type=_at_least(256), default=_ARTIST_FLAGS["pixels"], metavar="N",
                           help="the artist generates at about N pixels, sides multiples of 16, then resizes to the "
                           "input size (default 1048576, the model's ~1 MP)")
    group.add_argument("--attention", default=_CRITIC_FLAGS["attention"], choices=ATTENTION_BACKENDS,
                       help="attention backend of both models (default auto: flash-attn when it can run, else SDPA)")
    group.add_argument("--compile", action="store_true", help="torch.compile the decode step and the DiT")
    group.add_argument("--max-new-tokens", type=_at_least(1), default=_CRITIC_FLAGS["max_new_tokens"], metavar="N",
                       help="critic answer length cap (default 512)")
    group.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    group.add_argument("--dtype", choices=("bfloat16", "float16", "float32"),
                       help="model precision (default: bfloat16 on CUDA, float32 on the CPU)")


def _neural_options(args: argparse.Namespace) -> dict:
    import torch

    dtype = getattr(torch, args.dtype) if args.dtype else None
    return {"device": args.device, "dtype": dtype, "attention": args.attention, "compile": args.compile}


def _check_unused(args: argparse.Namespace, flags: dict[str, object], model: str) -> None:
    """A model flag given without the model it configures is an error, not silently ignored."""
    if getattr(args, model) is not None:
        return
    given = [f"--{f.replace('_', '-')}" for f, default in flags.items() if getattr(args, f) != default]
    if given:
        raise ValueError(f"{', '.join(given)} configure the neural {model}; add --{model} DIR or drop them")


def _pipeline(args: argparse.Namespace):
    """The pipeline the flags ask for, and its description for the report."""
    import dataclasses

    from spc_fast.pipeline import DiffusionArtist, Pipeline, RuleArtist

    if args.artist is not None and args.critic is None:
        raise ValueError("--artist needs --critic DIR: the artist is conditioned on the neural critic's hidden states")
    _check_unused(args, _ARTIST_FLAGS, "artist")
    _check_unused(args, _CRITIC_FLAGS, "critic")
    if args.critic is None:
        pipeline = Pipeline()
        return pipeline, {"critic": "AnalyticCritic", "artist": "RuleArtist",
                          "critic_config": dataclasses.asdict(pipeline.critic.config)}
    from spc_fast.models import factory

    options = _neural_options(args)
    critic = factory.load_critic(args.critic, max_new_tokens=args.max_new_tokens, **options)
    config = {"critic": "ImageCritic", "critic_dir": str(args.critic), "critic_attention": critic.attention}
    if args.artist is None:
        artist = RuleArtist()
        config["artist"] = "RuleArtist"
    else:
        photo_artist = factory.load_artist(args.artist, release=args.release, **options)
        artist = DiffusionArtist(photo_artist, num_steps=args.steps, target_pixels=args.pixels, seed=args.seed)
        config.update(artist="DiffusionArtist", artist_dir=str(args.artist), artist_attention=photo_artist.attention,
                      steps=args.steps, seed=args.seed)
    logger.info("models: %s", ", ".join(f"{k} {v}" for k, v in config.items()))
    return Pipeline(critic, artist), config


def _enhance(args: argparse.Namespace) -> int:
    """Critique each image and execute the critique. Without model directories the analytic critic judges and
    the rule-based operators execute the tone/colour suggestions (no weights needed); --critic DIR makes the
    Qwen2.5-VL critic judge, and --artist DIR makes the Qwen-Image-Edit artist execute, conditioned on the critic's
    hidden states. IN may be files or folders (their images, not recursive); OUT is the output file for a single
    input file, else a folder keeping the input names. Outputs keep the input size and EXIF; 16-bit sources are
    written as 16-bit PNG. Failing images are listed at the end (exit status 1); the others are written."""
    from spc_fast import batch

    progress = None
    if len(args.inputs) > 1 or any(p.is_dir() for p in args.inputs):
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc="enhance", unit="image", file=sys.stderr, disable=len(items) < 2)

    pipeline, config = _pipeline(args)
    result = batch.enhance_files(
        args.inputs, args.output, pipeline=pipeline, overwrite=args.overwrite, progress=progress,
        batch_size=args.batch,
    )
    for item in result.written:
        score, after = item["critique"]["score"], item["score_after"]
        edits = "; ".join(item["critique"]["suggestions"]) or "no edit"
        print(f"{item['input']} -> {item['output']}: score {_score(score)} -> {_score(after)}; {edits}")
    if args.report is not None:
        batch.write_report(args.report, {"version": _version(), **config, **result.to_json()})
        print(f"wrote {args.report}")
    total = len(result.written) + len(result.failures)
    return _report_failures([f.error for f in result.failures], total)


def _critique(args: argparse.Namespace) -> int:
    """Print each image's critique in the release's tag format (<think>, <edit_start>, <answer>): the analytic
    critic's, or with --critic DIR the Qwen2.5-VL critic's answer as generated (a malformed answer is printed as
    is and its parse errors go to stderr). A file that fails is reported at the end; the rest still run."""
    from spc_fast.critic.format import render
    from spc_fast.io import load_tensor

    _check_unused(args, _CRITIC_FLAGS, "critic")
    if args.critic is None:
        from spc_fast.critic.analytic import AnalyticCritic

        analytic = AnalyticCritic()

        def answer(image):
            return render(analytic.critique([image])[0]), []
    else:
        from spc_fast.models import factory

        critic = factory.load_critic(args.critic, max_new_tokens=args.max_new_tokens, **_neural_options(args))

        def answer(image):
            critique = critic.critique([image])
            return critique.texts[0], critique.outputs[0].errors

    failures = []
    for path in args.images:
        try:
            text, errors = answer(load_tensor(path))
        except ValueError as error:
            failures.append(str(error))
            continue
        if len(args.images) > 1:
            print(f"== {path}")
        print(text)
        for error in errors:
            print(f"{PROG}: warning: {path}: critic answer: {error}", file=sys.stderr)
    return _report_failures(failures, len(args.images))


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


def _retouch(args: argparse.Namespace) -> int:
    """Apply exposure (EV), contrast, saturation and temperature (mired) edits to IN and write OUT, keeping
    IN's EXIF (orientation reset) and writing an sRGB profile when IN had one. 16-bit sources are processed in
    float32 and written as 16-bit when OUT is a PNG, as 8-bit otherwise."""
    import torch

    from spc_fast import io, photometric, retouch
    from spc_fast.batch import output_bit_depth

    io.check_output_path(args.output, source=args.input, overwrite=args.overwrite)
    image = io.load_tensor(args.input)
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
    io.save_image(args.output, edited, source=args.input, overwrite=args.overwrite, bit_depth=bit_depth)
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


def _bench(argv: list[str]) -> int:
    from spc_fast.bench import runner

    return runner.main(argv)


def _split_bench(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """Everything after ``bench`` goes to the benchmark runner as is (argparse would reorder its flags)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return (argv[: i + 1], argv[i + 1 :]) if arg == "bench" else (argv, None)
    return argv, None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast`` and ``python -m spc_fast``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, bench_argv = _split_bench(argv)
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    try:
        if bench_argv is not None:
            return _bench(bench_argv)
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:  # bad input or an incomplete model directory
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
