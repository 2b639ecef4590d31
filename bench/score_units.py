"""Benchmark: what counting the public part's per-unit counts (c2seg_server.public_units, for the
parameter-free Ladder) adds to the server's scoring of a Wuhan-size (6225 x 8670) scene submission.

    python bench/score_units.py [--runs 5] [--height 6225 --width 8670]

Scores the same file with the server's Scorer (split block 64, half public), alternately with the
counting and with it replaced by a no-op, and prints the medians of the CPU time
(time.process_time: less disturbed by other processes on a busy machine) and the stored blob's
size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from c2seg_kit.submission.writers import write_labels, write_submission
from c2seg_server import public_units, scoring


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--height", type=int, default=6225)
    ap.add_argument("--width", type=int, default=8670)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    label = rng.integers(0, 14, (args.height, args.width), dtype=np.uint8)
    pred = label.copy()
    wrong = rng.random(label.shape) < 0.3
    pred[wrong] = rng.integers(0, 14, int(wrong.sum()), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        labels, sub = Path(tmp) / "labels.h5", Path(tmp) / "sub.h5"
        write_labels(labels, label, "BW")
        write_submission(sub, pred, "BW")
        scorer = scoring.Scorer({"BW": str(labels)}, seed=1, block=64, fraction=0.5)
        scorer.labels("BW")
        counting = public_units.Counter.add
        times: dict[str, list[float]] = {"with the counts": [], "without": []}
        for _ in range(args.runs):
            for name in times:
                public_units.Counter.add = counting if name == "with the counts" else (lambda *a: None)
                t0 = time.process_time()
                scorer.score(str(sub), "BW")
                times[name].append(time.process_time() - t0)
        public_units.Counter.add = counting
        blob = scorer.score(str(sub), "BW")["public_units"]
    for name, values in times.items():
        print(f"scoring {name}: median {statistics.median(values):.2f} s CPU over {len(values)} runs")
    print(f"stored counts: {len(blob)} bytes")


if __name__ == "__main__":
    main()
