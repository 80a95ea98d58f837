"""The training stages on tiny models and a tiny dataset built by ``spc-fast data build``: flow-matching draws keyed by
(seed, step, sample); the critic's loss scores answer tokens only (never the prompt, never an editing record's score)
and equals a hand-written cross-entropy, gradient included; the artist's loss equals a hand-written flow-matching
reference on the same draws and does not depend on the batch a sample is in; every stage overfits 8 samples; the
exported weights load back (``load_critic``, ``load_artist``, stage II continuing stage I's adapter) and run in
``spc-fast enhance``; the H_c cache returns identical tensors and regenerates a corrupt entry; stage II's targets are
the critic's executed suggestions or the clean image. Slow: each stage for 12 steps under torchrun with two ranks,
killed after a checkpoint and resumed to the same losses."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_runs import run_cli
from launch import train_command

from spc_fast import imagefiles, retouch
from spc_fast.artist.sampler import pack_latents
from spc_fast.config import read_prompts
from spc_fast.kernels import dispatch
from spc_fast.models import load_artist, load_critic, qwen_vl
from spc_fast.models.qwen_image import tiny_artist_components
from spc_fast.training.config import train_config
from spc_fast.training.data.build import build
from spc_fast.training.data.manifest import read_manifest
from spc_fast.training.flow import draw_flow, sample_generator, shifted_timesteps
from spc_fast.training.stage import check_stage
from spc_fast.training.stages import STAGES, Adapt, ArtistSFT, CriticSFT
from spc_fast.training.trainer import Trainer

CPU = torch.device("cpu")
ANSWER = (
    "<think>1. Dark.</think>\n<edit_start>\n1. significantly increase light&exposure\n</edit_end>\n<answer>{}</answer>"
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def torch_kernels():
    """The stages' ops on their torch path: the Triton interpreter would only make these tests slow."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(dispatch.SETTING_ENV, "torch")
        yield




@pytest.fixture(scope="module")
def data(tmp_path_factory, photos) -> Path:
    """8 pairs (retouch, restore, stack) of 64 x 64 images: one working size, one bucket."""
    folder = tmp_path_factory.mktemp("photos")
    for name, pixels in photos.items():
        side = min(pixels.shape[:2])
        imagefiles.save_image(folder / f"{name}.png", torch.from_numpy(pixels[:side, :side].copy()).permute(2, 0, 1))
    out = tmp_path_factory.mktemp("data") / "DATA"
    build(folder, out, pairs=8, seed=0, max_side=64)
    return out


@pytest.fixture(scope="module")
def records(data):
    return read_manifest(data)[0]


def _stage(cls: type, data: Path, *overrides: str):
    stage = cls()
    stage.build(train_config(cls.name, "tiny", [f"data={data}", *overrides]), CPU)
    return stage


# ---- flow matching ----------------------------------------------------------------------------------------------


def test_draws_are_keyed_by_seed_step_and_sample_and_not_by_the_batch():
    def first(*key):
        return torch.rand(4, generator=sample_generator(*key))

    assert torch.equal(first(0, 3, "a"), first(0, 3, "a"))
    for other in [(1, 3, "a"), (0, 4, "a"), (0, 3, "b")]:
        assert not torch.equal(first(0, 3, "a"), first(*other))
    scheduler = tiny_artist_components()[2]
    together = draw_flow(0, 5, ["x", "a"], (16, 64), 16, scheduler)
    alone = draw_flow(0, 5, ["a"], (16, 64), 16, scheduler)
    assert torch.equal(together.t[1:], alone.t) and torch.equal(together.noise[1:], alone.noise)


def test_timesteps_follow_the_schedule_shift_of_the_image_size():
    scheduler = tiny_artist_components()[2]
    u = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    for tokens in (16, 4096):
        mu = (0.9 - 0.5) / (8192 - 256) * (tokens - 256) + 0.5  # SPEC.md §6
        expected = math.exp(mu) / (math.exp(mu) + 1 / u - 1)
        torch.testing.assert_close(shifted_timesteps(u, tokens, scheduler), expected)
    assert (shifted_timesteps(u, 4096, scheduler) > shifted_timesteps(u, 16, scheduler)).all()


# ---- critic SFT -------------------------------------------------------------------------------------------------


def _reference_nll(stage: CriticSFT, sample: dict) -> torch.Tensor:
    """The answer's mean token cross-entropy from the model's own forward over prompt + answer (full logits)."""
    prompt, answer = sample["input_ids"], sample["tokens"]
    ids = torch.cat([prompt, answer[:-1]])[None]
    types = torch.cat([sample["mm_token_type_ids"], torch.zeros_like(answer[:-1])])[None]
    logits = stage.model.vlm(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        mm_token_type_ids=types,
        pixel_values=sample["pixel_values"],
        image_grid_thw=sample["image_grid_thw"],
    ).logits
    per_token = F.cross_entropy(logits[0, len(prompt) - 1 :], answer, reduction="none")
    scored = sample["scored"].float()
    return (per_token * scored).sum() / scored.sum()


def test_critic_loss_is_the_answer_cross_entropy_with_its_gradient(data, records, photos, tmp_path):
    stage = _stage(CriticSFT, data, "lora=false")
    wide = tmp_path / "wide.png"  # another shape: another number of image tokens, so the batch's prompts are padded
    imagefiles.save_image(wide, torch.from_numpy(photos["chelsea"][::6, ::6].copy()).permute(2, 0, 1))
    height, width = imagefiles.load_tensor(wide).shape[1:]
    samples = [
        stage.sample(records[0]),
        stage.sample(dataclasses.replace(records[1], input=wide, width=width, height=height)),
    ]
    assert len(samples[0]["input_ids"]) != len(samples[1]["input_ids"])
    references = [_reference_nll(stage, s) for s in samples]
    sum(references).div(2).backward()
    expected = {n: p.grad.clone() for n, p in stage.model.named_parameters() if p.grad is not None}
    stage.model.zero_grad()
    out = stage.loss(stage.model, stage.collate(samples))  # left-padded prompts, right-padded answers
    out.loss.backward()
    assert out.loss.item() == pytest.approx(sum(r.item() for r in references) / 2, rel=1e-5)
    for name, grad in expected.items():
        torch.testing.assert_close(dict(stage.model.named_parameters())[name].grad, grad, atol=2e-5, rtol=1e-3)
    lengths = [len(s["input_ids"]) + len(s["tokens"]) for s in samples]
    assert out.tokens == sum(lengths) and out.samples == 2


def test_critic_scores_the_answer_only_and_not_an_editing_records_score(data, records):
    stage = _stage(CriticSFT, data)
    other = _stage(CriticSFT, data, "critic.instruction=Rate this photo.")
    for record in records[:3]:
        a, b = stage.sample(record), other.sample(record)
        assert not torch.equal(a["input_ids"][-40:], b["input_ids"][-40:])  # another prompt...
        assert torch.equal(a["tokens"], b["tokens"]) and torch.equal(a["scored"], b["scored"])  # ...the same scoring
    for task in ("retouch", "restore", "score"):
        record = dataclasses.replace(records[0], task=task, annotation=ANSWER.format(73))
        sample = stage.sample(record)
        unscored = stage.tokenizer.decode(sample["tokens"][~sample["scored"]])
        assert sample["tokens"][-1] == stage.end_of_turn and sample["scored"][-1]
        assert unscored == ("" if task == "score" else "73")


# ---- artist SFT -------------------------------------------------------------------------------------------------


def test_artist_loss_is_flow_matching_on_the_same_draws(data, records):
    stage = _stage(ArtistSFT, data, "seed=7")
    stage.step = 3
    batch = stage.collate([stage.sample(r) for r in records[:2]])
    out = stage.loss(stage.model, batch)
    artist, losses = stage.artist, []
    h_c, mask = stage.critic.instruction_states(batch["critic_image"], batch["instruction"])
    with torch.no_grad():
        for i, record in enumerate(records[:2]):
            x0 = pack_latents(artist.encode(batch["target"][i : i + 1]))  # [1, 16, 64]: a 64 x 64 target
            source = pack_latents(artist.encode(batch["source"][i : i + 1]))
            generator = sample_generator(7, 3, record.id)
            u = torch.rand((), generator=generator, dtype=torch.float64)
            noise = torch.randn(tuple(x0.shape[1:]), generator=generator)[None]
            mu = (0.9 - 0.5) / (8192 - 256) * (16 - 256) + 0.5
            t = float(math.exp(mu) / (math.exp(mu) + 1 / u - 1))
            v = artist.transformer(
                hidden_states=torch.cat([(1 - t) * x0 + t * noise, source], 1),
                timestep=torch.tensor([t]),
                encoder_hidden_states=h_c[i : i + 1],
                encoder_hidden_states_mask=mask[i : i + 1].bool(),
                img_shapes=[[(1, 4, 4), (1, 4, 4)]],
                return_dict=False,
            )[0][:, :16]
            losses.append(((v - (noise - x0)) ** 2).mean())
    assert out.loss.item() == pytest.approx(sum(losses).item() / 2, rel=1e-5)
    assert out.tokens == 2 * (16 + 16)


def test_a_samples_artist_loss_does_not_depend_on_its_batch(data, records):
    stage = _stage(ArtistSFT, data)
    stage.step = 2

    def loss(*indices):
        with torch.no_grad():
            return stage.loss(stage.model, stage.collate([stage.sample(records[i]) for i in indices])).loss.item()

    assert loss(0, 5) == pytest.approx((loss(0) + loss(5)) / 2, rel=1e-5)
    assert loss(5, 0) == pytest.approx(loss(0, 5), rel=1e-6)


# ---- every stage ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", ["true", "false"])
@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_trainable_parameter_gets_a_gradient(data, records, name, lora):
    """A parameter the optimizer holds but no gradient reaches has no optimizer state to checkpoint."""
    stage = _stage(STAGES[name], data, f"lora={lora}")
    stage.loss(stage.model, stage.collate([stage.sample(r) for r in records[:2]])).loss.backward()
    trainable = [(n, p) for n, p in stage.trainable().named_parameters() if p.requires_grad]
    assert trainable and [n for n, p in trainable if p.grad is None] == []
    assert all(".lora_" in n for n, _ in trainable) == (lora == "true")


@pytest.mark.parametrize(
    "name, overrides, steps, lr",
    [
        ("critic-sft", ["lora=false"], 10, 1e-2),
        pytest.param("artist-sft", ["lora=false"], 25, 1e-2, marks=pytest.mark.slow),
        pytest.param("adapt", ["lora=false"], 25, 1e-2, marks=pytest.mark.slow),
    ],
)
def test_each_stage_overfits_eight_samples(data, records, name, overrides, steps, lr):
    stage = _stage(STAGES[name], data, *overrides)
    check_stage(stage)
    batch = stage.collate([stage.sample(r) for r in records])
    optimizer = torch.optim.AdamW([p for p in stage.model.parameters() if p.requires_grad], lr=lr)

    def fixed_draws_loss() -> float:  # the flow stages' draws change every step: judge on one step's draws
        stage.step = 0
        with torch.no_grad():
            return stage.loss(stage.model, batch).loss.item()

    first = fixed_draws_loss()
    for step in range(1, steps + 1):
        stage.step = step
        stage.loss(stage.model, batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert fixed_draws_loss() <= 0.5 * first
    assert stage.flops_per_sample(batch) > 0


# ---- export, load, enhance --------------------------------------------------------------------------------------


def _train(name: str, data: Path, out: Path, *overrides: str):
    """A short run through the trainer, in this process; returns the stage, trained."""
    stage = STAGES[name]()
    config = train_config(name, "tiny", [f"data={data}", f"out={out}", "steps=2", "optim.lr=1e-2", *overrides])
    summary = Trainer(stage, config).run()
    assert summary.exit_status == 0 and summary.final == out / "final"
    return stage


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """Stage I runs of both models (LoRA, the tiny preset's) and a stage II run continuing the artist's adapter."""
    root = tmp_path_factory.mktemp("runs")
    critic = _train("critic-sft", data, root / "critic")
    artist = _train("artist-sft", data, root / "artist")
    adapt = _train("adapt", data, root / "adapt", f"artist.weights={root / 'artist' / 'final'}")
    return root, critic, artist, adapt


def test_trained_critic_loads_back_as_it_was_trained(trained, records):
    root, stage, _, _ = trained
    final = root / "critic" / "final"
    assert sorted(p.name for p in final.iterdir()) == [qwen_vl.PROMPT_FILE, "vlm", "vlm_lora"]
    config = stage.critic.config
    assert read_prompts(final / qwen_vl.PROMPT_FILE) == {"system_prompt": config.system_prompt,
                                                         "instruction": config.instruction}
    batch = stage.collate([stage.sample(r) for r in records[:2]])
    with torch.no_grad():
        trained_loss = stage.loss(stage.model, batch).loss.item()
        stage.model.vlm = load_critic(final, stage.critic.config).model  # vlm/ + vlm_lora/, merged on load
        assert stage.loss(stage.model, batch).loss.item() == pytest.approx(trained_loss, rel=1e-5)


def _velocity(transformer, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x, source, h_c = (torch.randn(shape, generator=generator) for shape in ((1, 16, 64), (1, 16, 64), (1, 5, 64)))
    with torch.no_grad():
        return transformer(
            hidden_states=torch.cat([x, source], 1),
            timestep=torch.tensor([0.5]),
            encoder_hidden_states=h_c,
            img_shapes=[[(1, 4, 4), (1, 4, 4)]],
            return_dict=False,
        )[0]


def test_trained_artists_load_back_and_stage_two_continues_stage_one(trained):
    root, _, artist, adapt = trained
    for stage, name in ((artist, "artist"), (adapt, "adapt")):
        loaded = load_artist(root / name / "final", stage.artist.config)  # transformer/, vae/, scheduler/, dit_lora/
        torch.testing.assert_close(
            _velocity(loaded.transformer), _velocity(stage.artist.transformer), atol=1e-5, rtol=1e-5
        )
    stage_one = load_artist(root / "artist" / "final", artist.artist.config).transformer
    assert not torch.allclose(_velocity(stage_one), _velocity(adapt.artist.transformer), atol=1e-6)  # it trained on
    adapters = {n for n, p in adapt.model.named_parameters() if p.requires_grad}
    assert adapters and all(".lora_" in n for n in adapters)
    assert (root / "adapt" / "final" / "transformer").is_symlink()  # stage I's base, linked, not copied


def test_a_trained_run_enhances_a_photo(trained, photos, tmp_path, capsys):
    root = trained[0]
    photo = tmp_path / "photo.png"
    imagefiles.save_image(photo, torch.from_numpy(photos["coffee"][::8, ::8].copy()).permute(2, 0, 1))
    code, _, err = run_cli(
        capsys,
        "enhance",
        photo,
        "-o",
        tmp_path / "out.png",
        "--preset",
        "tiny",
        "--critic",
        root / "critic" / "final",
        "--artist",
        root / "adapt" / "final",
    )
    assert code == 0, err
    assert imagefiles.load_tensor(tmp_path / "out.png").shape == imagefiles.load_tensor(photo).shape


# ---- stage II: the H_c cache and the online targets ---------------------------------------------------------


def test_the_hc_cache_returns_what_it_stored_and_regenerates_a_bad_entry(data, records):
    stage = _stage(Adapt, data, f"out={data.parent / 'cache-run'}")
    batch = stage.collate([stage.sample(r) for r in records[:2]])
    for key in batch["key"]:
        stage.cache.path(key).unlink(missing_ok=True)
    first = stage.judge(batch)
    assert stage.generated == 2
    again = stage.judge(batch)
    assert stage.generated == 0
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a.hidden, b.hidden) and a.text == b.text
    paths = [stage.cache.path(key) for key in batch["key"]]
    paths[1].write_bytes(paths[0].read_bytes())  # readable, but the entry of another image
    paths[0].write_bytes(b"not a safetensors file")  # unreadable
    regenerated = stage.cache.regenerated
    third = stage.judge(batch)
    assert stage.generated == 2 and stage.cache.regenerated == regenerated + 2
    for a, b in zip(first, third, strict=True):
        torch.testing.assert_close(a.hidden, b.hidden, atol=1e-5, rtol=1e-5)
        assert a.text == b.text
    assert stage.cache.load(batch["key"][0]) is not None  # written again


def test_stage_two_targets_execute_the_critics_edit_or_restore(data, records):
    stage = _stage(Adapt, data)
    chosen = [next(r for r in records if r.task == "retouch"), next(r for r in records if r.degradations)]
    batch = stage.collate([stage.sample(r) for r in chosen])
    hidden = torch.randn(2, 5, 64)
    for row, key in enumerate(batch["key"]):
        stage.cache.store(key, hidden[row], ANSWER.format(40))
    h_c, mask, texts = stage.conditioning(batch)
    assert stage.generated == 0 and torch.equal(h_c, hidden) and mask.all()
    targets = stage.targets(batch, (h_c, mask, texts))
    torch.testing.assert_close(targets[0], retouch.apply(batch["working"][0], exposure=1.0))  # "significantly"
    assert torch.equal(targets[1], batch["target"][1])  # the clean image, whatever the critic said
    assert not torch.equal(targets[1], batch["working"][1])


# ---- torchrun: two ranks, a kill, a resume ----------------------------------------------------------------------


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, len(lines) + 1))
    return [line["loss"] for line in lines]


SETTINGS = ["--config", "tiny", "--set", "steps=8", "--set", "checkpoint_every=3"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(STAGES))
def test_two_ranks_run_and_a_killed_run_resumes_to_the_same_losses(name, data, tmp_path):
    """Under torchrun with two ranks: SIGKILL after the step-3 checkpoint once at least one later step was logged,
    then --resume: the resumed run logs those steps again with the same losses, and finishes the 8 steps."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the torch path of the kernels, as set for this module
    process = subprocess.Popen(
        train_command(name, run, *SETTINGS, "--set", f"data={data}", ranks=2),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ((run / "checkpoints" / "latest").exists() and len(_lines_of(run)) >= 4):
            assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = [json.loads(line) for line in _lines_of(run)]
    assert 4 <= len(before) < 8
    started = time.monotonic()
    result = subprocess.run(train_command(name, run, "--resume", ranks=2), env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 120  # start-up and 5 of the 8 steps
    losses = _losses(run)
    assert len(losses) == 8
    assert losses[: len(before)] == pytest.approx([line["loss"] for line in before], abs=1e-6)
    assert (run / "final").is_dir()


def _lines_of(run: Path) -> list[str]:
    metrics = run / "metrics.jsonl"
    return metrics.read_text().splitlines() if metrics.exists() else []
