"""The ranks of a run and how the trainable module is spread over them.

``init`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; across nodes torchrun's rendezvous
sets them) or runs as a single process; the process group uses gloo on the CPU and NCCL on CUDA. ``wrap`` follows
torchtitan's order: activation checkpointing on each block, then ``torch.compile`` per block, then FSDP2
``fully_shard`` per block and on the root (or DDP). Checkpointing and compiling replace the block's ``forward`` in
place rather than wrapping the module, so parameter names — and with them checkpoints and exported weights — stay
those of the unwrapped model, and ``stage.blocks()`` keeps naming the modules that are sharded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from spc_fast.training.config import ParallelConfig
from spc_fast.training.stage import Stage


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int
    size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer (torchrun sets it)") from None


def _device(name: str | None, local_rank: int) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for but CUDA is not available; set device=cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_mode(parallel: ParallelConfig, world_size: int) -> str:
    """``auto`` is FSDP2 with more than one rank, else none."""
    if parallel.mode == "auto":
        return "fsdp" if world_size > 1 else "none"
    if parallel.mode == "none" and world_size > 1:
        raise ValueError(f"parallel.mode=none with {world_size} ranks would train {world_size} separate models; "
                         "use auto, fsdp or ddp")
    return parallel.mode


def init(device: str | None, parallel: ParallelConfig) -> World:
    """Join the run torchrun started (or run alone): the device, and the process group when there is more than one
    rank or FSDP/DDP is asked for on one (a one-rank group, e.g. FSDP with CPU offload on a single GPU)."""
    size, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    world = World(rank, size, local_rank, _device(device, local_rank))
    if not dist.is_initialized() and (size > 1 or resolve_mode(parallel, size) != "none"):
        backend = "nccl" if world.device.type == "cuda" else "gloo"
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, rank=rank, world_size=size)
        else:  # a single process with FSDP or DDP: a group of one, no rendezvous
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return world


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rank_seed(seed: int, rank: int) -> int:
    """A seed per rank, so that what draws from the global generators (dropout) differs between ranks."""
    return seed * 1_000_003 + rank


def _checkpointed(block: torch.nn.Module) -> None:
    forward = block.forward

    @functools.wraps(forward)
    def recomputed(*args, **kwargs):
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = recomputed


def _compiled(block: torch.nn.Module) -> None:
    # the forward, not the module: FSDP's hooks around the block stay outside the compiled graph
    block.forward = torch.compile(block.forward)


def wrap(stage: Stage, parallel: ParallelConfig, world: World) -> torch.nn.Module:
    """``stage.trainable()`` ready to train: activation checkpointing, compile, then FSDP2 (in place; the module
    itself is returned) or DDP (a wrapper is returned: pass it to ``stage.loss``)."""
    return wrap_module(stage.trainable(), list(stage.blocks()), parallel, world)


def wrap_module(
    module: torch.nn.Module, blocks: list[torch.nn.Module], parallel: ParallelConfig, world: World
) -> torch.nn.Module:
    """``wrap`` for any module and its blocks (a trainer of several models wraps each)."""
    mode = resolve_mode(parallel, world.size)
    if parallel.cpu_offload and mode != "fsdp":
        raise ValueError(f"parallel.cpu_offload needs parallel.mode=fsdp (the mode is {mode})")
    if parallel.activation_checkpointing:
        for block in blocks:
            _checkpointed(block)
    if parallel.compile:
        for block in blocks:
            _compiled(block)
    if mode == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh

        options = {"mesh": init_device_mesh(world.device.type, (world.size,))}
        if parallel.precision == "bf16":
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if parallel.cpu_offload:
            options["offload_policy"] = CPUOffloadPolicy(pin_memory=world.device.type == "cuda")
        for i, block in enumerate(blocks):
            # the last block's backward starts at once: keeping it unsharded saves one all-gather
            fully_shard(block, reshard_after_forward=i < len(blocks) - 1, **options)
        fully_shard(module, **options)
        return module
    if mode == "ddp":
        device_ids = [world.device.index] if world.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)
    return module


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a DDP wrapper (FSDP2 works in place)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def gradient_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Reduce gradients across ranks in this backward (the last micro-batch of a step) or only accumulate them."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        with model.no_sync():
            yield
        return
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(enabled)
    yield


def autocast(parallel: ParallelConfig, world: World) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA unless FSDP2's mixed-precision policy already computes in bf16."""
    mode = resolve_mode(parallel, world.size)
    if parallel.precision == "bf16" and world.device.type == "cuda" and mode != "fsdp":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over the ranks in place (``sum`` or ``max``); unchanged when running alone."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
