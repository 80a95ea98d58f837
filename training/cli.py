"""``spc-fast train STAGE --config NAME|FILE [--set key=value …] [--out RUN] [--resume [RUN]]`` and
``spc-fast train plot RUN`` (``spc_fast.training.plot``) — the first also
``python -m spc_fast.training …``, which is what torchrun starts on every rank::

    torchrun --nproc_per_node 2 -m spc_fast.training artist-sft --config tiny --set data=DATA --out RUN

A new run resolves its config (preset or TOML file over the release preset, then ``--set``) and writes it to
``RUN/config.toml``; ``--resume`` reads that file back (``--set`` still applies, e.g. more ``steps``) and continues
from the latest checkpoint. Bad input ends the command with one line on stderr and status 1; SIGTERM or Ctrl-C stops
it after the step in progress, with a checkpoint, status 143 or 130.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from pathlib import Path

PROG = "spc-fast train"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train a stage of SmartPhotoCrafter on one or many processes (run it under torchrun for several).",
        epilog="spc-fast train plot RUN draws a run's loss, rewards and time split (spc-fast train plot --help).",
    )
    parser.add_argument(
        "stage",
        metavar="STAGE",
        help="critic-sft, artist-sft, adapt (stages I–II) or joint (stage III); or a stage class "
        "outside the registry: module:Class",
    )
    parser.add_argument(
        "--config",
        metavar="NAME|FILE",
        help="a preset (tiny, release) or a TOML file laid over the release preset (default release)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (dotted for tables: optim.lr=1e-4); repeatable",
    )
    parser.add_argument("--out", metavar="RUN", help="the run folder (config, metrics, checkpoints, final weights)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="RUN",
        help="continue RUN (default: --out) from its latest checkpoint to its steps",
    )
    return parser


# Stages with their own trainer and config (class attributes ``trainer``, ``train_config``, ``read_config``), imported
# only when named: stage III builds on the registry's stages.
_OWN_TRAINER = {"joint": "spc_fast.training.joint:JointStage"}


def stage_class(name: str) -> type:
    """The stage class the command line names: a registry name, ``joint``, or ``module:Class``."""
    name = _OWN_TRAINER.get(name, name)
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"stage {name!r}: cannot import it ({error})") from error
    from spc_fast.training import stages

    registry = getattr(stages, "STAGES", {})
    if name not in registry:
        names = sorted([*registry, *_OWN_TRAINER])
        raise ValueError(f"unknown stage {name!r}; choose one of {', '.join(names)}")
    return registry[name]


def resolve(args: argparse.Namespace, stage: type):
    """The run's TrainConfig (``stage``'s own config type where it has one) and whether it resumes."""
    from spc_fast.training import config as configs
    from spc_fast.training.trainer import CONFIG

    if hasattr(stage, "train_config"):
        train_config, read_config = stage.train_config, stage.read_config
    else:
        train_config = functools.partial(configs.train_config, args.stage)
        read_config = configs.read_config
    if args.resume is None:
        out = [f"out={args.out}"] if args.out is not None else []
        return train_config(args.config, [*args.overrides, *out]), False
    run = args.resume or args.out
    if not run:
        raise ValueError("--resume needs the run folder: --resume RUN")
    if args.config is not None:
        raise ValueError("a resumed run keeps its config.toml; change settings with --set instead of --config")
    path = Path(run) / CONFIG
    if not path.is_file():
        raise ValueError(f"{run}: no {CONFIG}; not a run folder that spc-fast train wrote")
    config = read_config(path, [*args.overrides, f"out={run}"])
    if config.stage != args.stage:
        raise ValueError(f"{run} is a {config.stage} run, not {args.stage}")
    return config, True


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.filename}: {error.strerror.lower()}; check the path and its permissions"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spc-fast train`` and ``python -m spc_fast.training``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plot"]:  # spc-fast train plot RUN: charts of a run's metrics.jsonl
        from spc_fast.training import plot

        return plot.main(argv[1:])
    args = build_parser().parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        from spc_fast.training.trainer import Trainer

        stage = stage_class(args.stage)
        config, resume = resolve(args, stage)
        trainer = getattr(stage, "trainer", Trainer)
        summary = trainer(stage(), config, resume=resume).run()
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, MemoryError) as error:
        print(f"{PROG}: error: {_message(error)}", file=sys.stderr)
        return 1
    if main_rank:
        loss = "?" if summary.loss is None else f"{summary.loss:.4g}"
        if summary.stopped:
            print(
                f"{PROG}: interrupted by {summary.stopped} at step {summary.step} of {summary.steps} (loss {loss}); "
                f"saved {summary.checkpoint}; continue with: {PROG} {args.stage} --resume {summary.run}",
                file=sys.stderr,
            )
        else:
            print(
                f"{PROG}: {args.stage}: step {summary.step} of {summary.steps}, loss {loss}; weights in {summary.final}"
            )
    return summary.exit_status
