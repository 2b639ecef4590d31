"""Per-unit counts of a submission's public part, and the standard error the parameter-free
Ladder reads from them (ladder.py).

mIoU is not an average of per-pixel losses, so the paper's per-sample standard deviation has no
direct meaning here. The per-sample view is taken over *units* of the public part instead: a
scene track's public blocks of the split, a tile track's public tiles (scoring.py makes both).
Consecutive units (blocks in raster order, tiles in id order) are grouped into at most
MAX_UNITS groups, so what is stored per submission stays small: for each group and each class
1..13, the true-positive, predicted and true pixel counts (the part of the group's confusion
matrix that mIoU reads), 3 x 13 integers, zlib-compressed: at most MAX_UNITS * 39 * 8 bytes
before compression.

The standard error of mIoU(a) - mIoU(b) over the same units is the delete-one-group jackknife:
with G groups and d_g the difference of the two mIoUs computed without group g,
SE = sqrt((G - 1) / G * sum_g (d_g - mean d)^2). For a per-sample average loss with one sample
per group this is exactly the sample standard deviation of the per-sample differences over
sqrt(G): the paper's threshold.

The counts are computed in the scoring child and stored by the server in its database (never in
any answer): with them the server knows no more than it does from the labels it already holds.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

from c2seg_kit.classes import NUM_CLASSES
from c2seg_kit.metrics import miou_of_counts

#: Groups of units kept per submission at most.
MAX_UNITS = 100
#: Counts per class and group: true positives, predicted, true.
FIELDS = 3
_LABELS = NUM_CLASSES + 1  # values 0..13
_PAIRS = _LABELS * _LABELS
_MAGIC = b"PU1"
_HEAD = struct.Struct("<3sH")
#: The largest blob :func:`decode` accepts (bytes): a stored value is checked like any input.
MAX_BLOB = 64 * 1024


def groups(n: int) -> np.ndarray:
    """The group of each of `n` units in order: consecutive runs, at most MAX_UNITS groups."""
    g = min(n, MAX_UNITS)
    return (np.arange(n, dtype=np.int64) * g) // max(n, 1)


class Counter:
    """Per-group confusion matrices (true 0..13 x predicted 0..13) of the public pixels, counted with
    one bincount over a combined uint16 index 196 * group + 14 * true + pred per block of rows;
    :meth:`counts` keeps what mIoU reads (label 0 ignored)."""

    def __init__(self, n_groups: int) -> None:
        if not 1 <= n_groups <= MAX_UNITS:
            raise ValueError(f"between 1 and {MAX_UNITS} groups of units (got {n_groups})")
        self.n_groups = n_groups
        self.matrix = np.zeros(n_groups * _PAIRS, dtype=np.int64)

    def add(self, group: np.ndarray | int, label: np.ndarray, pred: np.ndarray) -> None:
        """`group`: each pixel's group, or one per column (broadcast over the rows), or one for
        the block; pixels whose group does not matter (private ones) must have label 0.
        `label`, `pred`: values 0..13, already checked by the metric."""
        index = np.multiply(label, _LABELS, dtype=np.uint16, casting="unsafe")  # one pass each
        np.add(index, pred, out=index, casting="unsafe")
        index += np.multiply(group, _PAIRS, dtype=np.uint16, casting="unsafe")
        self.matrix += np.bincount(index.ravel(), minlength=self.matrix.size)

    def counts(self) -> np.ndarray:
        """G x 3 x 13: per group and class 1..13, true positives, predicted and true pixels."""
        m = self.matrix.reshape(self.n_groups, _LABELS, _LABELS)[:, 1:, :]  # true 1..13 x pred 0..13
        classes = np.arange(NUM_CLASSES)
        out = np.empty((self.n_groups, FIELDS, NUM_CLASSES), dtype=np.int64)
        out[:, 0] = m[:, classes, classes + 1]
        out[:, 1] = m.sum(axis=1)[:, 1:]
        out[:, 2] = m.sum(axis=2)
        return out


def encode(counts: np.ndarray) -> bytes:
    counts = np.asarray(counts, dtype="<i8")
    return _HEAD.pack(_MAGIC, counts.shape[0]) + zlib.compress(counts.tobytes(), 6)


def decode(blob: bytes | None) -> np.ndarray | None:
    """The counts (G x 3 x 13, read-only) of a stored blob; None for none or one that does not read."""
    if not blob or len(blob) > MAX_BLOB or len(blob) < _HEAD.size:
        return None
    magic, g = _HEAD.unpack_from(blob)
    size = g * FIELDS * NUM_CLASSES * 8
    if magic != _MAGIC or not 1 <= g <= MAX_UNITS:
        return None
    stream = zlib.decompressobj()
    try:
        raw = stream.decompress(blob[_HEAD.size:], size + 1)
    except zlib.error:
        return None
    if len(raw) != size or not stream.eof or stream.unused_data:  # whole, and nothing after it
        return None
    counts = np.frombuffer(raw, dtype="<i8").reshape(g, FIELDS, NUM_CLASSES)
    if int(counts.min()) < 0:
        return None
    return counts


def miou_of(counts: np.ndarray) -> float | None:
    """mIoU of the summed counts (the metric's rule: classes with TP + FP + FN = 0 left out)."""
    v = _miou(np.asarray(counts).sum(axis=0)[None])[0]
    return None if math.isnan(v) else float(v)


def _miou(totals: np.ndarray) -> np.ndarray:
    """mIoU of each (3 x 13) count set in `totals` (N x 3 x 13), by the metric's own rule; NaN
    where no class is defined."""
    return miou_of_counts(totals[:, 0], totals[:, 1], totals[:, 2])


def leave_one_out(counts: np.ndarray) -> np.ndarray:
    """mIoU without each group in turn (G values)."""
    counts = np.asarray(counts, dtype=np.int64)
    return _miou(counts.sum(axis=0)[None] - counts)


def jackknife_se(new: np.ndarray, best: np.ndarray | None = None) -> float | None:
    """The delete-one-group jackknife standard error of mIoU(new) - mIoU(best) (best None: of
    mIoU(new) alone); None when it cannot be estimated (fewer than two groups, groups that do
    not match, or a leave-one-out mIoU undefined)."""
    d = leave_one_out(new)
    if best is not None:
        if np.shape(best) != np.shape(new):
            return None
        d = d - leave_one_out(best)
    g = d.shape[0]
    if g < 2 or np.isnan(d).any():
        return None
    return float(math.sqrt((g - 1) / g * float(((d - d.mean()) ** 2).sum())))
