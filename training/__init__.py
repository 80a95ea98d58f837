"""Training (import name ``spc_fast.training``): the data, the supervised stages I and II, stage III's joint
reinforcement learning (``joint``: GRPO for the critic, DiffusionNFT for the artist) and the distributed trainer they
run on (torchrun, FSDP2 or DDP, ``torch.distributed.checkpoint``). ``spc-fast train STAGE`` and
``python -m spc_fast.training STAGE`` are the same command."""
