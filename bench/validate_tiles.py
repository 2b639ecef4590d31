"""Benchmark: time to validate a tile-layout submission of many tiny tiles, without labels (the
figure in SECURITY.md, tile-layout files).

    python bench/validate_tiles.py [--tiles 140 850 5000 50000] [--runs 3]
    cd /tmp && PYTHONPATH=/path/to/an/older/checkout python /path/to/bench/validate_tiles.py

Each file holds N tiles of 1 x 1 pixel for track AB (written with h5py alone, so this script also
runs against older checkouts of the kit), and is validated in this process as `c2seg validate`
does without --labels (open_submission + check_values); the wall time is the median of --runs.
A file holding more tiles than the track has test tiles (AB: 140) is now refused from its
member count before any member is looked at.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.errors import C2SegError
from c2seg_kit.submission.readers import open_submission


def tiny_tiles(path: Path, n: int) -> Path:
    one = np.ones((1, 1), np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB", "layout": "tiles"})
        g = f.create_group("prediction")
        for i in range(n):
            g.create_dataset(str(i), data=one)
    return path


def validate(path: Path) -> str:
    try:
        with open_submission(path) as sub:
            sub.check_values()
        return "accepted"
    except C2SegError as e:
        return f"refused: {str(e)[:70]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, nargs="+", default=[140, 850, 5000, 50000])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.tiles:
            path = tiny_tiles(Path(tmp) / f"{n}.h5", n)
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                verdict = validate(path)
                times.append(time.perf_counter() - t0)
            print(f"{n:>7} tiles  {path.stat().st_size / 2**20:7.1f} MiB  {statistics.median(times):8.3f} s  "
                  f"({1e6 * statistics.median(times) / n:6.0f} us a tile)  {verdict}", flush=True)


if __name__ == "__main__":
    main()
