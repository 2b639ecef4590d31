"""Scoring an upload against the hidden labels, split into a public and a private part.

The split is a fixed, seeded mask of square blocks over the label grid (blocks, not pixels,
so a public pixel's neighbours do not give away private ones). Both confusion matrices come
from one read of the prediction: per chunk, the public and the private label rows (each with
the other part's pixels set to 0, i.e. ignored) are compared with the same prediction rows.

Everything here runs inside a scoring child process (see workers.py); only rounded aggregate
scores leave it, with a hash of the prediction itself (for the duplicate check). The confusion
matrix does not: with exact counts one changed pixel would reveal its label.
"""

from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

import numpy as np

from c2seg_kit.errors import InvalidSubmissionError
from c2seg_kit.metrics import ConfusionMatrix

#: Scores leave the server rounded to this many decimals.
DECIMALS = 4
#: The score keys that leave the server (`score --json` without the confusion matrix).
PUBLIC_KEYS = ("oa", "miou", "f1", "kappa", "per_class_iou", "n_pixels")


def public_mask(shape: tuple[int, int], track: str, *, seed: int, block: int, fraction: float) -> np.ndarray:
    """Boolean (H, W) mask of the public pixels: exactly round(fraction * blocks) blocks, seeded per track."""
    h, w = shape
    nb_r, nb_c = -(-h // block), -(-w // block)
    n_blocks = nb_r * nb_c
    rng = np.random.default_rng([seed, zlib.crc32(track.encode())])
    chosen = np.zeros(n_blocks, dtype=bool)
    chosen[rng.permutation(n_blocks)[: max(1, round(fraction * n_blocks))]] = True
    grid = chosen.reshape(nb_r, nb_c)
    return np.repeat(np.repeat(grid, block, axis=0), block, axis=1)[:h, :w]


def split_labels(label: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(public, private) label rasters: each keeps its own pixels and sets the others to 0 (ignored)."""
    zero = np.zeros((), dtype=label.dtype)
    return np.where(mask, label, zero), np.where(mask, zero, label)


def rounded(scores: dict) -> dict:
    """The scores that may leave the server: aggregate values, rounded to DECIMALS."""

    def r(x):
        return None if x is None else round(float(x), DECIMALS)

    out = {k: r(scores[k]) for k in ("oa", "miou", "f1", "kappa")}
    out["per_class_iou"] = {name: r(v) for name, v in scores["per_class_iou"].items()}
    out["n_pixels"] = int(scores["n_pixels"])
    return out


class Scorer:
    """Holds the split labels of each served track and scores submission files against them."""

    def __init__(self, labels: dict[str, str], *, seed: int, block: int, fraction: float, chunk_rows: int = 512):
        self.label_paths = {t: Path(p) for t, p in labels.items()}
        self.split = dict(seed=seed, block=block, fraction=fraction)
        self.chunk_rows = chunk_rows
        self._labels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def labels(self, track: str) -> tuple[np.ndarray, np.ndarray]:
        if track not in self._labels:
            from c2seg_kit.submission import open_labels

            with open_labels(self.label_paths[track]) as lab:
                label = lab.read()
            self._labels[track] = split_labels(label, public_mask(label.shape, track, **self.split))
        return self._labels[track]

    def warm(self) -> list[str]:
        return [t for t in self.label_paths if self.labels(t) is not None]

    def peek(self, path: str) -> dict:
        """Check a submission's header (format, track, shape, dtype) without reading its pixels."""
        from c2seg_kit.submission import open_submission

        with open_submission(path) as sub:
            track = sub.track
        if track not in self.label_paths:
            served = ", ".join(sorted(self.label_paths)) or "none"
            raise InvalidSubmissionError(f"this server does not score track {track!r} (served: {served})")
        public, _ = self.labels(track)
        with open_submission(path, track=track, expected_shape=public.shape) as sub:
            method = sub.attrs.get("method")
        return {"track": track, "method": None if method is None else str(method)[:255]}

    def score(self, path: str, track: str) -> dict:
        """{"public": scores, "private": scores, "content_sha256": hex}, rounded, for one submission file.

        content_sha256 hashes the decoded prediction (as uint8 rows), so two files holding the
        same prediction (whatever their compression, chunking or integer type) hash the same;
        `c2seg admin duplicates` compares it across teams. It says nothing about the labels.
        """
        from c2seg_kit.submission import open_submission

        public, private = self.labels(track)
        cm_public, cm_private = ConfusionMatrix(), ConfusionMatrix()
        content = hashlib.sha256()
        with open_submission(path, track=track, expected_shape=public.shape) as sub:
            for r0, rows in sub.iter_rows(self.chunk_rows):
                r1 = r0 + rows.shape[0]
                try:
                    cm_public.update(public[r0:r1], rows)
                    cm_private.update(private[r0:r1], rows)
                except ValueError as e:  # the prediction's values or dtype; never label content
                    raise InvalidSubmissionError(f"{e} (rows {r0}..{r1 - 1})") from None
                content.update(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())  # values are 0..13 here
        return {"public": rounded(cm_public.scores()), "private": rounded(cm_private.scores()),
                "content_sha256": content.hexdigest()}
