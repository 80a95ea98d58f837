"""The ``spc-fast`` command line: ``enhance``, ``edit``, ``critique``, ``analyze``, ``retouch``; ``bench``, ``train``,
``data``, ``evaluate``, ``demo``, ``serve`` and ``export`` hand their arguments to their own parsers (``_DELEGATED``).

argparse lives here and in those modules only. Model and pipeline flags map onto
``spc_fast.config.PipelineConfig`` (preset, then ``--config FILE``, then ``--set key=value``, then the flags);
``spc_fast.commands`` runs the subcommands.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from spc_fast import batch_command, commands
from spc_fast.config import ATTENTION_BACKENDS, DTYPES, FULL_RES, PRESETS, PipelineConfig, read_prompts, resolve

logger = logging.getLogger("spc_fast")
PROG = batch_command.PROG
RAY_EXTRA = "pip install 'spc-fast[ray]'"

# flag -> field, for the flags that configure one model (an error without that model) or both
_CRITIC_FLAGS = {"critic": "weights", "max_new_tokens": "max_new_tokens", "critic_prompt": None}  # None: two fields
_ARTIST_FLAGS = {"artist": "weights", "release": "release", "steps": "steps", "seed": "seed", "pixels": "pixels",
                 "full_res": "full_res", "release_mlp": "release_mlp", "engine": "engine"}
_SHARED_FLAGS = ("attention", "compile", "device", "dtype")


def _whole_number(low: int | None = None):
    """An argparse ``type``: a whole number (at least ``low``), else a message that says what was expected."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _number(text: str) -> float:
    """An argparse ``type``: a decimal number (the command checks its range)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _path_or_uri(text: str) -> Path | str:
    """An argparse ``type``: a path, or a URI as typed (``Path`` would fold ``s3://`` into ``s3:/``)."""
    return text if "://" in text else Path(text)


def _model_arguments(parser: argparse.ArgumentParser, *, artist: bool, generates: bool = True) -> None:
    """The configuration and model flags; ``generates``: the critic writes an answer (not in edit mode, which has
    no --max-new-tokens and no --rescore)."""
    config = parser.add_argument_group("configuration (preset, then file, then --set, then the flags below)")
    config.add_argument("--preset", choices=tuple(PRESETS), default="analytic",
                        help="named configuration (default analytic: no weights; tiny: tiny random-weight models)")
    config.add_argument("--config", type=Path, metavar="TOML", help="pipeline configuration file")
    config.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set artist.steps=8 (repeatable)")
    group = parser.add_argument_group("neural models (local directories only; nothing is downloaded)")
    group.add_argument("--critic", metavar="DIR",
                       help="Qwen2.5-VL critic in the release layout (vlm/, optional vlm_lora/), or 'tiny'")
    group.add_argument("--critic-prompt", type=Path, metavar="FILE",
                       help="the critic's system line and analysis instruction: a TOML or JSON file with 'system' and "
                       "'instruction' strings (a release checkpoint was trained with the release's own text)")
    if artist:
        group.add_argument("--artist", metavar="DIR",
                           help="diffusers Qwen-Image-Edit-2509 directory (transformer/, vae/, scheduler/), or "
                           "'tiny'; needs --critic")
        group.add_argument("--release", metavar="DIR", help="directory with the release's dit.safetensors and "
                           "dit_lora/ (default: the --artist directory)")
        group.add_argument("--engine", metavar="DIR", help="an exported DiT step (spc-fast export --out DIR: "
                           "AOTInductor, ONNX or TensorRT) samples in place of the DiT, whose weights are not loaded; "
                           "the VAE (from --artist) and the critic stay PyTorch (--compile compiles the critic). "
                           "Needs --artist, the directory or 'tiny' it was exported from")
        group.add_argument("--steps", type=_whole_number(2), metavar="N", help="sampling steps (default 20)")
        group.add_argument("--seed", type=_whole_number(), help="base seed; each image's noise comes from it and "
                           "the image's pixels, so an edit does not depend on the other inputs (default 0)")
        group.add_argument("--pixels", type=_whole_number(256), metavar="N",
                           help="the artist generates at about N pixels, sides multiples of 16, then resizes to the "
                           "input size (default 1048576, the model's ~1 MP)")
        group.add_argument("--release-mlp", action="store_true", default=None,
                           help="run the DiT's feed-forwards with the release's x*sigmoid(1.702x) activation "
                           "(DiffSynth's, which the release ran) instead of tanh-GELU")
        group.add_argument("--full-res", choices=FULL_RES, help="how the edit reaches the input size: transfer fits "
                           "the edit's local colour transform and applies it to the full-size photo, resize resizes "
                           "the edit (default transfer; restoration edits are always resized)")
        if generates:
            group.add_argument("--rescore", action="store_true", default=None,
                               help="run the critic again on each edit for the score after and the rank reward")
    group.add_argument("--attention", choices=ATTENTION_BACKENDS,
                       help="attention backend of both models (default auto: flash-attn when it can run, else SDPA; "
                       "an explicit backend that cannot run is an error; xformers applies to the artist only)")
    group.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile the decode step and the DiT")
    if generates:
        group.add_argument("--max-new-tokens", type=_whole_number(1), metavar="N",
                           help="critic answer length cap (default 1280, the release's)")
    group.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    group.add_argument("--dtype", choices=DTYPES, help="model precision (default: bfloat16 on CUDA, float32 on CPU)")


def _file_arguments(parser: argparse.ArgumentParser, done: str) -> None:
    """Inputs, output, report and the flags for existing outputs and batching: what enhance and edit share."""
    parser.add_argument("inputs", nargs="+", type=_path_or_uri, metavar="IN", help="image files or folders of images")
    parser.add_argument(
        "-o", "--output", type=_path_or_uri, required=True, metavar="OUT",
        help="output file (one input file) or folder (several inputs or a folder; created if missing)",
    )
    parser.add_argument("--report", type=_path_or_uri, metavar="FILE", help="write each image's critique, attributes "
                        "before/after and rewards, the failures and what was skipped to this file: JSON, or a page "
                        "with thumbnails for a .html name (never an input or an output of the run; an existing file "
                        "only with --overwrite)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs (even the inputs) "
                          "and an existing report")
    existing.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists alone "
                          "(resumes an interrupted folder run)")
    parser.add_argument("--batch", type=_whole_number(1), metavar="N", help=f"images {done} together "
                        "(default 1); the neural models batch the images of one size")


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The configuration the flags ask for; a model flag given without its model is an error, not ignored."""
    config = resolve(args.preset, file=args.config, overrides=args.set)
    if getattr(args, "artist", None) is not None and (args.critic or config.critic.weights) is None:
        raise ValueError("--artist needs --critic DIR: the artist is conditioned on the neural critic's hidden states")

    def given(flags) -> dict[str, object]:
        return {flag: getattr(args, flag) for flag in flags if getattr(args, flag, None) is not None}

    critic = {_CRITIC_FLAGS[f]: str(v) if f == "critic" else v for f, v in given(_CRITIC_FLAGS).items()
              if _CRITIC_FLAGS[f] is not None}
    if getattr(args, "critic_prompt", None) is not None:
        critic.update(read_prompts(args.critic_prompt))
    artist = {_ARTIST_FLAGS[f]: str(v) if f in ("artist", "release") else v for f, v in given(_ARTIST_FLAGS).items()}
    shared = given(_SHARED_FLAGS)
    # an exported engine is compiled already: --compile then compiles the critic alone
    engine = artist.get("engine", config.artist.engine)
    artist_shared = {k: v for k, v in shared.items() if not (k == "compile" and engine)}
    # transformers has no xformers attention: that choice is the artist's alone, and needs an artist
    critic_shared = {k: v for k, v in shared.items() if not (k == "attention" and v == "xformers")}
    if shared.get("attention") == "xformers" and (getattr(args, "artist", None) or config.artist.weights) is None:
        raise ValueError("--attention xformers applies to the diffusion artist only (transformers has no xformers "
                         "attention for the critic); add --artist DIR, or choose auto, sdpa or flash")
    config = dataclasses.replace(
        config,
        critic=dataclasses.replace(config.critic, **critic, **critic_shared),
        artist=dataclasses.replace(config.artist, **artist, **artist_shared),
        **({"rescore": True} if getattr(args, "rescore", None) else {}),
        **({"batch_size": args.batch} if getattr(args, "batch", None) is not None else {}),
    )
    for model, own in (("critic", _CRITIC_FLAGS), ("artist", _ARTIST_FLAGS)):
        if getattr(config, model).weights is None:
            stray = [f"--{f.replace('_', '-')}" for f in [*given(own), *(shared if model == "critic" else ())]]
            if stray:
                raise ValueError(f"{', '.join(stray)} configure the neural {model}; add --{model} DIR or drop them")
    return config


def _run_enhance(args: argparse.Namespace, config: PipelineConfig) -> int:
    """enhance here, or with --ray (and its flags) on a Ray cluster."""
    if args.ray or any(getattr(args, flag) is not None for flag in ("address", "actors", "gpus_per_actor")):
        from spc_fast import ray_batch

        return ray_batch.run_command(args, config)
    return commands.run_enhance(args, config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SmartPhotoCrafter, fast: critique and edit photographs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {batch_command.version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what runs and why")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    enhance = subcommands.add_parser(
        "enhance", help="critique and edit images (analytic or neural critic, rule or diffusion artist)",
        description=commands.run_enhance.__doc__,
    )
    _file_arguments(enhance, "enhanced")
    _model_arguments(enhance, artist=True)
    cluster = enhance.add_argument_group(f"a Ray cluster (needs {RAY_EXTRA})")
    cluster.add_argument("--ray", action="store_true", help="enhance the folder or URI IN (sub-folders included) into "
                         "OUT on Ray Data, keeping relative paths; the report defaults to OUT/report.jsonl")
    cluster.add_argument("--address", metavar="ADDR", help="the cluster (default: $RAY_ADDRESS, else a local one)")
    cluster.add_argument("--actors", type=_whole_number(1), metavar="N", help="pipelines at once (default 1)")
    cluster.add_argument("--gpus-per-actor", type=_number, metavar="G",
                         help="GPUs each pipeline holds (default 1 with neural models, 0 without)")
    enhance.set_defaults(run=_run_enhance)

    edit = subcommands.add_parser(
        "edit", help="edit images as an instruction says (rule or diffusion artist)",
        description=commands.run_edit.__doc__,
    )
    instruction = edit.add_mutually_exclusive_group(required=True)
    instruction.add_argument("--instruction", metavar="TEXT", help='the edits, e.g. "slightly increase '
                             'light&exposure; remove haze" (";" or new lines separate them)')
    instruction.add_argument("--instruction-file", type=Path, metavar="FILE",
                             help="read the instruction from a UTF-8 text file, e.g. one numbered edit per line")
    _file_arguments(edit, "edited")
    _model_arguments(edit, artist=True, generates=False)
    edit.set_defaults(run=commands.run_edit)

    critique = subcommands.add_parser(
        "critique", help="print the critic's tagged answer for images", description=commands.run_critique.__doc__
    )
    critique.add_argument("images", nargs="+", type=Path, metavar="IMG")
    _model_arguments(critique, artist=False)
    critique.set_defaults(run=commands.run_critique)

    analyze = subcommands.add_parser(
        "analyze", help="print the photometric attributes of images", description=commands.run_analyze.__doc__
    )
    analyze.add_argument("images", nargs="+", type=Path, metavar="IMG")
    analyze.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    analyze.set_defaults(run=commands.run_analyze)

    retouch = subcommands.add_parser(
        "retouch", help="apply rule-based tone/colour edits to one image", description=commands.run_retouch.__doc__
    )
    retouch.add_argument("input", type=Path, metavar="IN")
    retouch.add_argument("-o", "--output", type=Path, required=True, metavar="OUT")
    retouch.add_argument("--exposure", type=_number, default=0.0, metavar="EV", help="stops (default 0)")
    retouch.add_argument("--contrast", type=_number, default=1.0, metavar="C", help="L* stretch, > 0 (default 1)")
    retouch.add_argument("--saturation", type=_number, default=1.0, metavar="S", help="chroma scale, >= 0 (default 1)")
    retouch.add_argument(
        "--temperature", type=_number, default=0.0, metavar="MIRED", help="mired shift, + is warmer (default 0)"
    )
    retouch.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    retouch.set_defaults(run=commands.run_retouch)

    for name, help_text in _DELEGATED_HELP.items():
        subcommands.add_parser(name, help=help_text, add_help=False)
    return parser


# Subcommands with their own argument parsers: everything after the name goes to the module's ``main`` as is
# (argparse would reorder their flags).
_DELEGATED = {
    "bench": "spc_fast.bench.runner",
    "train": "spc_fast.training.cli",
    "data": "spc_fast.training.data.cli",
    "evaluate": "spc_fast.evaluate.cli",
    "demo": "spc_fast.demo",
    "serve": "spc_fast.serve.server",
    "export": "spc_fast.export.cli",
}
_DELEGATED_HELP = {
    "bench": "run the benchmarks (spc-fast bench --help)",
    "train": "train a stage: critic-sft, artist-sft, adapt, joint (spc-fast train --help)",
    "data": "build, import and check training data (spc-fast data --help)",
    "evaluate": "score edits against references: PSNR, SSIM, ΔE2000, LPIPS, … (spc-fast evaluate --help)",
    "demo": "degrade a bundled photo and enhance it: before/after image and report (spc-fast demo --help)",
    "serve": "the enhancer as an HTTP service with dynamic batching (spc-fast serve --help)",
    "export": "export the artist's DiT step to AOTInductor, ONNX or TensorRT with a parity manifest "
    "(spc-fast export --help)",
}


def _split_delegated(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(the arguments up to the subcommand, the module a delegated subcommand runs, the arguments after it)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return (argv[: i + 1], _DELEGATED[arg], argv[i + 1 :]) if arg in _DELEGATED else (argv, None, [])
    return argv, None, []


def _stop_on_sigterm() -> Callable[[], object]:
    """Make SIGTERM stop a run as Ctrl-C does (the file being written cleaned up, the summary printed, the report
    written); returns what puts the previous handler back. A handler someone else set (or SIG_IGN) is kept."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return lambda: None

    def stop(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise batch_command.Terminated(signum)

    signal.signal(signal.SIGTERM, stop)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _message(error: BaseException) -> str:
    """One line for an error that ended the command: the file and the problem, never a traceback."""
    if isinstance(error, MemoryError):
        return "out of memory; free memory, or use a smaller --batch, --pixels or image"
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror.lower()}; check the path and its permissions"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast`` and ``python -m spc_fast``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, delegated, rest = _split_delegated(argv)
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if args.verbose else logging.WARNING)
    restore_sigterm = _stop_on_sigterm()
    try:
        if delegated is not None:
            return importlib.import_module(delegated).main(rest)
        config = pipeline_config(args) if hasattr(args, "preset") else PipelineConfig()
        return args.run(args, config)
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM through the handler above
        name, status = batch_command.interrupted_status(stop)
        print(f"{PROG}: interrupted by {name}", file=sys.stderr)
        return status
    except (ValueError, OSError, MemoryError) as error:  # bad input, a missing or unreadable file, no memory left
        print(f"{PROG}: error: {_message(error)}", file=sys.stderr)
        return 1
    finally:
        restore_sigterm()
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
