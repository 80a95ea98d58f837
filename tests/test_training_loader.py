"""The training loader: batches of one bucket, rank shards, the (k W + r) property that makes W ranks equal one rank
with W-step gradient accumulation, determinism in (seed, epoch), and exact resume from ``state_dict``."""

from __future__ import annotations

import itertools

import pytest
import torch

from spc_fast.training.data.loader import BucketBatches, Loader

# 7 + 10 + 5 records in three buckets: with batches of 2 an epoch has 3 + 5 + 2 = 10 batches (two records wait)
KEYS = [(64, 48)] * 7 + [(48, 64)] * 10 + [(32, 32)] * 5
KEYS = [KEYS[(i * 7) % len(KEYS)] for i in range(len(KEYS))]  # interleaved, as records come
BATCH = 2


def _take(iterator, n: int) -> list:
    return list(itertools.islice(iterator, n))


def test_batches_hold_one_bucket_and_an_epoch_uses_each_record_at_most_once():
    plan = BucketBatches(KEYS, BATCH, seed=3)
    assert plan.batches_per_epoch == 10
    for epoch in range(3):
        batches = plan.epoch(epoch)
        assert len(batches) == 10 and all(len(b) == BATCH and len({KEYS[i] for i in b}) == 1 for b in batches)
        used = [i for b in batches for i in b]
        assert len(used) == len(set(used)) == 20


def test_the_plan_is_a_function_of_seed_and_epoch():
    plan = BucketBatches(KEYS, BATCH, seed=3)
    assert BucketBatches(KEYS, BATCH, seed=3).epoch(4) == plan.epoch(4)
    assert plan.epoch(4) != plan.epoch(5)
    assert BucketBatches(KEYS, BATCH, seed=4).epoch(4) != plan.epoch(4)
    assert _take(iter(plan), 25) == plan.epoch(0) + plan.epoch(1) + plan.epoch(2)[:5]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_rank_k_takes_the_one_rank_batch_k_w_plus_r(world):
    one = _take(iter(BucketBatches(KEYS, BATCH, seed=9)), 40)
    for rank in range(world):
        shard = _take(iter(BucketBatches(KEYS, BATCH, rank=rank, world_size=world, seed=9)), 40 // world)
        assert shard == [one[k * world + rank] for k in range(40 // world)]


@pytest.mark.parametrize("world", [2, 3])
def test_rank_shards_of_an_epoch_are_disjoint_and_equal_in_count(world):
    plans = [BucketBatches(KEYS, BATCH, rank=r, world_size=world, seed=1) for r in range(world)]
    epoch = plans[0].epoch(0)
    per_rank = [[b for k, b in enumerate(_take(iter(p), 10)) if p.position(k)[0] == 0] for p in plans]
    counts = [len(s) for s in per_rank]
    assert sorted(tuple(b) for s in per_rank for b in s) == sorted(tuple(b) for b in epoch)  # disjoint, complete
    if 10 % world == 0:
        assert counts == [10 // world] * world
    else:
        assert max(counts) - min(counts) == 1


def test_plan_errors_name_the_problem():
    with pytest.raises(ValueError, match="no bucket holds a full batch"):
        BucketBatches(KEYS, 11)
    with pytest.raises(ValueError, match="rank"):
        BucketBatches(KEYS, BATCH, rank=2, world_size=2)
    plan = BucketBatches(KEYS, BATCH, rank=1, world_size=2)
    with pytest.raises(ValueError, match="not a batch of rank 1 of 2"):
        plan.count(0, 2)
    with pytest.raises(ValueError, match="outside the plan"):
        plan.count(0, 10)


def _sample(record: int) -> dict:
    return {"id": record, "pixels": torch.full((2, 2), float(record))}


def _collate(samples: list[dict]) -> dict:
    return {"ids": [s["id"] for s in samples], "pixels": torch.stack([s["pixels"] for s in samples])}


def _bucket(record: int):
    return KEYS[record]


def _loader(workers: int = 0, rank: int = 0, world: int = 1) -> Loader:
    return Loader(
        range(len(KEYS)),
        _sample,
        _collate,
        batch_size=BATCH,
        bucket_fn=_bucket,
        rank=rank,
        world_size=world,
        seed=7,
        workers=workers,
        prefetch=2,
    )


def test_loader_collates_the_plan():
    loader = _loader()
    plan = BucketBatches(KEYS, BATCH, seed=7)
    batches = _take(loader, 12)
    assert [b["ids"] for b in batches] == _take(iter(plan), 12)
    assert batches[0]["pixels"].shape == (BATCH, 2, 2)
    assert loader.state_dict() == {"epoch": 1, "batch": 2} and loader.epoch == 1


def test_loader_resumes_exactly_at_every_point():
    reference = [b["ids"] for b in _take(_loader(), 27)]
    loader = _loader()
    for stop in range(24):
        state = loader.state_dict()
        resumed = _loader()
        resumed.load_state_dict(state)
        assert [b["ids"] for b in _take(resumed, 3)] == reference[stop : stop + 3]
        assert next(loader)["ids"] == reference[stop]


def test_loader_with_workers_and_prefetch_resumes_at_the_batches_handed_out():
    reference = [b["ids"] for b in _take(_loader(rank=1, world=2), 14)]
    loader = _loader(workers=2, rank=1, world=2)
    try:
        assert [b["ids"] for b in _take(loader, 5)] == reference[:5]  # the workers have prefetched beyond these
        state = loader.state_dict()
        assert [b["ids"] for b in _take(loader, 2)] == reference[5:7]
        resumed = _loader(workers=2, rank=1, world=2)
        resumed.load_state_dict(state)
        assert [b["ids"] for b in _take(resumed, 9)] == reference[5:14]
        resumed.close()
        loader.load_state_dict(state)  # rewinding a running loader drops what it prefetched
        assert next(loader)["ids"] == reference[5]
    finally:
        loader.close()
