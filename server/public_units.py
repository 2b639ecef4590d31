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

#: Groups of units kept per submission at most.
MAX_UNITS = 100
#: Counts per class and group: true positives, predicted, true.
FIELDS = 3
_MAGIC = b"PU1"
_HEAD = struct.Struct("<3sH")
#: The largest blob :func:`decode` accepts (bytes): a stored value is checked like any input.
MAX_BLOB = 64 * 1024


def groups(n: int) -> np.ndarray:
    """The group of each of `n` units in order: consecutive runs, at most MAX_UNITS groups."""
    g = min(n, MAX_UNITS)
    return (np.arange(n, dtype=np.int64) * g) // max(n, 1)


def empty(n_groups: int) -> np.ndarray:
    return np.zeros((n_groups, FIELDS, NUM_CLASSES), dtype=np.int64)


def add(counts: np.ndarray, group: np.ndarray | int, label: np.ndarray, pred: np.ndarray) -> None:
    """Add one block of pixels to `counts` (G x 3 x 13). `group`: each pixel's group (negative:
    not a public unit) or one group for the whole block; `label`, `pred`: values 0..13 (already
    checked by the metric), label 0 ignored."""
    label = np.asarray(label)
    group = np.broadcast_to(np.asarray(group, dtype=np.int64), label.shape)
    keep = (group >= 0) & (label > 0)
    u = group[keep]
    t = label[keep].astype(np.int64) - 1
    p = np.asarray(pred)[keep].astype(np.int64) - 1  # -1: predicted "no class"
    n = counts.shape[0] * NUM_CLASSES
    counts[:, 2] += np.bincount(u * NUM_CLASSES + t, minlength=n).reshape(-1, NUM_CLASSES)
    hit = p >= 0
    counts[:, 1] += np.bincount(u[hit] * NUM_CLASSES + p[hit], minlength=n).reshape(-1, NUM_CLASSES)
    same = p == t
    counts[:, 0] += np.bincount(u[same] * NUM_CLASSES + t[same], minlength=n).reshape(-1, NUM_CLASSES)


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
    """mIoU of each (3 x 13) count set in `totals` (N x 3 x 13); NaN where no class is defined."""
    tp, pred, true = totals[:, 0], totals[:, 1], totals[:, 2]
    union = pred + true - tp
    defined = union > 0
    iou = np.where(defined, tp / np.maximum(union, 1), 0.0)
    n = defined.sum(axis=1)
    return np.where(n > 0, iou.sum(axis=1) / np.maximum(n, 1), np.nan)


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
