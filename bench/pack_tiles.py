"""Benchmark: `c2seg pack` of 850 Wuhan-size PNG tiles (256 x 256, as the winners wrote them).

    python bench/pack_tiles.py [--runs 3] [--tiles 850]

Writes one greyscale PNG of class ids per tile (ids 0..849, blocky land-cover-like maps with
noise, as bench/score.py's predictions) and times, medians of --runs:
- `c2seg pack PRED_DIR --track BW --out predictions.h5 --quiet`, end to end (a subprocess,
  interpreter start included; the output removed between runs);
- the same with `--like TEST_DIR` (ids and shapes checked against the test tiles: three GeoTIFF
  headers per tile are read, no pixel; the stand-in test split written here has full-size,
  georeferenced 256 x 256 tiles of one band per modality, to keep it small on disk: only the
  headers are read, and those do not grow with the band count);
- the peak RSS of the pack process (VmHWM, read in the child).
Goal: pack of 850 tiles under 10 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import WUHAN, hwm_wrapper, reported_hwm  # noqa: E402
from score import synthetic_pair  # noqa: E402

from c2seg_kit.io.geotiff import GeoRef, write_geotiff  # noqa: E402
from c2seg_kit.tiling import window_origins  # noqa: E402

TILE = 256
BANDS = {"hsi": (1, np.int16), "msi": (1, np.uint16), "sar": (1, np.float32)}


def write_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    """PRED_DIR with n PNGs and a test split with n tiles per modality (headers matter, not values)."""
    _, pred = synthetic_pair(*WUHAN)
    origins = window_origins(WUHAN[0], WUHAN[1], TILE, TILE)[:n]
    preds, test = folder / "preds", folder / "test"
    preds.mkdir()
    georef = GeoRef.utm(32650, 215000.0, 3415000.0, 10.0, "WGS 84 / UTM zone 50N")
    blank = {m: np.zeros((b, TILE, TILE), dt) for m, (b, dt) in BANDS.items()}
    for m in BANDS:
        (test / m).mkdir(parents=True)
    for i, (r, c) in enumerate(origins):
        Image.fromarray(pred[r : r + TILE, c : c + TILE]).save(preds / f"{i}.png")
        for m, data in blank.items():
            write_geotiff(test / m / f"{i}.tiff", data, georef.window(r, c))
    return preds, test


def run(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", hwm_wrapper(), *cmd], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, reported_hwm(proc.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=850)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        preds, test = write_inputs(tmp, args.tiles)
        png_mib = sum(p.stat().st_size for p in preds.iterdir()) / 2**20
        out = tmp / "predictions.h5"
        rows = {}
        for label, extra in (("c2seg pack, end to end", []), ("c2seg pack --like TEST_DIR, end to end", ["--like", str(test)])):
            samples = []
            for _ in range(args.runs + 1):  # the first run warms the page cache
                out.unlink(missing_ok=True)
                samples.append(run(["pack", str(preds), "--track", "BW", "--out", str(out), "--quiet", *extra]))
            rows[label] = samples[1:]
        size = out.stat().st_size / 2**20
    print(f"{args.tiles} PNG tiles of {TILE} x {TILE} ({png_mib:.1f} MiB) -> predictions.h5 {size:.1f} MiB; "
          f"{os.cpu_count()} CPUs")
    print(f"{'what (median of ' + str(args.runs) + ')':<44} {'time':>8} {'peak RSS':>10} {'goal':>8}")
    for label, samples in rows.items():
        t = statistics.median(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples) / 2**20
        print(f"{label:<44} {t:>7.2f}s {rss:>8.0f}MiB {'< 10s':>8}")


if __name__ == "__main__":
    main()
