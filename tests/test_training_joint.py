"""Stage III (``joint``) on tiny models: its config and presets; the rewards equal the public reward functions they
are assembled from; the group-drop rule; the old adapter starts as the trained one and follows θ_old ← dθ_old +
(1 − d)θ; selected answers replay as in the whole rollout; one GRPO step raises the log-probability of the answers
with a positive advantage and lowers the others; the artist update is A_max · DiffusionNFT + λ KL on the same
draws; a run logs the time split, every reward term, both losses and exports both halves that load back.

Slow: two ranks (FSDP) stopped after two steps and resumed give the uninterrupted run's metrics exactly; two ranks
on the toy task raise the artist's mean reward; GRPO from a critic that starts mostly malformed raises the
log-probability of its well-formed answer.

The toy task is one the tiny artist can reach: its random DiT turns any input into blocky colour noise (the tiny VAE
reproduces photos, ``spc_fast.models.tiny_vae``, but a random DiT has not learnt to edit them), so the inputs are
such images — 16 decodes of normal latents at the scale of the DiT's outputs — and each target is its input +0.35 EV,
the suggestion "slightly increase light&exposure". Photos, which need an artist that starts as an editor (stage II),
are in bench/RESULTS.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from launch import train_command

from spc_fast import imagefiles, retouch
from spc_fast.adapters import adapter_active, adapters_disabled
from spc_fast.config import CriticConfig
from spc_fast.critic.format import parse
from spc_fast.critic.policy import CriticRollout
from spc_fast.kernels import dispatch
from spc_fast.models import load_artist, load_critic, tiny_artist
from spc_fast.rewards import artist_reward, format_reward, load_lpips, suggestion_reward
from spc_fast.rl_losses import nft_loss_reference, optimality_from_advantage
from spc_fast.roles import Judgement
from spc_fast.training.config import train_config, write_config
from spc_fast.training.data.manifest import Record, write_manifest
from spc_fast.training.flow import draw_flow, noisy_latents
from spc_fast.training.joint import JointStage, JointTrainer
from spc_fast.training.joint_config import RLConfig, joint_config, read_joint_config
from spc_fast.training.joint_models import OLD, adapter_pairs, decay, select_rows, update_old
from spc_fast.training.joint_step import artist_rollouts, artist_update, critic_rollouts, critic_update
from spc_fast.training.rewards_joint import advantages, joint_rewards, kept_groups
from spc_fast.training.stages import CriticSFT
from spc_fast.training.trainer import Trainer

CPU = torch.device("cpu")
ANSWER = "<think>Dark.</think><edit_start>1. slightly increase light&exposure</edit_end><answer>40</answer>"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", dispatch.SETTING_ENV: "torch"}  # kernels: tested elsewhere


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def torch_ops(torch_path):
    """The losses and attributes on their torch path: the Triton interpreter would only make these tests slow."""


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """The toy task (module docstring): 16 pairs with annotations, and ``TOY/score`` the same inputs as score
    records (stage I teaches a critic the score only from those)."""
    out = tmp_path_factory.mktemp("toy")
    artist = tiny_artist(0)
    with torch.no_grad():
        latents = torch.randn(16, 16, 8, 8, generator=torch.Generator().manual_seed(0)) * 1.2
        seen = (artist.decode(latents) * 255).round().to(torch.uint8)
    targets = retouch.apply(seen, exposure=0.35)
    pairs, scores = [], []
    for i in range(16):
        imagefiles.save_image(out / f"in{i}.png", seen[i])
        imagefiles.save_image(out / f"gt{i}.png", targets[i])
        common = dict(input=out / f"in{i}.png", width=64, height=64, annotation=ANSWER)
        pairs.append(
            Record(
                id=f"toy-{i:02d}",
                task="retouch",
                target=out / f"gt{i}.png",
                suggestions=("slightly increase light&exposure",),
                **common,
            )
        )
        scores.append(Record(id=f"score-{i:02d}", task="score", **common))
    write_manifest(out, pairs)
    write_manifest(out / "score", scores)
    return out


# the toy task is made for the random tiny models; a random DiT needs ten times the preset's artist step (made for
# the tiny start's trained one) to move within 20 steps
RANDOM_START = ["tiny_start=false", "critic.max_new_tokens=32", "rl.artist_lr=5e-2"]


def _config(data: Path, *overrides: str):
    return joint_config("tiny", [f"data={data}", *RANDOM_START, *overrides])


@pytest.fixture(scope="module")
def stage(toy) -> JointStage:
    built = JointStage()
    built.build(_config(toy), CPU)
    return built


# ---- config -------------------------------------------------------------------------------------------------------


def test_presets_validation_and_the_config_file_round_trip(tmp_path):
    release = joint_config("release")
    assert (release.rl.critic_lr, release.rl.artist_lr, release.rl.kl_weight, release.rl.nft_beta) == (
        1e-5,
        3e-4,
        1e-4,
        1.0,
    )
    assert (release.rl.drop_std, release.rl.drop_mean, release.pixels, release.artist.pixels) == (
        0.05,
        0.9,
        512 * 512,
        512 * 512,
    )
    tiny = joint_config("tiny", ["rl.answers=3", "data=/data"])
    assert tiny.stage == "joint" and tiny.rl.answers == 3 and tiny.rl.artist_group_size == 4
    write_config(tmp_path / "config.toml", tiny)
    assert read_joint_config(tmp_path / "config.toml") == tiny
    for overrides, message in (
        (["lora=false"], "LoRA adapters only"),
        (["optim.grad_accum=2"], "grad_accum=1"),
        (["rl.edits=1"], "two edits"),
        (["rl.answers=1"], "answers must be at least 2"),
        (["critic.weights=/models/critic"], "tiny_start=false"),
    ):
        with pytest.raises(ValueError, match=message):
            joint_config("tiny", overrides)
    with pytest.raises(ValueError, match="JointConfig"):
        JointTrainer(config=train_config("joint", "tiny"))


# ---- rewards and advantages ---------------------------------------------------------------------------------------


def test_rewards_are_the_public_reward_functions_assembled(photos):
    torch.manual_seed(0)
    x = torch.from_numpy(photos["chelsea"][:64, :64].copy()).permute(2, 0, 1)[None].float().repeat(2, 1, 1, 1) / 255
    x[1] = x[1].flip(-1)
    x_gt = retouch.apply(x, exposure=0.5)
    edits = retouch.apply(x.repeat_interleave(4, 0), exposure=torch.linspace(-0.5, 1.0, 8, dtype=torch.float64))
    texts = [ANSWER, "no tags at all", ANSWER.replace("increase", "decrease"), ANSWER.replace("40", "90")]
    outputs = [parse(t) for t in texts]
    rl = RLConfig(answers=2, edits=2, lambda_perc=0.5)
    lpips = load_lpips(random_backbone=True)
    scores = torch.tensor([50.0, 30.0, math.nan, 20.0, 95.0, 95.0, 10.0, 10.0])
    got = joint_rewards(x, x_gt, edits, outputs, [(), ("haze",)], scores, rl, lpips)
    suggestions = [o.suggestions for o in outputs for _ in range(2)]
    expected = artist_reward(x.repeat_interleave(4, 0), edits, x_gt.repeat_interleave(4, 0), suggestions, lpips)
    torch.testing.assert_close(got.artist, expected)
    fmt = format_reward(texts)
    rank = torch.tensor([0.5, 0.0, 1.0, 0.0])  # score 40 < 50 once; no score; 40 < 95 twice; 90 > 10
    sugg = suggestion_reward(x.repeat_interleave(2, 0), x_gt.repeat_interleave(2, 0), [o.suggestions for o in outputs])
    restore = torch.tensor([0.0, 0.0, 0.0, 0.0])  # no answer suggests removing haze
    weights = torch.tensor([3.0, 3.0, 4.0, 4.0])  # the restoration term counts on the haze image only
    torch.testing.assert_close(got.critic, (fmt + rank + sugg + restore) / weights)


def test_groups_with_flat_or_high_rewards_are_dropped():
    rl = RLConfig()
    rewards = torch.tensor([0.2, 0.21, 0.1, 0.9, 0.95, 0.97, 0.3, 0.3])
    assert kept_groups(rewards, 2, rl).tolist() == [False, True, False, False]
    adv, kept = advantages(rewards, 2, rl)
    assert kept.tolist() == [False, False, True, True, False, False, False, False]
    assert adv[2] < 0 < adv[3]


# ---- the models -----------------------------------------------------------------------------------------------------


def test_the_old_adapter_starts_as_the_trained_one_and_follows_it(stage):
    transformer = stage.artist.transformer
    pairs = adapter_pairs(transformer)
    assert all(torch.equal(old, new) for old, new in pairs)
    assert all(not old.requires_grad for old, _ in pairs) and any(new.requires_grad for _, new in pairs)
    assert [decay(s, 0.001, 0.5) for s in (0, 10, 499, 2000)] == pytest.approx([0.0, 0.01, 0.499, 0.5])
    before = [old.detach().clone() for old, _ in pairs]
    with torch.no_grad():
        for _, new in pairs:
            new.add_(0.1)
    update_old(transformer, 0.25)
    for (old, new), was in zip(pairs, before, strict=True):
        torch.testing.assert_close(old, 0.25 * was + 0.75 * new)
    with torch.no_grad():
        for (old, new), was in zip(pairs, before, strict=True):
            new.copy_(was)
            old.copy_(was)


def test_selected_answers_replay_as_in_the_whole_rollout(stage, toy):
    batch = stage.collate([stage.sample(r) for r in _records(toy)[:2]])
    rollout = critic_rollouts(stage.critic, stage.critic_policy, batch, stage.config.rl, 0, 1)
    whole = stage.critic.token_logprobs(rollout)
    rows = torch.tensor([1, 3])
    part = stage.critic.token_logprobs(select_rows(rollout, rows))
    torch.testing.assert_close(part, whole[rows][:, : part.shape[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whole, rollout.logprobs, atol=1e-4, rtol=1e-4)  # the sampler's own log-probs


def _records(data: Path) -> list[Record]:
    from spc_fast.training.data.manifest import read_manifest

    return read_manifest(data)[0]


def test_a_grpo_step_raises_the_answers_with_positive_advantage(stage, toy):
    batch = stage.collate([stage.sample(r) for r in _records(toy)[:1]])
    rl = stage.config.rl
    rollout = critic_rollouts(stage.critic, stage.critic_policy, batch, rl, 0, 2)
    advantage = torch.tensor([1.0, -1.0])
    before = stage.critic.token_logprobs(rollout).sum(1)
    parameters = [p for p in stage.critic_policy.parameters() if p.requires_grad]
    totals = critic_update(stage.critic_policy, rollout, advantage, torch.ones(2, dtype=torch.bool), 0.5, rl)
    with torch.no_grad():
        saved = [p.detach().clone() for p in parameters]
        for p in parameters:
            p -= 0.05 * p.grad
            p.grad = None
    after = stage.critic.token_logprobs(rollout).sum(1)
    with torch.no_grad():
        for p, was in zip(parameters, saved, strict=True):
            p.copy_(was)
    assert after[0] > before[0] and after[1] < before[1]
    assert totals["tokens"] == float(rollout.lengths.sum()) and totals["clipped"] == 0.0


def test_the_artist_update_is_nft_times_a_max_plus_kl_on_the_same_draws(stage, toy):
    rl = RLConfig(answers=2, edits=2, rollout_steps=2, kl_weight=0.5, update_batch=8)
    batch = stage.collate([stage.sample(r) for r in _records(toy)[:1]])
    rollout = critic_rollouts(stage.critic, stage.critic_policy, batch, rl, 0, 3)
    edits = artist_rollouts(stage.velocity, batch, rollout, rl, 0, 3)
    with torch.no_grad():  # an old adapter that differs from the trained one
        for old, _ in adapter_pairs(stage.artist.transformer):
            old.mul_(1.5)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    totals = artist_update(stage.velocity, stage.artist, edits, adv, torch.ones(4, dtype=torch.bool), 0.25, rl, 0, 3)
    h, w = edits.img_shapes[0][0][1:]
    draws = draw_flow(
        0, 3, edits.ids, tuple(edits.x0.shape[1:]), h * w, stage.artist.scheduler, stage.artist.config.strength
    )
    x_t = noisy_latents(edits.x0, draws.noise, draws.t)
    args = (x_t, edits.source, draws.t, edits.h_c, edits.mask.bool(), edits.img_shapes)
    with torch.no_grad():
        v_theta = stage.velocity(*args)
        with adapter_active(stage.artist.transformer, OLD):
            v_old = stage.velocity(*args)
        with adapters_disabled(stage.artist.transformer):
            v_ref = stage.velocity(*args)
    policy = nft_loss_reference(
        v_theta, v_old, draws.noise - edits.x0, draws.t, optimality_from_advantage(adv), 1.0, True, None, 0.0
    )
    kl = (v_theta - v_ref).square().flatten(1).mean(1)
    expected = (rl.a_max * policy + 0.5 * kl).sum() * 0.25
    assert totals["loss"] == pytest.approx(float(expected), rel=1e-4)
    for p in stage.velocity.parameters():
        p.grad = None
    with torch.no_grad():
        for old, new in adapter_pairs(stage.artist.transformer):
            old.copy_(new)


# ---- a run --------------------------------------------------------------------------------------------------------


def test_a_run_logs_the_time_split_and_every_term_and_exports_both_halves(toy, tmp_path):
    run = tmp_path / "run"
    config = _config(toy, f"out={run}", "steps=2", "checkpoint_every=0")
    summary = JointTrainer(config=config).run()
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [1, 2] and summary.final == run / "final"
    for key in (
        "loss",
        "loss/artist",
        "loss/critic",
        "reward/artist",
        "reward/critic",
        "reward/artist/photo",
        "reward/artist/comp",
        "reward/critic/format",
        "reward/critic/rank",
        "reward/critic/suggestion",
        "kl",
        "kl/artist",
        "clip_fraction",
        "kept/artist",
        "advantage_spread/artist",
        "time/critic_rollout",
        "time/artist_rollout",
        "time/rescore",
        "time/reward",
        "time/critic_update",
        "time/artist_update",
        "time/reward_fraction",
    ):
        assert all(math.isfinite(line[key]) for line in lines), key
    assert all(0 < line["time/reward_fraction"] < 1 for line in lines)
    critic, artist = load_critic(run / "final", CriticConfig(max_new_tokens=8)), load_artist(run / "final")
    assert critic.score(torch.zeros(1, 3, 64, 64)).shape == (1,)
    assert artist.transformer.config.joint_attention_dim == 64


# ---- slow: separate processes -------------------------------------------------------------------------------------


def _torchrun(run: Path, *args: str) -> subprocess.CompletedProcess:
    command = train_command("joint", run, *args, ranks=2)
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_ranks_stopped_and_resumed_log_the_uninterrupted_run(toy, tmp_path):
    settings = [
        "--config",
        "tiny",
        *(arg for setting in RANDOM_START for arg in ("--set", setting)),
        "--set",
        f"data={toy}",
        "--set",
        "checkpoint_every=1",
        "--set",
        "rl.edits=2",
        "--set",
        "rl.rank_weight=0",
    ]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _torchrun(whole, *settings, "--set", "steps=2")
    _torchrun(resumed, *settings, "--set", "steps=1")
    _torchrun(resumed, "--resume", "--set", "steps=2")
    keys = ("loss", "loss/artist", "loss/critic", "reward/artist", "reward/critic", "kl", "grad_norm/artist")
    for a, b in zip(_metrics(whole), _metrics(resumed), strict=True):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert (resumed / "final" / "dit_lora").is_dir() and (resumed / "final" / "vlm_lora").is_dir()


@pytest.mark.slow
def test_two_ranks_raise_the_artists_reward_on_the_toy_task(toy, tmp_path):
    run = tmp_path / "run"
    # DDP: the same per-rank arithmetic as FSDP (tested above) without its all-gather per decoded token; no
    # re-scoring (the critic's rank reward does not change what the artist learns)
    _torchrun(
        run,
        "--config",
        "tiny",
        *(arg for setting in RANDOM_START for arg in ("--set", setting)),
        "--set",
        f"data={toy}",
        "--set",
        "steps=20",
        "--set",
        "checkpoint_every=0",
        "--set",
        "parallel.mode=ddp",
        "--set",
        "rl.rank_weight=0",
    )
    rewards = [line["reward/artist"] for line in _metrics(run)]
    assert sum(rewards[-6:]) / 6 > sum(rewards[:6]) / 6 + 0.04, rewards
    assert all(line["time/reward_fraction"] < 0.1 for line in _metrics(run))


@pytest.mark.slow
def test_grpo_raises_the_log_probability_of_the_well_formed_answer(toy, tmp_path):
    """The tiny random critic writes no well-formed answer at all (every group is dropped: no signal), so it starts
        from 24 steps of stage I, after which fewer than half of its sampled answers are well formed (the others break
    the tags or the score somewhere in their ~30 tokens at temperature 1). GRPO moves it slowly (bench/RESULTS.md)."""
    warm = tmp_path / "warm"
    sft = train_config(
        "critic-sft",
        "tiny",
        [
            f"data={toy / 'score'}",
            f"out={warm}",
            "steps=24",
            "lora=false",
            "optim.lr=3e-3",
            "checkpoint_every=0",
            "critic.max_new_tokens=40",
        ],
    )
    Trainer(CriticSFT(), sft).run()
    built = JointStage()
    built.build(_config(toy, f"critic.weights={warm / 'final'}", "critic.max_new_tokens=40", "rl.answers=16"), CPU)
    rl = built.config.rl
    batch = built.collate([built.sample(r) for r in _records(toy)[:1]])
    reference = _teacher_forced(built, batch)
    optimizer = torch.optim.AdamW([p for p in built.critic_policy.parameters() if p.requires_grad], lr=3e-3)
    formats = []
    for step in range(10):
        rollout = critic_rollouts(built.critic, built.critic_policy, batch, rl, 0, step)
        rewards = format_reward(rollout.judgement.outputs)
        formats.append(float(rewards.mean()))
        adv, kept = advantages(rewards, rl.answers, rl)
        if kept.any():
            critic_update(built.critic_policy, rollout, adv, kept, 1 / float(kept.sum()), rl)
            optimizer.step()
            optimizer.zero_grad()
    assert formats[0] < 0.7 and _teacher_forced(built, batch) > reference + 0.02, (formats, reference)


def _teacher_forced(stage: JointStage, batch: dict) -> float:
    """log p(ANSWER + end of turn | image) under the critic's current weights."""
    critic = stage.critic
    tokenizer = critic.processor.tokenizer
    ids = tokenizer(ANSWER, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    tokens = torch.tensor([ids])
    rollout = CriticRollout(
        Judgement(texts=[ANSWER], outputs=[parse(ANSWER)]),
        tokens,
        torch.tensor([len(ids)]),
        torch.zeros(tokens.shape),
        critic.build_inputs(batch["image"]),
    )
    return float(critic.token_logprobs(rollout).sum())
