"""The two endless batch streams of a training run: labelled source windows, unlabelled target ones.

Which windows a step sees, and how they are augmented, is a pure function of (seed, step, rank),
so a resumed run sees exactly the batches the uninterrupted run would have seen, whatever the
number of DataLoader workers or ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from c2seg_kit.errors import C2SegError
from c2seg_kit.prepared import PreparedData

from .config import TrainConfig
from .dataset import WindowDataset
from .distributed import DistInfo

# Seed offsets of the target stream: the two streams must not walk in lockstep.
TARGET_WINDOW_SEED, TARGET_ORDER_SEED = 1, 10_007


class _EpochItems(Dataset):
    """Items addressed by (epoch, index), so augmentation follows the sampler even in
    persistent DataLoader workers (which never see set_epoch calls made in the parent)."""

    def __init__(self, windows: WindowDataset):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, key):
        epoch, index = key
        self.windows.set_epoch(epoch)
        return self.windows[index]


class StepBatches(Sampler):
    """Endless batches of (epoch, index), a pure function of (seed, step, rank).

    Each epoch is a seeded permutation of all windows, wrapped round to a whole number of
    global batches; global batch j of an epoch is split among ranks, rank r taking the r-th
    slice (the DistributedSampler arrangement). Starting at `start_step` skips exactly the
    batches already consumed, without reading them.
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if n < 1:
            raise C2SegError("no training windows: the city is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.global_batch = batch_size * world_size
        self.steps_per_epoch = max(1, math.ceil(n / self.global_batch))

    def epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
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


def batch_stream(windows: WindowDataset, batch_size: int, seed: int, info: DistInfo, start_step: int,
                 workers: int, pin: bool) -> Iterator[dict]:
    """This rank's batches of `windows` from `start_step` on, endlessly."""
    sampler = StepBatches(len(windows), batch_size, seed, rank=info.rank, world_size=info.world_size,
                          start_step=start_step)
    loader = DataLoader(_EpochItems(windows), batch_sampler=sampler, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0,
                        prefetch_factor=2 if workers > 0 else None)
    return iter(loader)


def source_and_target(data: PreparedData, t: TrainConfig, seed: int, info: DistInfo, start_step: int,
                      workers: int, pin: bool) -> tuple[Iterator[dict], Iterator[dict]]:
    """The source and target streams of a run with `seed`, from `start_step` on."""
    streams = []
    for city, window_seed, order_seed in (("source", seed, seed),
                                          ("target", seed + TARGET_WINDOW_SEED, seed + TARGET_ORDER_SEED)):
        windows = WindowDataset(data, city, window=t.window, stride=t.stride, augment=True, seed=window_seed)
        streams.append(batch_stream(windows, t.batch_size, order_seed, info, start_step, workers, pin))
    return streams[0], streams[1]
