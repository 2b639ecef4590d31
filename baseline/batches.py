"""The two endless batch streams of a training run: labelled source windows, unlabelled target ones.

Which windows a step sees, and how they are augmented, is a pure function of (seed, step, rank),
so a resumed run sees exactly the batches the uninterrupted run would have seen, whatever the
number of DataLoader workers or ranks.

Two ways to draw batches (``train.sampling``):

- ``fresh`` (the authors'): every step draws a fresh random batch of distinct windows. Their loop
  calls ``next(enumerate(loader))`` on a shuffled DataLoader each iteration, which builds a new
  iterator, so each batch is the head of a new permutation;
- ``epochs``: every window once per epoch, in a seeded permutation per epoch.

The target stream (``train.target_windows``): ``disjoint`` (the authors') reads non-overlapping
windows without augmentation, as their target loader reuses the test windows; ``like-source`` uses
the source's stride and augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from c2seg_kit.errors import C2SegError
from c2seg_kit.prepare.cache import PreparedData

from .config import TrainConfig
from .datasets import C2SegPrepared
from .distributed import DistInfo

# Seed offsets of the target stream: the two streams must not walk in lockstep.
TARGET_WINDOW_SEED, TARGET_ORDER_SEED = 1, 10_007


class _KeyedItems(Dataset):
    """Items addressed by (key, index), the key being the epoch (or, for fresh batches, the step):
    augmentation drawn per epoch follows the sampler even in persistent DataLoader workers (which
    never see set_epoch calls made in the parent)."""

    def __init__(self, windows: C2SegPrepared):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key):
        epoch, index = key
        self.windows.set_epoch(epoch)
        return self.windows[index]


class StepBatches(Sampler):
    """Endless batches of (epoch, index), a pure function of (seed, step, rank).

    ``mode="epochs"``: each epoch is a seeded permutation of all windows, wrapped round to a whole
    number of global batches. ``mode="fresh"``: each step is its own "epoch", a global batch of
    distinct windows drawn from (seed, step) (with replacement only when there are fewer windows
    than the batch). Either way global batch j is split among ranks, rank r taking the r-th slice
    (the DistributedSampler arrangement), and starting at `start_step` skips exactly the batches
    already consumed, without reading them.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start_step: int = 0, mode: str = "epochs"):
        if n < 1:
            raise C2SegError("no training windows: the city is empty")
        if mode not in ("epochs", "fresh"):
            raise ValueError(f"mode must be 'epochs' or 'fresh', got {mode!r}")
        self.n, self.batch_size, self.seed, self.mode = n, batch_size, seed, mode
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = 1 if mode == "fresh" else max(1, math.ceil(n / self.global_batch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.mode == "fresh":
            return rng.choice(self.n, self.global_batch, replace=self.n < self.global_batch)
        perm = rng.permutation(self.n)
        need = self.steps_per_epoch * self.global_batch
        return np.resize(perm, need)  # repeats the permutation to fill the last batch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            order = self.epoch_order(epoch)
            for j in range(first, self.steps_per_epoch):
                lo = (j * self.world_size + self.rank) * self.batch_size
                yield [(epoch, int(i)) for i in order[lo:lo + self.batch_size]]
            step = (epoch + 1) * self.steps_per_epoch

    def __len__(self) -> int:  # endless; DataLoader only needs this for len(loader)
        return 2**62


def batch_stream(windows: C2SegPrepared, batch_size: int, seed: int, info: DistInfo, start_step: int,
                 workers: int, pin: bool, mode: str = "epochs") -> Iterator[dict]:
    """This rank's batches of `windows` from `start_step` on, endlessly."""
    sampler = StepBatches(len(windows), batch_size, seed, rank=info.rank, world_size=info.world_size,
                          start_step=start_step, mode=mode)
    loader = DataLoader(_KeyedItems(windows), batch_sampler=sampler, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0,
                        prefetch_factor=2 if workers > 0 else None)
    return iter(loader)


def stream_windows(data: PreparedData, t: TrainConfig, track: str, seed: int) -> tuple[C2SegPrepared, C2SegPrepared]:
    """The source and target window lists of a run with `seed` (see the module docstring)."""
    window, stride = t.for_track(track, "window"), t.for_track(track, "stride")
    source = C2SegPrepared(data, "source", window=window, stride=stride, augment=t.augment, seed=seed)
    like_source = t.target_windows == "like-source"
    target = C2SegPrepared(data, "target", window=window, stride=stride if like_source else window,
                           augment=t.augment if like_source else None, seed=seed + TARGET_WINDOW_SEED)
    return source, target


def source_and_target(data: PreparedData, t: TrainConfig, track: str, seed: int, info: DistInfo, start_step: int,
                      workers: int, pin: bool) -> tuple[Iterator[dict], Iterator[dict]]:
    """The source and target streams of a run with `seed`, from `start_step` on."""
    source, target = stream_windows(data, t, track, seed)
    return (batch_stream(source, t.batch_size, seed, info, start_step, workers, pin, t.sampling),
            batch_stream(target, t.batch_size, seed + TARGET_ORDER_SEED, info, start_step, workers, pin, t.sampling))
