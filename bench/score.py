"""Benchmark: scoring a Wuhan-size (6225 x 8670) gzip submission, ours vs the authors' path.

    python bench/score.py [--runs 5] [--sklearn-runs 3] [--height 6225 --width 8670]

Prints, side by side in one run (medians of several runs):
- the metric alone on in-memory arrays: c2seg_kit.metrics vs the authors' evaluation path
  (scikit-learn confusion_matrix + f1_score + cohen_kappa_score on the masked, flattened arrays);
- `score_files` in-process (read both gzip files + metric) and `c2seg score --json` end to end
  (a subprocess, interpreter start included);
- peak memory: tracemalloc peak of score_files, and the peak RSS of the `c2seg score` process
  above a bare interpreter that imported the same modules, both against the label raster's size.
Goals: metric < 0.25 s, command < 1.5 s, >= 100x vs sklearn, peak memory < 4x label size.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from common import C2SEG, WUHAN, hwm_wrapper, reported_hwm

from c2seg_kit.metrics import ConfusionMatrix
from c2seg_kit.submission.score_files import score_files
from c2seg_kit.submission.writers import write_labels, write_submission


def synthetic_pair(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Label map of blocky regions (like land cover) with unlabelled patches, and a prediction
    that is right on ~75% of pixels: region errors plus salt noise, some predicted 0."""
    rng = np.random.default_rng(seed)
    cell = 48
    coarse = rng.integers(0, 14, (h // cell + 1, w // cell + 1), dtype=np.uint8)
    label = np.repeat(np.repeat(coarse, cell, 0), cell, 1)[:h, :w].copy()
    coarse_err = np.where(rng.random(coarse.shape) < 0.2, rng.integers(0, 14, coarse.shape), coarse).astype(np.uint8)
    pred = np.repeat(np.repeat(coarse_err, cell, 0), cell, 1)[:h, :w].copy()
    pred[pred == 0] = 1
    noise = rng.random((h, w), dtype=np.float32) < 0.05
    pred[noise] = rng.integers(0, 14, int(noise.sum()), dtype=np.uint8)
    return label, pred


def median_time(fn, runs: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def sklearn_path(label: np.ndarray, pred: np.ndarray) -> tuple:
    """What the authors' evaluation does: mask, flatten, then three scikit-learn calls."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, f1_score

    mask = label > 0
    y, q = label[mask], pred[mask]
    return confusion_matrix(y, q), f1_score(y, q, average="macro"), cohen_kappa_score(y, q)


#: What `c2seg score` imports, so that a bare interpreter importing it is the baseline to subtract.
SCORE_IMPORTS = "c2seg_kit.cli, c2seg_kit.cli.scoring, c2seg_kit.submission.score_files, c2seg_kit.render"


def peak_rss_of(cli_args: list[str]) -> int:
    """Peak RSS (VmHWM) of a fresh interpreter running `c2seg <cli_args>`, or only the imports
    when cli_args is empty."""
    proc = subprocess.run([sys.executable, "-c", hwm_wrapper(SCORE_IMPORTS), *cli_args], capture_output=True,
                          text=True, check=False)
    hwm = reported_hwm(proc.stderr)
    if hwm is None:
        raise SystemExit(f"could not measure: {proc.stderr}")
    return hwm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=WUHAN[0])
    ap.add_argument("--width", type=int, default=WUHAN[1])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sklearn-runs", type=int, default=3)
    args = ap.parse_args()
    h, w = args.height, args.width
    label, pred = synthetic_pair(h, w)
    label_bytes = label.nbytes

    with tempfile.TemporaryDirectory() as tmp:
        lab_path = write_labels(Path(tmp) / "labels.h5", label, "BW")
        pred_path = write_submission(Path(tmp) / "predictions.h5", pred, "BW")
        print(f"raster {h} x {w} ({label_bytes / 2**20:.1f} MiB per uint8 raster); "
              f"files: labels {lab_path.stat().st_size / 2**20:.1f} MiB, predictions "
              f"{pred_path.stat().st_size / 2**20:.1f} MiB (gzip); {os.cpu_count()} CPUs")

        # Interleaved: each sklearn run sits between runs of ours, so a load change on a shared
        # machine hits both sides; the speed-up is the median of the per-round ratios.
        ours_times, sk_times, ratios = [], [], []
        for _ in range(args.sklearn_runs):
            before, ours = median_time(lambda: ConfusionMatrix().update(label, pred).scores(), args.runs)
            one_sk, sk = median_time(lambda: sklearn_path(label, pred), 1)
            after, _ = median_time(lambda: ConfusionMatrix().update(label, pred).scores(), args.runs)
            ours_times += [before, after]
            sk_times.append(one_sk)
            ratios.append(one_sk / statistics.mean([before, after]))
        ours_t, sk_t, speedup = statistics.median(ours_times), statistics.median(sk_times), statistics.median(ratios)
        # Same numbers? (sklearn's matrix is over the labels present; ours has fixed 13 x 14.)
        present = np.unique(np.concatenate([np.unique(label[label > 0]), np.unique(pred[label > 0])]))
        ours_m = np.zeros((14, 14), np.int64)
        ours_m[1:] = np.array(ours["confusion_matrix"])
        assert (ours_m[np.ix_(present, present)] == sk[0]).all(), "confusion matrices differ"
        assert abs(ours["kappa"] - sk[2]) < 1e-9, "kappa differs"

        files_t, scores = median_time(lambda: score_files(pred_path, lab_path), args.runs)
        cmd = C2SEG + ["score", str(pred_path), "--labels", str(lab_path), "--json"]
        subprocess.run(cmd, check=True, capture_output=True)  # warm the page cache
        cmd_t, _ = median_time(lambda: subprocess.run(cmd, check=True, capture_output=True), args.runs)
        bare = [sys.executable, "-c", f"import {SCORE_IMPORTS}"]
        bare_t, _ = median_time(lambda: subprocess.run(bare, check=True, capture_output=True), args.runs)

        tracemalloc.start()
        score_files(pred_path, lab_path)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rss_cmd = max(peak_rss_of(cmd[3:]) for _ in range(3))
        rss_bare = min(peak_rss_of([]) for _ in range(3))

    print(f"scores: mIoU {scores['miou']:.4f}  OA {scores['oa']:.4f}  kappa {scores['kappa']:.4f}  "
          f"pixels {scores['n_pixels']:,}")
    print()
    print(f"{'what':<52} {'median':>10} {'goal':>10}")
    print(f"{'metric alone, c2seg_kit.metrics (in memory)':<52} {ours_t:>9.3f}s {'< 0.25s':>10}")
    print(f"{'metric alone, sklearn (authors path, in memory)':<52} {sk_t:>9.3f}s")
    print(f"{'  speed-up (median of interleaved rounds)':<52} {speedup:>9.0f}x {'>= 100x':>10}")
    print(f"{'score_files in-process (read 2 gzip files + metric)':<52} {files_t:>9.3f}s")
    print(f"{'c2seg score --json, end to end (subprocess)':<52} {cmd_t:>9.3f}s {'< 1.5s':>10}")
    print(f"{'  of which interpreter start + imports':<52} {bare_t:>9.3f}s")
    print(f"{'  speed-up of the whole command vs sklearn metric alone':<52} {sk_t / cmd_t:>9.0f}x")
    print()
    print(f"{'peak traced memory of score_files':<52} {traced_peak / 2**20:>8.1f}MiB = {traced_peak / label_bytes:.2f}x label size (goal < 4x)")
    print(f"{'peak RSS of c2seg score':<52} {rss_cmd / 2**20:>8.1f}MiB")
    print(f"{'peak RSS of the bare interpreter + imports':<52} {rss_bare / 2**20:>8.1f}MiB")
    print(f"{'  c2seg score above the bare interpreter':<52} {(rss_cmd - rss_bare) / 2**20:>8.1f}MiB = "
          f"{(rss_cmd - rss_bare) / label_bytes:.2f}x label size (goal < 4x)")


if __name__ == "__main__":
    main()
