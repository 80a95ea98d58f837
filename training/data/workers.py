"""An ordered parallel map for the data commands, whose results do not depend on how many workers ran it.

Each task runs with torch on one thread, in the worker processes and in the calling process alike: a CPU
reduction split over a different number of threads may round differently, and a build must give byte-identical
images and manifests for any ``--workers``. Workers are forked (the parent's imports come along: no start-up
import of torch per worker) where the platform forks, spawned elsewhere.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import torch

__all__ = ["one_thread", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _worker_start() -> None:
    torch.set_num_threads(1)


def parallel_map(function: Callable[[T], R], items: Iterable[T], *, workers: int = 1) -> Iterator[R]:
    """``function`` over ``items`` in order, in ``workers`` processes (1: in this process). ``function`` and the
    items must pickle (a module-level function and plain data). The first exception raised by a task is raised
    here; the remaining tasks are cancelled."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if workers == 1:
        with one_thread():
            for item in items:
                yield function(item)
        return
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    context = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start) as pool:
        futures = [pool.submit(function, item) for item in items]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
