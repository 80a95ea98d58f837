"""The training loader: batches of one working size, sharded over ranks, deterministic, resumable to the batch.

``BucketBatches`` plans the batches. Epoch ``e``'s batches are a function of (seed, e) only: the record indices of
each bucket (records of one working size, in order of first appearance) are shuffled, cut into full batches (the
remainder of a bucket waits for a later epoch's shuffle), and the batches of all buckets are shuffled together.
Concatenated over epochs they make one endless global sequence, and rank ``r`` of ``W`` takes its elements
``r, r + W, r + 2W, ...``: rank r's k-th batch is the global batch ``k W + r``, which is a one-rank loader's
(k W + r)-th batch, so W ranks run the batches of one rank with ``grad_accum = W``, across epoch ends too. Shards
are disjoint; every rank has a batch at every step; within one epoch the ranks' counts differ by at most one
(by none when the epoch's batch count is a multiple of W).

``Loader`` runs a plan through a torch ``DataLoader`` (``sample_fn`` per record in ``workers`` processes with
``prefetch`` batches each in flight, ``collate_fn`` per batch, pinned memory on CUDA). ``next(loader)`` hands the
trainer its next batch; ``state_dict()`` is the position ``{"epoch", "batch"}`` of the next batch to hand out (the
global batch within its epoch), counted from the batches handed out, not from what the workers have prefetched,
so a checkpoint taken at any step resumes exactly there with ``load_state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["BucketBatches", "Loader"]


class BucketBatches:
    """The batch plan of one rank (module docstring). Iterating yields lists of record indices, without end."""

    def __init__(
        self, keys: Sequence[Hashable], batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or seed < 0:
            raise ValueError(
                f"need batch_size >= 1, world_size >= 1, 0 <= rank < world_size and seed >= 0; got "
                f"batch_size={batch_size}, rank={rank}, world_size={world_size}, seed={seed}"
            )
        groups: dict[Hashable, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        self.buckets = [np.asarray(indices, dtype=np.int64) for indices in groups.values()]
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.batches_per_epoch = sum(len(b) // batch_size for b in self.buckets)
        if self.batches_per_epoch == 0:
            sizes = sorted((len(b) for b in self.buckets), reverse=True)[:5]
            raise ValueError(
                f"no bucket holds a full batch of {batch_size} ({len(keys)} records in {len(sizes)}+ "
                f"buckets, the largest {sizes}); lower the batch size or add data"
            )

    def epoch(self, epoch: int) -> list[list[int]]:
        """Every batch of ``epoch`` in global order (all ranks'): a function of (seed, epoch) only."""
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for bucket in self.buckets:
            full = len(bucket) // self.batch_size * self.batch_size
            batches.extend(rng.permutation(bucket)[:full].reshape(-1, self.batch_size).tolist())
        return [batches[i] for i in rng.permutation(len(batches))]

    def position(self, count: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of this rank's batch number ``count`` (0-based)."""
        return divmod(count * self.world_size + self.rank, self.batches_per_epoch)

    def count(self, epoch: int, batch: int) -> int:
        """How many batches this rank has handed out before position (epoch, batch); ValueError for a position
        that is not this rank's (another world size or rank, or a different data set)."""
        if epoch < 0 or not 0 <= batch < self.batches_per_epoch:
            raise ValueError(
                f"loader position epoch {epoch}, batch {batch} is outside the plan of "
                f"{self.batches_per_epoch} batches per epoch; was the data set or batch size changed?"
            )
        offset = epoch * self.batches_per_epoch + batch - self.rank
        if offset < 0 or offset % self.world_size:
            raise ValueError(
                f"loader position epoch {epoch}, batch {batch} is not a batch of rank {self.rank} of "
                f"{self.world_size}; resume with the world size the checkpoint was written with"
            )
        return offset // self.world_size

    def iterate(self, start: int = 0) -> Iterator[list[int]]:
        """This rank's batches from its batch number ``start`` on."""
        count = start
        epoch, batches = -1, []
        while True:
            at, index = self.position(count)
            if at != epoch:
                epoch, batches = at, self.epoch(at)
            yield batches[index]
            count += 1

    def __iter__(self) -> Iterator[list[int]]:
        return self.iterate()


class _Samples(Dataset):
    def __init__(self, records: Sequence, sample_fn: Callable) -> None:
        self.records, self.sample_fn = records, sample_fn

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        return self.sample_fn(self.records[index])


class _FromPosition:
    # the batch sampler handed to DataLoader: this rank's batches from a batch number on
    def __init__(self, plan: BucketBatches, start: int) -> None:
        self.plan, self.start = plan, start

    def __iter__(self) -> Iterator[list[int]]:
        return self.plan.iterate(self.start)


class Loader:
    """Collated batches of ``dataset_records`` for one rank, without end (module docstring).

    ``bucket_fn(record)`` is the working size the record's batch will have (records of one key batch together);
    ``sample_fn(record)`` runs in the workers (it and ``collate_fn`` must pickle where workers are spawned rather
    than forked); ``prefetch`` is the batches each worker prepares ahead (ignored without workers).
    """

    def __init__(
        self,
        dataset_records: Sequence,
        sample_fn: Callable,
        collate_fn: Callable,
        *,
        batch_size: int,
        bucket_fn: Callable[[object], Hashable],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        workers: int = 0,
        prefetch: int = 2,
    ) -> None:
        if workers < 0 or prefetch < 1:
            raise ValueError(f"need workers >= 0 and prefetch >= 1; got workers={workers}, prefetch={prefetch}")
        self.records = list(dataset_records)
        self.plan = BucketBatches(
            [bucket_fn(r) for r in self.records], batch_size, rank=rank, world_size=world_size, seed=seed
        )
        self.sample_fn, self.collate_fn = sample_fn, collate_fn
        self.workers, self.prefetch, self.seed = workers, prefetch, seed
        self.handed = 0  # batches handed to the trainer
        self._iterator: Iterator | None = None

    def _start(self) -> Iterator:
        loader = DataLoader(
            _Samples(self.records, self.sample_fn),
            batch_sampler=_FromPosition(self.plan, self.handed),
            collate_fn=self.collate_fn,
            num_workers=self.workers,
            prefetch_factor=self.prefetch if self.workers else None,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed),  # the workers' base seed: fixed, not global RNG
        )
        return iter(loader)

    def __iter__(self) -> Loader:
        return self

    def __next__(self):
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self.handed += 1
        return batch

    @property
    def epoch(self) -> int:
        """The epoch of the next batch."""
        return self.plan.position(self.handed)[0]

    def state_dict(self) -> dict[str, int]:
        """The position of the next batch to hand out: ``{"epoch": e, "batch": b}`` (module docstring)."""
        epoch, batch = self.plan.position(self.handed)
        return {"epoch": epoch, "batch": batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a ``state_dict`` (prefetched batches of the current position are dropped)."""
        handed = self.plan.count(int(state["epoch"]), int(state["batch"]))
        self.close()
        self.handed = handed

    def close(self) -> None:
        """Stop the workers (the next ``next`` starts them again at the current position)."""
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
