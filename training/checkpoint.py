"""Checkpoints that survive a crash at any moment: ``RUN/checkpoints/step-00000012/``.

Every rank writes into ``.tmp-step-00000012/`` — the models' and optimizers' shards through
``torch.distributed.checkpoint`` (their ``get_state_dict``/``set_state_dict`` helpers, so FSDP2 shards reload on
any layout) and its own ``rank-00000.pt`` (step, schedulers, loader position, every RNG state). Only when all of it
is on disk does rank 0 rename the folder to its final name, then replace the ``latest`` pointer (atomically) and
delete checkpoints beyond the last ``keep``. A crash before the rename leaves a temporary folder that the next start
deletes; a crash after it leaves a complete checkpoint. Across nodes the run folder must be on a shared filesystem.

Only parameters that train are saved (a LoRA run saves its adapters, not the frozen base weights the stage builds
again); they are loaded with ``strict=False`` for the same reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful

from spc_fast.training.distributed import World, barrier

CHECKPOINTS = "checkpoints"
LATEST = "latest"
PREFIX = "step-"
TEMPORARY = ".tmp-"
# Tests only: seconds rank 0 waits between writing a checkpoint and renaming it, so a test can kill the run there.
PAUSE_ENV = "SPC_FAST_CHECKPOINT_PAUSE_S"


def step_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


class TrainState(Stateful):
    """The trainable models and their optimizers, by name (an optimizer shares its model's name), as DCP state:
    trainable parameters only, sharded as they are trained."""

    def __init__(self, models: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]):
        unknown = sorted(set(optimizers) - set(models))
        if unknown:
            raise ValueError(f"optimizers {unknown} have no model of the same name; models: {sorted(models)}")
        self.models, self.optimizers = models, optimizers

    def state_dict(self) -> dict[str, Any]:
        options = StateDictOptions(ignore_frozen_params=True)
        out = {}
        for name, model in self.models.items():
            if name in self.optimizers:
                model_state, optim_state = get_state_dict(model, self.optimizers[name], options=options)
                out[name] = {"model": model_state, "optim": optim_state}
            else:
                out[name] = {"model": get_model_state_dict(model, options=options)}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        options = StateDictOptions(ignore_frozen_params=True, strict=False)
        for name, model in self.models.items():
            if name in self.optimizers:
                set_state_dict(model, self.optimizers[name], model_state_dict=state[name]["model"],
                               optim_state_dict=state[name]["optim"], options=options)
            else:
                set_model_state_dict(model, state[name]["model"], options=options)


def rng_state() -> dict[str, Any]:
    """Every global generator's state in types ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every save and load without a process group; running alone is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _fsync_dir(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


class Checkpointer:
    """Saves and finds the checkpoints of one run folder."""

    def __init__(self, run: Path, *, keep: int, world: World):
        self.root, self.keep, self.world = Path(run) / CHECKPOINTS, keep, world

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints on disk, in order."""
        if not self.root.is_dir():
            return []
        found = [p.name[len(PREFIX):] for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(int(s) for s in found if s.isdigit())

    def latest(self) -> Path | None:
        """The checkpoint ``latest`` names; the newest complete one when the pointer is missing or stale."""
        pointer = self.root / LATEST
        if pointer.is_file():
            named = self.root / pointer.read_text(encoding="utf-8").strip()
            if named.name.startswith(PREFIX) and named.is_dir():
                return named
        steps = self.steps()
        return self.root / step_name(steps[-1]) if steps else None

    def clean(self, *, newer_than: int | None = None) -> list[str]:
        """Delete what a crash during a save left, and the checkpoints after ``newer_than`` (the step a run resumes
        from: later ones belong to a timeline that is being replaced). Rank 0 deletes, every rank waits for it.
        Returns the names deleted."""
        removed = []
        if self.world.main and self.root.is_dir():
            stale = {step_name(s) for s in self.steps() if newer_than is not None and s > newer_than}
            for path in sorted(self.root.iterdir()):
                if path.name.startswith(TEMPORARY) or path.name in stale:
                    shutil.rmtree(path)
                    removed.append(path.name)
        barrier()
        return removed

    def save(self, step: int, state: dict[str, Stateful], rank_state: dict[str, Any]) -> Path:
        """Write the checkpoint of ``step``: ``state`` through DCP (collective), ``rank_state`` and the RNG states
        into this rank's own file. Returns the checkpoint's folder."""
        final, temporary = self.root / step_name(step), self.root / f"{TEMPORARY}{step_name(step)}"
        if self.world.main:
            if temporary.exists():
                shutil.rmtree(temporary)
            temporary.mkdir(parents=True)
        barrier()
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=temporary, no_dist=not dist.is_initialized())
        payload = {"step": step, "world_size": self.world.size, "state": rank_state, "rng": rng_state()}
        with open(temporary / f"rank-{self.world.rank:05d}.pt", "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        barrier()
        if self.world.main:
            pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
            if pause > 0:
                time.sleep(pause)
            if final.exists():  # renamed by a run that crashed before it moved the pointer
                shutil.rmtree(final)
            os.rename(temporary, final)
            _write_atomically(self.root / LATEST, final.name + "\n")
            _fsync_dir(self.root)
            for old in self.steps()[: -self.keep]:
                if old != step:
                    shutil.rmtree(self.root / step_name(old))
        barrier()
        return final

    def load(self, path: Path, state: dict[str, Stateful]) -> tuple[int, dict[str, Any]]:
        """Load the checkpoint in ``path`` into ``state`` (collective) and this rank's RNG states; returns its step
        and this rank's ``rank_state``."""
        rank_file = Path(path) / f"rank-{self.world.rank:05d}.pt"
        if not rank_file.is_file():
            raise ValueError(f"{path}: no {rank_file.name}; the checkpoint is incomplete or from fewer ranks")
        payload = torch.load(rank_file, map_location="cpu", weights_only=True)
        if payload["world_size"] != self.world.size:
            raise ValueError(f"{path} was written by {payload['world_size']} ranks, this run has {self.world.size}: "
                             f"resume with --nproc_per_node {payload['world_size']} (the data order depends on it)")
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
        set_rng_state(payload["rng"])
        return payload["step"], payload["state"]
