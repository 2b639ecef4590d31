"""Scoring files: a submission against a hidden-labels file, and the report of the result.

>>> result = score_files("predictions.h5", "labels.h5")
>>> result["miou"]
>>> write_report(result, Path("report"))   # scores.json, per_class.csv, confusion matrix CSV + PNG
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from c2seg_kit.classes import CLASSES, EVAL_CLASSES, NUM_LABELS
from c2seg_kit.metrics import ConfusionMatrix
from c2seg_kit.outputs import output_file, write_text
from c2seg_kit.submission.formats import DEFAULT_CHUNK_ROWS, LAYOUT_TILES, Source
from c2seg_kit.submission.readers import open_labels, open_submission

__all__ = ["score_files", "write_report"]


def score_files(pred_path: Source, labels_path: Source, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """Score a submission against a labels file: ``{"track": ..., **compute_scores(...)}``.

    The submission must have the labels' layout. Scene layout: both files are read in lockstep
    row blocks. Tile layout: the submission must hold exactly the labels' tile ids, each of its
    label tile's shape; the tiles are read one at a time, in the labels' order, into one confusion
    matrix over every tile's pixels (a pixel lying in two overlapping tiles counts once per tile,
    as the challenge scored tiles), and the result adds ``layout`` = "tiles" and ``n_tiles``.
    Memory stays a few blocks (or one tile) whatever the size. Errors name the submission's
    problem only; no message quotes label content.
    """
    with open_labels(labels_path) as labels, open_submission(
        pred_path, track=labels.track, **labels.expectation()
    ) as sub:
        cm = ConfusionMatrix()
        for (_, lab), (_, pred) in zip(labels.iter_blocks(chunk_rows), sub.iter_blocks(chunk_rows), strict=True):
            cm.update(lab, pred)
        result = {"track": labels.track, **cm.scores()}
        if labels.layout == LAYOUT_TILES:
            result.update(layout=LAYOUT_TILES, n_tiles=len(labels.ids))
        return result


#: The files `score --report` writes into its folder.
REPORT_FILES = ("scores.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png")


def write_report(result: dict, out_dir: Path) -> list[Path]:
    """scores.json, per_class.csv, confusion_matrix.csv and confusion_matrix.png in ``out_dir``."""
    from c2seg_kit.render import render_confusion_png

    scores, per_class, cm_csv, png = (out_dir / name for name in REPORT_FILES)
    write_text(scores, json.dumps(result, indent=2) + "\n")
    m = result["confusion_matrix"]
    with output_file(per_class, force=True, mode="w", need_folder=False, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "name", "display", "iou", "true_pixels", "predicted_pixels", "correct_pixels"])
        for i, c in enumerate(EVAL_CLASSES):
            iou = result["per_class_iou"][c.name]
            w.writerow([c.id, c.name, c.display, "" if iou is None else f"{iou:.6f}",
                        sum(m[i]), sum(row[c.id] for row in m), m[i][c.id]])
    with output_file(cm_csv, force=True, mode="w", need_folder=False, newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["true \\ pred"] + [c.name for c in CLASSES[:NUM_LABELS]])
        for c, row in zip(EVAL_CLASSES, m, strict=True):
            w.writerow([c.name] + list(row))
    png = render_confusion_png(m, png, title=f"C2Seg {result['track']} confusion matrix")
    return [scores, per_class, cm_csv, png]
