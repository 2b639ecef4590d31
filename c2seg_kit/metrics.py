"""The one C2Seg metric implementation (docs/formats.md, "The metric"), used by training, the CLI and the server.

The confusion matrix is the only state: rows are the true classes 1..13, columns the predicted
values 0..13 (0 = "no class", always wrong on an evaluated pixel). It is accumulated chunk by
chunk with one ``bincount`` over a combined ``uint8`` index ``14 * true + pred`` (at most 195),
so scoring a whole city never makes a full-raster int64 copy. Every score is a reduction of it.

Unlike the authors' evaluation (whose label set comes from the data, so a single predicted 0
adds a 14th class with IoU 0 to the mean), the classes are fixed: 1..13. A class that appears
neither in the labels nor in the predictions (TP + FP + FN = 0) is undefined: reported as
``None`` and left out of mIoU and macro F1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from c2seg_kit.classes import CLASS_NAMES, NUM_CLASSES, NUM_LABELS, as_class_ids, check_integers

# Pixels per bincount call: big enough that the Python loop is negligible, small enough that
# the uint8 index and bincount's internal intp copy (4 bytes per pixel, in pairs) stay a few MB.
_CHUNK_PIXELS = 1 << 20
_BINS = NUM_LABELS * NUM_LABELS  # combined index 14 * true + pred, 0..195
# Up to this many pixels (a 512 x 512 tile), a block is counted with one plain bincount: the pair
# counts' fixed cost (a 65,536-bin histogram and its fold) would dominate.
_SMALL_PIXELS = 1 << 18

__all__ = ["SCORE_KEYS", "ConfusionMatrix", "class_iou", "compute_scores", "miou_of_counts"]

#: Keys of :func:`compute_scores`' result, in the order reports print them.
SCORE_KEYS = ("oa", "miou", "f1", "kappa", "per_class_iou", "confusion_matrix", "n_pixels")


def _pair_index(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Flat labels and predictions (checked 0..13) -> combined index 14 * true + pred, as uint8."""
    index = as_class_ids(t, "label") * np.uint8(NUM_LABELS)  # a fresh uint8 array, <= 182
    index += as_class_ids(p, "prediction")  # <= 195: still uint8
    return index


class ConfusionMatrix:
    """Accumulates the 13 x 14 confusion matrix (true classes 1..13 x predicted values 0..13).

    >>> cm = ConfusionMatrix()
    >>> cm.update(label_block, pred_block)   # any rank, same shape, integers 0..13
    >>> cm.scores()["miou"]

    ``matrix[i, j]`` counts pixels of true class ``i + 1`` predicted as ``j``; pixels whose
    label is 0 are ignored. Matrices add: ``a.merge(b)`` combines two partial evaluations.
    """

    def __init__(self, matrix: np.ndarray | None = None) -> None:
        self.matrix = np.zeros((NUM_CLASSES, NUM_LABELS), dtype=np.int64)
        if matrix is not None:
            self.matrix += _checked_matrix(matrix)

    @property
    def n_pixels(self) -> int:
        """Evaluated pixels so far (label in 1..13)."""
        return int(self.matrix.sum())

    def reset(self) -> None:
        self.matrix[:] = 0

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    def update(self, target: Any, pred: Any) -> ConfusionMatrix:
        """Add a block of labels and predictions (same shape, integer values in 0..13).

        Accepts numpy arrays or anything ``np.asarray`` takes (CPU tensors included). Raises
        ValueError for mismatched shapes, non-integer data or values outside 0..13.
        """
        target = np.asarray(target)
        pred = np.asarray(pred)
        if target.shape != pred.shape:
            raise ValueError(f"labels and predictions differ in shape: {target.shape} vs {pred.shape}")
        check_integers(target, "label")
        check_integers(pred, "prediction")
        if target.size == 0:
            return self
        # Walk the arrays as flat slabs without copying them whole: a C-contiguous array
        # ravels to a view; anything else is walked along its first axis.
        if target.flags.c_contiguous and pred.flags.c_contiguous and target.size <= _SMALL_PIXELS:
            # A small block (a tile): one plain bincount beats setting up the pair counts.
            index = _pair_index(target.reshape(-1), pred.reshape(-1))
            self.matrix += np.bincount(index, minlength=_BINS).reshape(NUM_LABELS, NUM_LABELS)[1:]
        elif target.flags.c_contiguous and pred.flags.c_contiguous:
            t_flat, p_flat = target.reshape(-1), pred.reshape(-1)
            pairs = np.zeros(1 << 16, dtype=np.int64)
            singles = np.zeros(_BINS, dtype=np.int64)
            for i in range(0, t_flat.size, _CHUNK_PIXELS):
                self._count_slab(t_flat[i : i + _CHUNK_PIXELS], p_flat[i : i + _CHUNK_PIXELS], pairs, singles)
            # Fold the pair counts back to single-index counts once: each pair holds two indices,
            # its low byte and its high byte.
            pairs2d = pairs.reshape(256, 256)
            singles += pairs2d.sum(axis=0)[:_BINS] + pairs2d.sum(axis=1)[:_BINS]
            # Row 0 (label 0, unlabelled) is dropped here: it is never evaluated.
            self.matrix += singles.reshape(NUM_LABELS, NUM_LABELS)[1:]
        elif target.ndim == 1:
            self.update(np.ascontiguousarray(target), np.ascontiguousarray(pred))
        else:
            rows = max(1, _CHUNK_PIXELS // max(1, target[0].size))
            for i in range(0, target.shape[0], rows):
                self.update(np.ascontiguousarray(target[i : i + rows]), np.ascontiguousarray(pred[i : i + rows]))
        return self

    @staticmethod
    def _count_slab(t: np.ndarray, p: np.ndarray, pairs: np.ndarray, singles: np.ndarray) -> None:
        """Add one flat slab's combined-index counts to ``pairs`` (uint16 pairs) and ``singles``."""
        index = _pair_index(t, p)
        if index.size % 2:
            singles += np.bincount(index[-1:], minlength=_BINS)
            index = index[:-1]
        # bincount converts its input to intp (8 bytes per element) before counting; viewing two
        # uint8 indices as one uint16 halves that work.
        pairs += np.bincount(index.view(np.uint16), minlength=1 << 16)

    def scores(self) -> dict:
        return compute_scores(self.matrix)

    def __repr__(self) -> str:
        return f"ConfusionMatrix(n_pixels={self.n_pixels})"


def _checked_matrix(matrix: Any) -> np.ndarray:
    m = np.asarray(matrix)
    if m.shape != (NUM_CLASSES, NUM_LABELS):
        raise ValueError(f"confusion matrix must be {NUM_CLASSES} x {NUM_LABELS} (true 1..13 x pred 0..13), got {m.shape}")
    if not np.issubdtype(m.dtype, np.integer) or (m.size and int(m.min()) < 0):
        raise ValueError("confusion matrix must hold non-negative integer counts")
    return m.astype(np.int64)


def class_iou(tp: np.ndarray, pred_count: np.ndarray, true_count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU (NaN where undefined) and whether each class is defined (TP + FP + FN > 0),
    from the true positives, the predicted (TP + FP) and the true (TP + FN) pixel counts of
    classes 1..13 on the last axis; any leading axes are kept (count sets side by side)."""
    union = pred_count + true_count - tp  # TP + FP + FN
    defined = union > 0
    return np.where(defined, tp / np.maximum(union, 1), np.nan), defined


def miou_of_counts(tp: np.ndarray, pred_count: np.ndarray, true_count: np.ndarray) -> np.ndarray:
    """mIoU over the last axis of :func:`class_iou`'s counts (the undefined classes left out);
    NaN where no class is defined."""
    iou, defined = class_iou(tp, pred_count, true_count)
    n = defined.sum(axis=-1)
    return np.where(n > 0, np.where(defined, iou, 0.0).sum(axis=-1) / np.maximum(n, 1), np.nan)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def compute_scores(matrix: Any) -> dict:
    """All scores (docs/formats.md, "The metric") from a 13 x 14 confusion matrix (true 1..13 x pred 0..13).

    Returns ``oa``, ``miou``, ``f1`` (macro), ``kappa`` (Cohen's, over evaluated pixels, with
    predicted 0 as its own category), ``per_class_iou`` (machine name -> float, or None when the
    class is undefined), ``confusion_matrix`` (list of lists) and ``n_pixels``. With no
    evaluated pixel, oa/miou/f1/kappa are None; kappa is None when chance agreement is 1.
    """
    m = _checked_matrix(matrix)
    # Exact integer reductions first; floats only for the final ratios.
    tp = np.array([m[c, c + 1] for c in range(NUM_CLASSES)], dtype=np.int64)
    true_count = m.sum(axis=1)  # TP + FN, per true class 1..13
    pred_count = m.sum(axis=0)[1:]  # TP + FP, per predicted class 1..13 (column 0 is "no class")
    fp = pred_count - tp
    fn = true_count - tp
    iou, defined = class_iou(tp, pred_count, true_count)
    f1 = np.where(defined, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)

    n = int(m.sum())
    correct = int(tp.sum())
    if n:
        oa: float | None = correct / n
        # Cohen's kappa in exact integers: (n * agree - chance) / (n^2 - chance), where chance sums
        # P(true = k) P(pred = k) * n^2 over categories. The true side has no category 0, so
        # predicted-0 pixels only lower the observed agreement. Undefined when chance = n^2.
        chance = sum(int(a) * int(b) for a, b in zip(true_count, pred_count, strict=True))
        kappa = (n * correct - chance) / (n * n - chance) if chance != n * n else None
    else:
        oa = kappa = None

    return {
        "oa": oa,
        "miou": _mean_or_none(iou[defined]),
        "f1": _mean_or_none(f1[defined]),
        "kappa": kappa,
        "per_class_iou": {name: (float(iou[i]) if defined[i] else None) for i, name in enumerate(CLASS_NAMES)},
        "confusion_matrix": m.tolist(),
        "n_pixels": n,
    }
