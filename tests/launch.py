"""``spc-fast train`` in separate processes, as users start it: one process, or torchrun with several ranks on a
free local port (``python -m spc_fast.training`` is what torchrun runs on every rank)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(stage: str, run: Path, *args: str, ranks: int = 1) -> list[str]:
    """The command line of ``spc-fast train STAGE ARGS --out RUN`` on ``ranks`` processes."""
    launcher = []
    if ranks > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_addr", "127.0.0.1",
                    "--master_port", str(free_port())]  # fmt: skip
    return [sys.executable, *launcher, "-m", "spc_fast.training", stage, *args, "--out", str(run)]
