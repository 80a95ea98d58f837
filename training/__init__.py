"""Training (import name ``spc_fast.training``): the data, the supervised stages I and II and the distributed
trainer they run on (torchrun, FSDP2 or DDP, ``torch.distributed.checkpoint``). ``spc-fast train STAGE`` and
``python -m spc_fast.training STAGE`` are the same command."""
