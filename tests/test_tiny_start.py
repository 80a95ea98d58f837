"""The tiny models' stage I–II starting point for stage III (``training/tiny_start.py``): procedural scenes, short
answers that fit the tiny critic's token budget, and a build that happens once, atomically, under a lock."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spc_fast.critic.format import parse
from spc_fast.models import load_artist, load_critic, qwen_image
from spc_fast.models.factory import tiny_critic_corpus
from spc_fast.models.qwen_vl import build_tiny_critic
from spc_fast.rewards.critic import well_formed
from spc_fast.training.data.build import build
from spc_fast.training.data.manifest import read_manifest
from spc_fast.training.joint_config import TINY_ANSWER_TOKENS
from spc_fast.training.tiny_start import TinyStartRecipe, scene, short_records, tiny_start

SMALL = TinyStartRecipe(scenes=2, scene_side=64, pairs=3, critic_steps=2, artist_steps=2, artist_batch=2)


def test_scenes_are_seeded_and_differ():
    a, b = scene(0, 64), scene(1, 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, scene(0, 64)) and not np.array_equal(a, b)
    assert a.std() > 10  # not a flat field


def test_short_answers_are_well_formed_and_fit_the_token_budget(tmp_path):
    photos = tmp_path / "scenes"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(scene(i, 64)).save(photos / f"{i}.png")
    build(photos, tmp_path / "data", pairs=6, seed=0, max_side=64)
    records = read_manifest(tmp_path / "data")[0]
    short = short_records(records, seed=0)
    assert len(short) == 2 * len(records)
    assert [r.task for r in short[1::2]] == ["score"] * len(records)
    tokenizer = build_tiny_critic(0, corpus=tiny_critic_corpus())[1].tokenizer
    for record, answer in zip(records, short[::2], strict=True):
        output = parse(answer.annotation)
        assert well_formed(output)
        assert output.suggestions == parse(record.annotation).suggestions[:1]
        assert len(tokenizer(answer.annotation)["input_ids"]) <= TINY_ANSWER_TOKENS
    scores = [r.mos for r in short[1::2]]
    assert all(20 <= s < 90 for s in scores) and len(set(scores)) > 1
    assert all(parse(r.annotation).score == r.mos for r in short[1::2])


@pytest.mark.slow
def test_the_start_is_built_once_and_loads(tmp_path):
    root = tmp_path / "cache"
    stale = root / f"tiny-start-{SMALL.key()}.partial"
    (stale / "leftover").mkdir(parents=True)  # an interrupted build
    critic_dir, artist_dir = tiny_start(SMALL, root)
    assert not stale.exists()
    recipe_file = critic_dir.parent / "recipe.json"
    built_at = recipe_file.stat().st_mtime_ns
    assert tiny_start(SMALL, root) == (critic_dir, artist_dir)
    assert recipe_file.stat().st_mtime_ns == built_at  # read from the cache, not built again
    assert not (critic_dir.parent / "work").exists()
    critic = load_critic(critic_dir)
    artist = load_artist(artist_dir)
    assert critic.model.config.text_config.hidden_size == artist.transformer.config.joint_attention_dim
    other = TinyStartRecipe(scenes=2, scene_side=64, pairs=3, critic_steps=3, artist_steps=2)
    assert other.key() != SMALL.key()  # another recipe is another cache entry


def test_the_cache_key_covers_the_tiny_model_configs(monkeypatch):
    """A start built for other tiny models is another cache entry, never reused."""
    before = SMALL.key()
    monkeypatch.setitem(qwen_image.TINY_DIT_CONFIG, "num_attention_heads", 4)
    assert SMALL.key() != before
    monkeypatch.undo()
    assert SMALL.key() == before
