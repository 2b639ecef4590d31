"""The oracle of the metrics: the section-3 definitions written with scikit-learn (docs/formats.md,
"The metric"), for the tests that check scores against it."""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    jaccard_score,
)

from c2seg_kit.classes import CLASS_NAMES

ALL = list(range(14))


def oracle(target: np.ndarray, pred: np.ndarray) -> dict:
    """The section-3 definitions written with scikit-learn on the masked, flattened arrays."""
    mask = target.ravel() > 0
    y, q = target.ravel()[mask], pred.ravel()[mask]
    if y.size == 0:
        return {"oa": None, "miou": None, "f1": None, "kappa": None,
                "per_class_iou": dict.fromkeys(CLASS_NAMES), "n_pixels": 0,
                "matrix": np.zeros((13, 14), dtype=np.int64)}
    present = sorted((set(y.tolist()) | set(q.tolist())) - {0})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ious = jaccard_score(y, q, labels=present, average=None, zero_division=0)
        f1 = f1_score(y, q, labels=present, average="macro", zero_division=0)
        kappa = cohen_kappa_score(y, q, labels=ALL)
    per_class = dict.fromkeys(CLASS_NAMES)
    for c, v in zip(present, ious, strict=True):
        per_class[CLASS_NAMES[c - 1]] = float(v)
    return {
        "oa": accuracy_score(y, q),
        "miou": float(np.mean(ious)),
        "f1": float(f1),
        "kappa": None if math.isnan(kappa) else float(kappa),
        "per_class_iou": per_class,
        "n_pixels": int(y.size),
        "matrix": confusion_matrix(y, q, labels=ALL)[1:],
    }
