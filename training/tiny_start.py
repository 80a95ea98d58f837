"""Stage III's starting point for the tiny models: a tiny critic and artist after stages I–II, as the paper's stage III
starts from stage II's weights. From random weights stage III has nothing to reinforce: a random critic never writes
a well-formed answer (its format reward is 0 for every sample, so every critic group is dropped) and its H_c carries
no suggestion.

The recipe (``TinyStartRecipe``) makes procedural scenes (smooth colour fields, ellipses, uneven light: no photo, so
stage III's check meets photos neither stage has seen), synthesises pairs from them with ``spc-fast data build``,
shortens every annotation to one suggestion and a score so that an answer fits the tiny critic's token budget (and
adds a score record per pair, since editing records do not teach the score), then runs ``critic-sft`` (full
fine-tuning, stopped while the critic is still mostly malformed: about one answer in five is well formed at
temperature 1) and ``artist-sft`` on H_c from that critic, each as the command users run, in a child process.

``tiny_start()`` builds once per recipe, tiny model configs and library versions into the cache
(``$SPC_FAST_CACHE``, else ``~/.cache/spc-fast``), atomically and under a lock, so concurrent runs build it once and
an interrupted build leaves nothing a later run would take for finished.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spc_fast.critic.format import parse, render
from spc_fast.critic.vocabulary import CriticOutput
from spc_fast.models.qwen_image import TINY_DIT_CONFIG, TINY_VAE_CONFIG
from spc_fast.training.data.build import build
from spc_fast.training.data.manifest import Record, read_manifest, write_manifest
from spc_fast.training.joint_config import TINY_ANSWER_TOKENS

CRITIC, ARTIST = "critic", "artist"
# the variables torchrun sets: a child stage must not join its parent's process group
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                     "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class TinyStartRecipe:
    """How the starting point is made. ``critic_steps`` stops the critic while most of its answers are still
    malformed (measured: 14 of 64 sampled answers well formed at temperature 1 after 60 steps, 2 of 64 after 40,
    where stage III's format reward barely moved); ``artist_steps`` at ``artist_batch`` take the random DiT's
    flow-matching loss from 1.5 to about 0.06, where its edits carry the source image through (120 steps at batch 2
    left it near 1.0, with edits that kept little of the photo and scored below its VAE round trip)."""

    scenes: int = 16
    scene_side: int = 192
    pairs: int = 64
    seed: int = 0
    critic_steps: int = 60
    critic_lr: float = 3e-3
    artist_steps: int = 300
    artist_batch: int = 16
    artist_lr: float = 3e-3
    answer_tokens: int = TINY_ANSWER_TOKENS
    revision: int = 3  # the recipe's code: a change to what it builds takes a new cache entry

    def key(self) -> str:
        versions = {"torch": torch.__version__, "python": sys.version.split()[0]}
        models = {"dit": TINY_DIT_CONFIG, "vae": TINY_VAE_CONFIG}  # a start built for other tiny models is stale
        text = json.dumps({"recipe": dataclasses.asdict(self), **models, **versions}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def cache_root() -> Path:
    return Path(os.environ.get("SPC_FAST_CACHE") or Path.home() / ".cache" / "spc-fast")


def scene(seed: int, side: int) -> np.ndarray:
    """A procedural [side, side, 3] uint8 scene: a smooth colour field, 3–7 flat ellipses, a lighting gradient and
    fine grain, all drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    image = F.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(side, side), mode="bicubic", align_corners=False)
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
    for _ in range(int(torch.randint(3, 8, (1,), generator=g))):
        cx, cy, rx, ry = (torch.rand(4, generator=g) * torch.tensor([2.0, 2.0, 0.5, 0.5])
                          + torch.tensor([-1.0, -1.0, 0.1, 0.1])).tolist()  # fmt: skip
        inside = (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1).float()
        image = image * (1 - inside) + torch.rand(3, 1, 1, generator=g) * inside
    tilt = torch.rand(2, generator=g)
    light = 0.6 + 0.4 * (1 - (x * tilt[0] + y * tilt[1]).abs().clamp(0, 1))
    grain = F.interpolate(torch.randn(1, 1, side // 2, side // 2, generator=g), size=(side, side), mode="bilinear")
    image = (image * light + 0.03 * grain).clamp(0, 1)
    return (image[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def short_records(records: list[Record], seed: int) -> list[Record]:
    """Each editing record with its annotation cut to its first suggestion, plus a score record for its input with
    a score drawn from ``seed`` (editing records do not teach the score)."""
    rng = np.random.default_rng(seed)
    out = []
    for record in records:
        first = parse(record.annotation or "").suggestions[:1]
        score = float(rng.integers(20, 90))
        # stage I does not train an editing record's score tokens: its value there is a placeholder
        for task, value in ((record.task, 100.0), ("score", score)):
            answer = render(CriticOutput("Judged.", list(first), value, [], no_edit=not first))
            name = record.id if task == record.task else f"score-{record.id}"
            mos = score if task == "score" else None
            out.append(dataclasses.replace(record, id=name, task=task, annotation=answer, mos=mos))
    return out


def _stage(stage: str, run: Path, settings: dict[str, object]) -> Path:
    """``spc-fast train STAGE --config tiny`` with ``settings`` in a child process; its exported weights."""
    overrides = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, "-m", "spc_fast.training", stage, "--config", "tiny", *overrides, "--out", str(run)]
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"building the tiny start: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return run / "final"


def build_tiny_start(directory: Path, recipe: TinyStartRecipe) -> None:
    """The recipe's critic and artist at ``directory/critic`` and ``directory/artist`` (``directory`` must not
    exist: the caller renames a finished build into place)."""
    work = directory / "work"
    (work / "scenes").mkdir(parents=True)
    for i in range(recipe.scenes):
        Image.fromarray(scene(recipe.seed * 10_000 + i, recipe.scene_side)).save(work / "scenes" / f"{i:03d}.png")
    data = work / "data"
    build(work / "scenes", data, pairs=recipe.pairs, seed=recipe.seed, max_side=recipe.scene_side)
    write_manifest(data, short_records(read_manifest(data)[0], recipe.seed))
    common = {"data": data, "lora": "false", "critic.max_new_tokens": recipe.answer_tokens, "seed": recipe.seed}
    critic = _stage("critic-sft", work / "critic-run", {**common, "steps": recipe.critic_steps,
                    "checkpoint_every": recipe.critic_steps, "optim.lr": recipe.critic_lr})  # fmt: skip
    artist = _stage("artist-sft", work / "artist-run", {**common, "steps": recipe.artist_steps,
                    "checkpoint_every": recipe.artist_steps, "optim.lr": recipe.artist_lr,
                    "batch_size": recipe.artist_batch,
                    "critic.weights": critic})  # fmt: skip
    critic.rename(directory / CRITIC)
    artist.rename(directory / ARTIST)
    (directory / "recipe.json").write_text(json.dumps(dataclasses.asdict(recipe), indent=1))
    shutil.rmtree(work)


def tiny_start(recipe: TinyStartRecipe | None = None, root: Path | None = None) -> tuple[Path, Path]:
    """The (critic, artist) directories of the recipe's starting point, built on first use (minutes on a CPU)."""
    recipe = recipe or TinyStartRecipe()
    root = root or cache_root()
    directory = root / f"tiny-start-{recipe.key()}"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits here for the first one's build
        if not (directory / "recipe.json").is_file():
            partial = root / f"{directory.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # an interrupted build
            build_tiny_start(partial, recipe)
            partial.rename(directory)
    return directory / CRITIC, directory / ARTIST
