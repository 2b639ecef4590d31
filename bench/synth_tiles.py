"""Time and peak memory of `c2seg synth --layout tiles`, each run in a fresh child process.

Usage: python bench/synth_tiles.py [--track BW] [--scales 0.05 0.1] [--repeats 3]

For each scale it prints the city sizes, tile count, bytes written, the median wall time and
the median peak resident memory (ru_maxrss of the child). The writer keeps only the rows that
open tile rows need (one tile height plus one generated band, each modality on its own grid),
so peak memory follows the city's width, not its height.

Measured (2-core VM shared with other jobs, BW, 3 runs each, medians):
  scale 0.05: Beijing 674x435 + Wuhan 311x434, 24 + 9 tiles, 0.34 GB written, 1.3 s, peak 122 MB
  scale 0.1: Beijing 1347x871 + Wuhan 622x867, 60 + 12 tiles, 1.17 GB written, 3.9 s, peak 164 MB
(the interpreter with numpy, scipy, h5py and tifffile loaded is most of the first figure; doubling
both sides doubled the rows of a tile row, not the city held, and added 42 MB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from c2seg_kit.registry import get_track
from c2seg_kit.synth.tile_sets import synthesize_tiles
out, track, scale = Path(sys.argv[1]), get_track(sys.argv[2]), float(sys.argv[3])
t0 = time.perf_counter()
written = synthesize_tiles(out, track, scale=scale, seed=0, progress=False)
wall = time.perf_counter() - t0
files = [p for p in written["tiles"].rglob("*.tiff")]
print(json.dumps({"wall_s": wall, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes": sum(p.stat().st_size for p in files),
                  "train": len(list((written["train"] / "msi").iterdir())),
                  "test": len(list((written["test"] / "msi").iterdir()))}))
"""


def run_once(track: str, scale: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="c2seg-bench-tiles-") as tmp:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(Path(tmp) / "out"), track, str(scale)],
                              capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--track", default="BW")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from c2seg_kit.registry import get_track
    from c2seg_kit.synth.scenes import city_shape

    track = get_track(args.track)
    for scale in args.scales:
        runs = [run_once(args.track, scale) for _ in range(args.repeats)]
        sizes = " + ".join(f"{c.display} {'x'.join(map(str, city_shape(c, scale)))}" for c in track.cities)
        print(f"scale {scale}: {sizes}, {runs[0]['train']} + {runs[0]['test']} tiles, "
              f"{runs[0]['bytes'] / 1e9:.2f} GB written, "
              f"{statistics.median(r['wall_s'] for r in runs):.1f} s, "
              f"peak {statistics.median(r['peak_mb'] for r in runs):.0f} MB")


if __name__ == "__main__":
    main()
