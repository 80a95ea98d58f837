"""The training loop, read top to bottom: build → wrap → optimizers → data → resume → for each step: data →
forward/backward → clip → optimizer step → metrics → maybe checkpoint → at the end, export.

Models, optimizers and schedulers are named collections (``{"model": …}`` for the supervised stages) and the step
body is ``train_step``: a trainer for several models (stage III: critic and artist, two optimizers, rollouts)
subclasses ``Trainer``, overrides ``build_models``/``build_optimizers`` and ``train_step``, and keeps the rest —
ranks, checkpoints (every named model and optimizer, plus whatever ``checkpoint_state`` adds), metrics, stopping.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor

from spc_fast.training import distributed
from spc_fast.training.checkpoint import Checkpointer, TrainState
from spc_fast.training.config import TrainConfig, lr_factor, write_config
from spc_fast.training.metrics import MetricsLog, combine, peak_flops, peak_memory
from spc_fast.training.stage import Stage, check_stage

CONFIG = "config.toml"
FINAL = "final"


@dataclass
class RunSummary:
    """How a run ended: ``step`` of ``steps`` done; ``stopped`` names the signal that stopped it early."""

    run: Path
    step: int
    steps: int
    loss: float | None
    stopped: str | None
    checkpoint: Path | None
    final: Path | None

    @property
    def exit_status(self) -> int:
        return 0 if self.stopped is None else 128 + signal.Signals[self.stopped].value


def to_device(batch: Any, device: torch.device) -> Any:
    """The batch with every tensor (in nested dicts, lists and tuples) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


class _StopSignals:
    """SIGTERM and SIGINT ask the run to stop after the step in progress (a second one ends it at once)."""

    def __init__(self) -> None:
        self.signum, self.previous = 0, {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


class Trainer:
    """Trains ``stage`` as ``config`` says, in ``config.out``; ``resume`` continues from its latest checkpoint."""

    def __init__(self, stage: Stage, config: TrainConfig, *, resume: bool = False):
        check_stage(stage)
        if config.out is None:
            raise ValueError("no run folder: give --out RUN (or set out in the config)")
        self.stage, self.config, self.resume = stage, config, resume
        self.run_dir = Path(config.out)
        self.models: dict[str, torch.nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler] = {}
        self.step = 0
        self._grads_checked: dict[str, bool] = {}

    # ---- building ---------------------------------------------------------------------------------------------

    def build_models(self) -> dict[str, torch.nn.Module]:
        """The stage's models, built and wrapped for the ranks, by name."""
        self.stage.build(self.config, self.world.device)
        return {"model": distributed.wrap(self.stage, self.config.parallel, self.world)}

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """AdamW over each model's trainable parameters (an optimizer is named as its model)."""
        optim, out = self.config.optim, {}
        for name, model in self.models.items():
            parameters = [p for p in model.parameters() if p.requires_grad]
            if not parameters:
                raise ValueError(f"stage {self.stage.name}: model {name!r} has no trainable parameters")
            out[name] = torch.optim.AdamW(parameters, lr=optim.lr, betas=(optim.beta1, optim.beta2),
                                          weight_decay=optim.weight_decay)
        return out

    def records(self) -> list:
        """The training records: the stage's own (``stage.records(config)``) or the manifest at ``config.data``."""
        own = getattr(self.stage, "records", None)
        if callable(own):
            return list(own(self.config))
        if self.config.data is None:
            raise ValueError("no training data: --set data=DATA (a folder holding manifest.jsonl)")
        from spc_fast.training.data.manifest import read_manifest

        records, problems = read_manifest(self.config.data, skip_bad=self.config.skip_bad)
        if problems and self.world.main:
            print(f"spc-fast train: left out {len(problems)} bad records (skip_bad); first: {problems[0]}",
                  file=sys.stderr)
        return records

    def build_loader(self) -> Iterator[dict]:
        from spc_fast.training.data.loader import Loader

        config = self.config
        return Loader(self.records(), self.stage.sample, self.stage.collate, batch_size=config.batch_size,
                      bucket_fn=self.stage.bucket, rank=self.world.rank, world_size=self.world.size, seed=config.seed,
                      workers=config.workers, prefetch=config.prefetch)

    def checkpoint_state(self) -> dict[str, Any]:
        """What DCP saves and loads collectively (a subclass may add its own ``Stateful`` entries)."""
        return {"train": TrainState(self.models, self.optimizers)}

    def rank_state(self) -> dict[str, Any]:
        """What each rank saves for itself (the RNG states are added by the checkpointer)."""
        return {"schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
                "loader": self.loader.state_dict()}

    def load_rank_state(self, state: dict[str, Any]) -> None:
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.loader.load_state_dict(state["loader"])

    def setup(self) -> None:
        config, world = self.config, self.world
        self.checkpointer = Checkpointer(self.run_dir, keep=config.keep, world=world)
        if not self.resume and self.checkpointer.steps():
            raise ValueError(f"{self.run_dir} already holds checkpoints: continue it with --resume {self.run_dir}, "
                             "or choose another --out")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if world.main:
            write_config(self.run_dir / CONFIG, config)
        distributed.seed_all(config.seed)  # every rank builds the same initial weights
        self.models = self.build_models()
        distributed.seed_all(distributed.rank_seed(config.seed, world.rank))
        self.optimizers = self.build_optimizers()
        factor = lr_factor(config.optim, config.steps)
        self.schedulers = {n: torch.optim.lr_scheduler.LambdaLR(o, factor) for n, o in self.optimizers.items()}
        self.loader = self.build_loader()
        latest = self.checkpointer.latest() if self.resume else None
        if latest is not None:
            self.step, state = self.checkpointer.load(latest, self.checkpoint_state())
            self.load_rank_state(state)
        self.checkpointer.clean(newer_than=self.step)
        self.autocast = distributed.autocast(config.parallel, world)
        self.metrics = MetricsLog(self.run_dir, world, steps=config.steps, start_step=self.step,
                                  log_every=config.log_every, description=self.stage.name)

    # ---- one step ---------------------------------------------------------------------------------------------

    def _sync(self) -> float:
        if self.world.device.type == "cuda":
            torch.cuda.synchronize(self.world.device)
        return time.perf_counter()

    def optimizer_step(self, name: str) -> torch.Tensor:
        """Clip the named model's gradients, step its optimizer and scheduler, clear the gradients; returns the total
        gradient norm before clipping (over all ranks' shards)."""
        if not self._grads_checked.get(name):  # once: a parameter without a gradient would break every resume
            idle = [n for n, p in self.models[name].named_parameters() if p.requires_grad and p.grad is None]
            if idle:
                raise ValueError(f"{len(idle)} trainable parameters of {name!r} got no gradient in the first step "
                                 f"({', '.join(idle[:3])}{', …' if len(idle) > 3 else ''}): the stage must freeze "
                                 "what its loss does not reach, or the optimizer has no state for them to resume")
            self._grads_checked[name] = True
        grads = [p.grad for p in self.models[name].parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        if self.config.optim.clip > 0:
            torch.nn.utils.clip_grads_with_norm_(self.models[name].parameters(), self.config.optim.clip, norm,
                                                 foreach=True)
        self.optimizers[name].step()
        self.schedulers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)
        return norm

    def train_step(self, step: int) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """One optimizer step over ``grad_accum`` micro-batches; returns this rank's values to combine over the ranks
        as (means, sums, maxes)."""
        model, accum = self.models["model"], self.config.optim.grad_accum
        lr = self.schedulers["model"].get_last_lr()[0]
        loss, terms, samples, tokens, flops = torch.zeros((), device=self.world.device), {}, 0, 0, 0.0
        data_s = fwd_bwd_s = 0.0
        for i in range(accum):
            start = time.perf_counter()
            batch = to_device(next(self.loader), self.world.device)
            loaded = self._sync()
            with distributed.gradient_sync(model, i == accum - 1), self.autocast:
                self.stage.step = step
                out = self.stage.loss(model, batch)
            (out.loss / accum).backward()
            loss += out.loss.detach().float() / accum
            for key, value in out.terms.items():
                terms[key] = terms.get(key, 0.0) + value.detach().float() / accum
            samples, tokens = samples + out.samples, tokens + out.tokens
            flops += self.stage.flops_per_sample(batch) * out.samples
            data_s, fwd_bwd_s = data_s + loaded - start, fwd_bwd_s + self._sync() - loaded
        start = time.perf_counter()
        grad_norm = self.optimizer_step("model")
        optim_s = self._sync() - start
        memory, _ = peak_memory(self.world.device)
        means = {"loss": loss.item(), **{f"terms.{k}": float(v) for k, v in terms.items()}}
        sums = {"samples": samples, "tokens": tokens, "flops": flops}
        maxes = {"time_data_s": data_s, "time_fwd_bwd_s": fwd_bwd_s, "time_optim_s": optim_s,
                 "peak_mem_bytes": memory, "grad_norm": grad_norm.item(), "lr": lr}
        return means, sums, maxes

    def record(self, step: int, means: dict, sums: dict, maxes: dict, stop: int) -> tuple[dict[str, Any], int]:
        """The step's metrics line over all ranks, and the stop signal any rank received (0: none). Values beyond
        the ones ``train_step`` always gives (e.g. a second model's ``lr.critic``) are written as they come."""
        values = combine(self.world, means=means, sums=sums, maxes={**maxes, "stop": stop})
        stopped, samples, tokens, flops = (values.pop(k) for k in ("stop", "samples", "tokens", "flops"))
        seconds = values["time_data_s"] + values["time_fwd_bwd_s"] + values["time_optim_s"]
        terms = {k.removeprefix("terms."): values.pop(k) for k in list(values) if k.startswith("terms.")}
        line = {"step": step, "loss": values.pop("loss"), "terms": terms, **values,
                "samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
                "peak_mem_bytes": int(values["peak_mem_bytes"]), "peak_mem_kind": peak_memory(self.world.device)[1]}
        peak = peak_flops(self.world.device)
        if peak is not None:
            line["mfu"] = flops / (seconds * peak * self.world.size)
        return line, int(stopped)

    # ---- the run ----------------------------------------------------------------------------------------------

    def save(self) -> Path:
        return self.checkpointer.save(self.step, self.checkpoint_state(), self.rank_state())

    def export(self) -> Path:
        """The trained weights in the release layout (``stage.export`` on rank 0, from the full state dict)."""
        model = distributed.unwrapped(self.models["model"])
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        state = get_model_state_dict(model, options=options)
        final = self.run_dir / FINAL
        if self.world.main:
            self.stage.export(final, state)
        distributed.barrier()
        return final

    def run(self) -> RunSummary:
        """Train to ``config.steps`` (from the latest checkpoint when resuming); stop early, with a checkpoint, on
        SIGTERM or SIGINT."""
        owns_group = not dist.is_initialized()
        self.world = distributed.init(self.config.device, self.config.parallel)
        try:
            with _StopSignals() as stop:
                self.setup()
                return self._loop(stop)
        finally:
            for part in ("metrics", "loader"):  # the loader's workers, the metrics file
                close = getattr(getattr(self, part, None), "close", None)
                if close is not None:
                    close()
            if owns_group:
                distributed.shutdown()

    def _loop(self, stop: _StopSignals) -> RunSummary:
        config, every = self.config, self.config.checkpoint_every
        loss, saved, stopped = None, None, 0
        while self.step < config.steps and not stopped:
            step = self.step + 1
            line, stopped = self.record(step, *self.train_step(step), stop.signum)
            self.step, loss = step, line["loss"]
            self.metrics.write(line)
            if stopped or step == config.steps or (every and step % every == 0):
                saved = self.save()
        if stopped:
            name = signal.Signals(stopped).name
            return RunSummary(self.run_dir, self.step, config.steps, loss, name, saved, None)
        if saved is None:
            saved = self.checkpointer.latest()
        return RunSummary(self.run_dir, self.step, config.steps, loss, None, saved, self.export())
