"""The settings of stage III (``joint``): ``RLConfig``, the reinforcement-learning knobs, inside ``JointConfig``, a
``TrainConfig`` with an ``rl`` table. Every value not fixed by SPEC.md §7–8 says here where it comes from.

``optim`` keeps its meaning for both optimizers (schedule, warm-up, betas, weight decay, clip) except the learning
rate: the critic's and the artist's are ``rl.critic_lr`` and ``rl.artist_lr`` (SPEC.md §8: 1e-5 and 3e-4), and
``optim.lr`` is not read. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from spc_fast.config import TINY, layered, load_toml, override
from spc_fast.training.config import PRESET_NAMES, TrainConfig, preset

STAGE = "joint"
TINY_ANSWER_TOKENS = 48  # the tiny critic's token budget: a short answer takes 33–36 tokens (training/tiny_start.py)
ARTIST_GROUPS = ("answer", "image")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True, kw_only=True)
class RLConfig:
    """One step: ``batch_size`` images per rank, ``answers`` (G) critic answers per image, ``edits`` (K) artist
    edits per answer. Artist advantages are normalised over the K edits of one answer (``artist_group = "answer"``:
    the edits share their conditioning, so the critic's choice does not leak into the artist's credit) or over the
    G·K edits of one image (``"image"``); critic advantages over the G answers of one image."""

    answers: int = 4
    edits: int = 4
    rollout_steps: int = 6  # Edit-R1's rollout steps (inference uses 20)
    temperature: float = 1.0  # critic sampling, as TRL's GRPO default
    top_p: float = 1.0
    critic_lr: float = 1e-5  # SPEC.md §8
    artist_lr: float = 3e-4  # SPEC.md §8
    epsilon: float = 0.2  # GRPO clip, SPEC.md §7
    beta_kl: float = 0.04  # GRPO KL to the reference critic (adapters disabled), SPEC.md §7
    nft_beta: float = 1.0  # SPEC.md §8
    a_max: float = 5.0  # advantage clip of the optimality r and the policy-loss scale, SPEC.md §7–8
    kl_weight: float = 1e-4  # the artist's KL to the reference DiT (adapters disabled); 0 turns it off
    adaptive: bool = True  # DiffusionNFT's adaptive x0-space weighting (the official trainer's)
    decay_rate: float = 0.001  # old adapter: d = min(decay_rate · step, decay_max), Edit-R1's schedule
    decay_max: float = 0.5
    drop_std: float = 0.05  # groups with a reward std below this are dropped (SPEC.md §8)
    drop_mean: float = 0.9  # ... or with a mean reward above this
    artist_group: str = "answer"
    lambda_photo: float = 1.0  # r_PA = r_comp (λ1 r_photo + λ2 r_perc), SPEC.md §8
    lambda_perc: float = 0.5
    lpips_backbone: str | None = None  # AlexNet weights file; None: torchvision's cache or $SPC_LPIPS_BACKBONE
    # The critic's reward: the weighted mean of its terms. SPEC.md §8 leaves the weights open: equal weights, so no
    # term dominates before there is evidence for one; the restoration term counts only on restoration records.
    format_weight: float = 1.0
    rank_weight: float = 1.0
    suggestion_weight: float = 1.0
    restoration_weight: float = 1.0
    rollout_batch: int = 16  # edits sampled together by the artist (rollouts and re-scoring)
    update_batch: int = 8  # samples per forward/backward of each update (gradients accumulate over the chunks)

    def __post_init__(self) -> None:
        for name, least in (
            ("answers", 2),
            ("edits", 1),
            ("rollout_steps", 2),
            ("rollout_batch", 1),
            ("update_batch", 1),
        ):
            value = getattr(self, name)
            _check(value >= least, f"rl.{name} must be at least {least}, got {value}")
        _check(
            self.artist_group in ARTIST_GROUPS,
            f"rl.artist_group must be one of {ARTIST_GROUPS}, got {self.artist_group!r}",
        )
        _check(
            self.artist_group == "image" or self.edits >= 2,
            "rl.edits must be at least 2 with rl.artist_group=answer: a group needs two edits to compare",
        )
        _check(self.temperature > 0, f"rl.temperature must be > 0 (GRPO samples answers), got {self.temperature}")
        _check(0 < self.top_p <= 1, f"rl.top_p must be in (0, 1], got {self.top_p}")
        for name in ("critic_lr", "artist_lr", "epsilon", "nft_beta", "a_max"):
            _check(getattr(self, name) > 0, f"rl.{name} must be > 0, got {getattr(self, name)}")
        for name in (
            "beta_kl",
            "kl_weight",
            "decay_rate",
            "drop_std",
            "lambda_photo",
            "lambda_perc",
            "format_weight",
            "rank_weight",
            "suggestion_weight",
            "restoration_weight",
        ):
            _check(getattr(self, name) >= 0, f"rl.{name} must be >= 0, got {getattr(self, name)}")
        _check(0 <= self.decay_max < 1, f"rl.decay_max must be in [0, 1), got {self.decay_max}")
        _check(
            self.format_weight + self.rank_weight + self.suggestion_weight > 0,
            "the critic's reward weights (rl.format_weight, rank_weight, suggestion_weight) are all 0",
        )

    @property
    def artist_group_size(self) -> int:
        return self.edits if self.artist_group == "answer" else self.answers * self.edits


@dataclass(frozen=True, kw_only=True)
class JointConfig(TrainConfig):
    """A stage III run: the trainer's settings (``TrainConfig``) and ``rl``. Both models train LoRA adapters (the
    references are the models with their adapters disabled, the artist's old policy a second adapter)."""

    rl: RLConfig = field(default_factory=RLConfig)
    tiny_start: bool = False  # start from the tiny stage I–II models (training/tiny_start.py), not random ones

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            not self.tiny_start or self.critic.weights == self.artist.weights == TINY,
            "tiny_start starts the tiny models from their stage I-II weights: it needs critic.weights and "
            f"artist.weights 'tiny', got {self.critic.weights!r} and {self.artist.weights!r}; set tiny_start=false",
        )
        _check(
            self.lora,
            "joint trains LoRA adapters only (its reference policies are the models with the "
            "adapters disabled): set lora=true",
        )
        _check(
            self.optim.grad_accum == 1,
            "joint takes one batch of images per step: set optim.grad_accum=1 "
            "(rl.update_batch splits the updates into chunks instead)",
        )


def _joint(base: TrainConfig, **changes) -> JointConfig:
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)}
    return JointConfig(**{**fields, "stage": STAGE, **changes})


def joint_preset(name: str) -> JointConfig:
    """``release``: SPEC.md §8, rollouts at 512² (the size the memory plan in bench/RESULTS.md is made for).
    ``tiny``: the tiny models on the CPU after stages I–II (``tiny_start``: random ones have nothing to
    reinforce), G = 2 answers and K = 4 edits of 2 sampler steps per image; photometric
    rewards only (λ2 = 0: no LPIPS weights needed); learning rates that move the tiny start within 60 steps
    (SPEC's 3e-4 barely moves a rank-4 adapter; the artist's 5e-3 raises the start's r_photo on the check's
    photos where 5e-2 wrecks it, bench/RESULTS.md); groups dropped only when their rewards are (almost) equal,
    because the tiny models' edits differ by a few hundredths of reward where SPEC's 0.05 would drop most groups."""
    base = preset(STAGE, name)
    if name == "release":
        artist = dataclasses.replace(base.artist, pixels=512 * 512)
        return _joint(base, pixels=512 * 512, artist=artist)
    rl = RLConfig(
        answers=2,
        edits=4,
        rollout_steps=2,
        critic_lr=3e-3,
        artist_lr=5e-3,
        drop_std=1e-3,
        lambda_perc=0.0,
        rollout_batch=16,
        update_batch=16,
    )
    critic = dataclasses.replace(base.critic, max_new_tokens=TINY_ANSWER_TOKENS)
    return _joint(base, checkpoint_every=4, rl=rl, critic=critic, tiny_start=True)


def joint_config(config: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> JointConfig:
    """The resolved config of a joint run: a preset (``tiny``, ``release``) or a TOML file laid over the release
    preset, then ``overrides`` (``key=value``; ``rl.answers=8``)."""
    if config is None or str(config) in PRESET_NAMES:
        resolved = layered(joint_preset(str(config or "release")), overrides=overrides)
    elif Path(config).suffix.lower() == ".toml" or Path(config).exists():
        resolved = layered(joint_preset("release"), file=config, overrides=overrides)
    else:
        raise ValueError(f"--config {config}: neither a preset ({', '.join(PRESET_NAMES)}) nor a TOML file")
    _check(resolved.stage == STAGE, f"the config is for stage {resolved.stage!r}, not {STAGE!r}; remove its 'stage'")
    return resolved


def read_joint_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> JointConfig:
    """The config a joint run wrote (``RUN/config.toml``), with ``overrides`` applied."""
    return override(load_toml(JointConfig, path), overrides)
