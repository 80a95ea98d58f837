"""Sampling from a critic sharded over two ranks (FSDP2, as stage III samples): each decode step all-gathers the
weights, so ranks whose answers end at different steps must still decode together. Rank 0 here stops at its first
token, rank 1 runs to the token limit; with ``stop_group`` both return, each with its own answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launch import free_port

MAX_NEW_TOKENS = 24


def _worker(out: Path) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from spc_fast.models import tiny_critic
    from spc_fast.training.joint_models import CriticPolicy

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    critic = tiny_critic()
    model = critic.model
    policy = CriticPolicy(model, critic)  # the root module stage III shards: embeddings and head gathered there
    for layer in model.model.language_model.layers:
        fully_shard(layer)
    fully_shard(policy)
    generator = critic.generator
    generator.stop_group = dist.group.WORLD
    if rank == 0:
        vocab = model.config.text_config.vocab_size
        generator.stop_ids = torch.arange(vocab)  # every token ends the answer
    image = torch.full((32, 32, 3), 40 + 80 * rank, dtype=torch.uint8).numpy()
    options = {"num_samples": 2, "temperature": 1.0, "max_new_tokens": MAX_NEW_TOKENS}
    rollout = policy(sample={"images": [image], "generator": torch.Generator().manual_seed(rank), **options})
    (out / f"rank{rank}.json").write_text(json.dumps({"lengths": rollout.lengths.tolist()}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_ranks_stop_decoding_together(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), __file__, str(tmp_path)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    lengths = [json.loads((tmp_path / f"rank{r}.json").read_text())["lengths"] for r in range(2)]
    assert lengths[0] == [1, 1]
    assert all(n > 1 for n in lengths[1])  # rank 1 went on decoding after rank 0's answers ended


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
