"""The oracle for the scores a server reports: `c2seg score` (c2seg_kit.submission.score_files)
run on label files that each hold one part of the public/private split, rounded as the server
rounds. Used by the server tests to state the exact score they expect, not a range."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2seg_kit.submission.score_files import score_files
from c2seg_kit.submission.writers import write_labels

DECIMALS = 4  # scores leave the server rounded to 4 decimals
AGGREGATES = ("oa", "miou", "f1", "kappa")


def scores_by_part(prediction: Path, label: np.ndarray, public: np.ndarray, folder: Path) -> dict[str, dict]:
    """{"public": scores, "private": scores} of a submission file, at full precision: pixels where
    `public` is true count for the public part, the rest for the private one."""
    out = {}
    for part, keep in (("public", public), ("private", ~public)):
        path = write_labels(Path(folder) / f"{part}-part-labels.h5", np.where(keep, label, 0), "AB")
        out[part] = score_files(prediction, path)
    return out


def as_served(scores: dict) -> dict:
    """What the server sends for these scores: the aggregates and per-class IoU rounded, the count."""
    def r(x):
        return None if x is None else round(x, DECIMALS)

    return {**{k: r(scores[k]) for k in AGGREGATES},
            "per_class_iou": {k: r(v) for k, v in scores["per_class_iou"].items()},
            "n_pixels": scores["n_pixels"]}


def served_part(got: dict) -> dict:
    """The same keys out of a server's answer (it may send more)."""
    return {k: got[k] for k in (*AGGREGATES, "per_class_iou", "n_pixels")}
