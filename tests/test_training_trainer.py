"""The trainer on a toy stage: the loss falls; two FSDP2 ranks take the same first step as one process accumulating
two micro-batches; a run killed with SIGKILL (after a checkpoint, or in the middle of one) resumes to the same losses
as a run never stopped; SIGTERM stops after the step with a checkpoint; checkpoints are kept, named and pointed to
as documented; the config survives RUN/config.toml."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from launch import train_command
from toy_stage import SLEEP_ENV, ToyModel, ToyStage

from spc_fast.config import to_dict
from spc_fast.training import cli
from spc_fast.training.checkpoint import PAUSE_ENV, TEMPORARY, Checkpointer, step_name
from spc_fast.training.config import OptimConfig, lr_factor, preset, read_config, to_toml, train_config
from spc_fast.training.distributed import World
from spc_fast.training.trainer import Trainer

TESTS = Path(__file__).resolve().parent
STAGE = "toy_stage:ToyStage"
FULL = ["lora=false", "optim.lr=1e-2"]  # full fine-tuning learns the toy teacher within a few dozen steps

pytestmark = pytest.mark.usefixtures("one_thread")




def _train(out: Path, *overrides: str, stage: ToyStage | None = None, resume: bool = False):
    config = train_config(ToyStage.name, "tiny", [f"out={out}", *overrides])
    return Trainer(stage or ToyStage(), config, resume=resume).run()


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path) -> list[float]:
    return [line["loss"] for line in _lines(run)]


def _checkpointed_parameters(run: Path, step: int) -> dict[str, torch.Tensor]:
    template = {"train": {"model": {"model": ToyModel(0).state_dict()}}}
    with warnings.catch_warnings():  # loading in one process is what is meant here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(template, checkpoint_id=run / "checkpoints" / step_name(step), no_dist=True)
    return template["train"]["model"]["model"]


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _command(run: Path, *args: str, ranks: int = 1) -> list[str]:
    """``spc-fast train`` on the toy stage, under torchrun on a free port when ``ranks`` > 1."""
    return train_command(STAGE, run, *args, ranks=ranks)


def _run(command: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=_env(**env), capture_output=True, text=True, timeout=timeout, cwd=TESTS)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _kill_when(command: list[str], ready, timeout: float = 120, **env: str) -> None:
    """Start ``command`` in its own process group and SIGKILL the whole group once ``ready()`` holds."""
    process = subprocess.Popen(command, env=_env(**env), cwd=TESTS, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, "the run ended before the moment to kill it"
            assert time.monotonic() < deadline, "the moment to kill the run never came"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---- one process ------------------------------------------------------------------------------------------------


def test_the_loss_falls_and_every_step_is_logged(tmp_path):
    summary = _train(tmp_path / "run", "steps=24", "checkpoint_every=0", *FULL)
    lines = _lines(tmp_path / "run")
    losses = [line["loss"] for line in lines]
    assert summary.exit_status == 0 and [line["step"] for line in lines] == list(range(1, 25))
    assert sum(losses[-4:]) / 4 <= 0.5 * sum(losses[:4]) / 4, losses
    for key in ("lr", "grad_norm", "samples_per_s", "tokens_per_s", "time_data_s", "time_fwd_bwd_s", "time_optim_s"):
        assert all(line[key] > 0 for line in lines), key
    assert lines[0]["peak_mem_kind"] == "cpu_max_rss" and lines[0]["peak_mem_bytes"] > 0
    assert set(lines[0]["terms"]) == {"mse_first_output"} and "mfu" not in lines[0]  # no MFU on the CPU
    assert (tmp_path / "run" / "final" / "toy.safetensors").is_file()


def test_checkpoints_are_named_pointed_to_and_the_last_k_kept(tmp_path):
    run = tmp_path / "run"
    _train(run, "steps=5", "checkpoint_every=1", "keep=2")
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", step_name(4), step_name(5)]
    assert (checkpoints / "latest").read_text().strip() == "step-00000005"


def test_a_lora_run_checkpoints_only_the_trainable_parameters(tmp_path):
    run = tmp_path / "run"
    _train(run, "steps=1", "lora=true")
    keys = dcp.FileSystemReader(run / "checkpoints" / step_name(1)).read_metadata().state_dict_metadata
    model_keys = {k for k in keys if k.startswith("train.model.model.")}
    assert model_keys and all(".adapter_" in k for k in model_keys), sorted(model_keys)


def test_resuming_cleans_a_crashed_save_and_an_abandoned_later_checkpoint(tmp_path):
    """A save killed before its rename leaves a temporary folder; one killed after the rename but before the pointer
    moved leaves a complete later checkpoint that the run does not resume from: both go."""
    checkpointer = Checkpointer(tmp_path, keep=2, world=World(0, 1, 0, torch.device("cpu")))
    root = tmp_path / "checkpoints"
    for name in (step_name(1), step_name(3), f"{TEMPORARY}{step_name(4)}"):
        (root / name).mkdir(parents=True)
    assert checkpointer.latest() == root / step_name(3)  # no pointer: the newest complete one
    (root / "latest").write_text(step_name(1) + "\n")
    assert checkpointer.latest() == root / step_name(1)
    assert checkpointer.clean(newer_than=1) == [f"{TEMPORARY}{step_name(4)}", step_name(3)]
    assert sorted(p.name for p in root.iterdir()) == ["latest", step_name(1)]


@pytest.mark.parametrize(("mode", "lora"), [("ddp", "false"), ("fsdp", "false"), ("fsdp", "true")])
def test_ddp_and_fsdp_with_checkpointed_blocks_match_a_plain_run(tmp_path, mode, lora):
    """One rank in a process group of one: the wrapping (activation checkpointing, then DDP or FSDP2, a frozen base
    beside trainable adapters, gradients accumulated without a reduction) changes no number."""
    settings = ["steps=2", "optim.lr=1e-2", f"lora={lora}", "optim.grad_accum=2"]
    _train(tmp_path / "plain", *settings)
    _train(tmp_path / mode, *settings, f"parallel.mode={mode}", "parallel.activation_checkpointing=true")
    assert _losses(tmp_path / mode) == pytest.approx(_losses(tmp_path / "plain"), abs=1e-6)


def test_bf16_mixed_precision_trains_near_fp32(tmp_path):
    """FSDP2's policy (bf16 parameters and compute, fp32 reduction and master weights) on the CPU."""
    _train(tmp_path / "fp32", "steps=2", *FULL, "parallel.mode=fsdp")
    _train(tmp_path / "bf16", "steps=2", *FULL, "parallel.mode=fsdp", "parallel.precision=bf16")
    assert _losses(tmp_path / "bf16") == pytest.approx(_losses(tmp_path / "fp32"), rel=2e-2)
    assert _losses(tmp_path / "bf16") != _losses(tmp_path / "fp32")  # bf16 did compute


def test_sigterm_finishes_the_step_checkpoints_and_resumes(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    loss = ToyStage.loss

    def stopping_at_step_3(self, model, batch):
        if self.step == 3:
            signal.raise_signal(signal.SIGTERM)
        return loss(self, model, batch)

    monkeypatch.setattr(ToyStage, "loss", stopping_at_step_3)
    code = cli.main([STAGE, "--config", "tiny", "--set", "steps=6", "--set", "checkpoint_every=5", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 143 and "interrupted by SIGTERM at step 3 of 6" in err and f"--resume {run}" in err
    assert [line["step"] for line in _lines(run)] == [1, 2, 3] and (run / "checkpoints" / step_name(3)).is_dir()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    monkeypatch.undo()
    assert cli.main([STAGE, "--resume", str(run)]) == 0
    assert [line["step"] for line in _lines(run)] == list(range(1, 7))


def test_the_config_round_trips_through_the_run_folder(tmp_path):
    run = tmp_path / "run"
    _train(run, "steps=1", "optim.lr=2.5e-3", "optim.schedule=cosine", "artist.weights=none")
    config = train_config(ToyStage.name, "tiny", [f"out={run}", "steps=1", "optim.lr=2.5e-3",
                                                  "optim.schedule=cosine", "artist.weights=none"])
    assert read_config(run / "config.toml") == config
    assert read_config(run / "config.toml", ["steps=9"]).steps == 9
    for name in ("tiny", "release"):
        written = tmp_path / f"{name}.toml"
        written.write_text(to_toml(to_dict(preset("critic-sft", name))))
        assert train_config("critic-sft", str(written)) == preset("critic-sft", name)


def test_the_learning_rate_warms_up_then_follows_the_schedule():
    cosine = lr_factor(OptimConfig(warmup_steps=4, schedule="cosine"), steps=12)
    assert [cosine(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(8) == pytest.approx(0.5) and 0 < cosine(11) < cosine(10)
    assert {lr_factor(OptimConfig(), 5)(i) for i in range(5)} == {1.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-stage", "--config", "tiny"], "unknown stage 'no-such-stage'"),
        ([STAGE, "--config", "tiny", "--set", "optim.lr=fast"], "optim.lr"),
        ([STAGE, "--config", "tiny", "--set", "steps=0"], "steps must be at least 1"),
        ([STAGE, "--config", "nonesuch"], "neither a preset"),
        ([STAGE, "--config", "tiny"], "--out RUN"),
        ([STAGE, "--resume"], "--resume needs the run folder"),
    ],
)
def test_bad_input_is_one_line_and_status_1(argv, message, capsys):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_run_folder_with_checkpoints_needs_resume(tmp_path, capsys):
    _train(tmp_path / "run", "steps=1")
    assert cli.main([STAGE, "--config", "tiny", "--out", str(tmp_path / "run")]) == 1
    assert "--resume" in capsys.readouterr().err
    assert cli.main([STAGE, "--resume", str(tmp_path / "nowhere")]) == 1


# ---- separate processes: torchrun, kills ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """An uninterrupted 2-rank FSDP2 run of 8 steps with a checkpoint after each."""
    run = tmp_path_factory.mktemp("two-ranks") / "run"
    _run(_command(run, "--config", "tiny", *_sets(*FULL, "steps=8", "checkpoint_every=1", "keep=8"), ranks=2))
    return run


def _sets(*assignments: str) -> list[str]:
    return [arg for assignment in assignments for arg in ("--set", assignment)]


@pytest.mark.slow
def test_two_fsdp_ranks_take_the_step_of_one_process_accumulating_two(two_ranks, tmp_path):
    single = tmp_path / "single"
    _train(single, *FULL, "steps=2", "checkpoint_every=1", "optim.grad_accum=2")
    assert _losses(two_ranks)[:2] == pytest.approx(_losses(single), abs=1e-6)
    sharded, alone = _checkpointed_parameters(two_ranks, 1), _checkpointed_parameters(single, 1)
    assert sharded.keys() == alone.keys()
    for name in alone:
        torch.testing.assert_close(sharded[name], alone[name], atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(alone["head.weight"], ToyModel(0).state_dict()["head.weight"])  # the step moved it


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes_to_the_same_losses(two_ranks, tmp_path):
    run = tmp_path / "run"
    command = _command(run, "--config", "tiny", *_sets(*FULL, "steps=8", "checkpoint_every=3"), ranks=2)

    def past_a_checkpoint() -> bool:
        lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
        return (run / "checkpoints" / "latest").exists() and len(lines) >= 4

    _kill_when(command, past_a_checkpoint, **{SLEEP_ENV: "0.3"})
    _run(_command(run, "--resume", ranks=2))
    lines = _lines(run)
    assert [line["step"] for line in lines] == list(range(1, 9))  # every step once
    assert [line["loss"] for line in lines] == pytest.approx(_losses(two_ranks), abs=1e-6)


def test_a_run_killed_while_saving_resumes_from_the_previous_checkpoint(tmp_path):
    run, reference = tmp_path / "run", tmp_path / "reference"
    settings = _sets(*FULL, "steps=6", "checkpoint_every=2")
    checkpoints = run / "checkpoints"

    def saving_the_second() -> bool:
        return (checkpoints / step_name(2)).is_dir() and (checkpoints / f"{TEMPORARY}{step_name(4)}").is_dir()

    _kill_when(_command(run, "--config", "tiny", *settings), saving_the_second, **{PAUSE_ENV: "2"})
    assert (checkpoints / "latest").read_text().strip() == step_name(2)
    _train(run, *FULL, "steps=6", "checkpoint_every=2", resume=True)  # in this process: the same code, less waiting
    assert not any(p.name.startswith(TEMPORARY) for p in checkpoints.iterdir())
    _train(reference, *FULL, "steps=6", "checkpoint_every=2")
    assert [line["step"] for line in _lines(run)] == list(range(1, 7))
    assert _losses(run) == pytest.approx(_losses(reference), abs=1e-6)
