"""Benchmark: `prepare --pca-solver authors` (the authors' randomized PCA) against the exact fit, at
each city's full HSI size, on a synthetic pixel stream (no files: what is measured is the solver).

Each fit runs in its own process, which reports its wall time and its own peak RSS (VmHWM) and,
for the authors' solver, how far its components lie from the exact ones (|cos| per component)
and the relative eigenvalue gaps at the cut. The stream is a pool of 65,536 synthetic spectra,
rolled by a different offset for every block, as many blocks as the city has HSI pixels:

- ``flat``: 8 strong skewed factors over a noise floor of equal variance (a flat tail: the
  eigenvalues from the 9th on nearly tie, where the solvers disagree);
- ``spread``: a geometric spectrum (each eigenvalue 0.8 x the previous): they agree.

    python bench/pca_authors.py --runs 3                       # the four cities, both solvers
    python bench/pca_authors.py --city augsburg --spectrum spread --runs 1
    python bench/pca_authors.py --city augsburg --offset 0 --runs 1   # the flat tail alone

The pool and the interpreter take about 0.2 GB of the reported peak (printed as "base"). CPU
time (all threads) is printed beside the wall time: on a shared machine it is the steadier figure.

The offset (2000, as integer-scaled reflectance) matters: the authors' float32 mean over a
million pixels is off by tens (numpy sums the rows one after the other in float32), the
authors' solver reproduces that, and the error's direction then outweighs the smaller
components: the |cos| printed shows which of the authors' components are other directions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from c2seg_kit.prepare.pca import PCA, Moments
from c2seg_kit.prepare.pca_authors import authors_passes, authors_randomized_pca
from c2seg_kit.registry import TRACKS

POOL = 65536


def cities() -> dict[str, tuple[int, int, int]]:
    """city -> (HSI rows, HSI cols, bands) at full size: BW's HSI lies on its 30 m grid."""
    out = {}
    for track in TRACKS.values():
        factor = 3 if track.name == "BW" else 1
        for city in track.cities:
            h, w = city.nominal_shape
            out[city.name] = (-(-h // factor), -(-w // factor), track.bands["hsi"])
    return out


def pool(bands: int, spectrum: str, offset: float = 2000.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    axes, _ = np.linalg.qr(rng.normal(size=(bands, bands)))
    if spectrum == "flat":
        sd = np.concatenate([600.0 * 0.6 ** np.arange(8), np.full(bands - 8, 10.0)])
    else:
        sd = 600.0 * 0.8 ** (np.arange(bands) / 2)
    z = (rng.gamma(2.0, size=(POOL, bands)) - 2.0) / np.sqrt(2.0) * sd
    return (offset + z @ axes.T + rng.normal(size=(POOL, bands))).astype(np.float32)


def rss() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in bytes."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                got[line.split(":")[0]] = int(line.split()[1]) * 1024
    return got["VmRSS"], got["VmHWM"]


def child(city: str, solver: str, spectrum: str, offset: str = "2000") -> None:
    rows, cols, bands = cities()[city]
    n = rows * cols
    base = pool(bands, spectrum, float(offset))
    before, _ = rss()

    def blocks():
        for i, start in enumerate(range(0, n, POOL)):
            yield np.roll(base, 997 * i, axis=0)[: min(POOL, n - start)]

    t0, c0 = time.perf_counter(), time.process_time()
    if solver == "exact":
        moments = Moments(bands)
        for block in blocks():
            moments.add(block)
        pca = PCA.from_moments(moments, 10)
    else:
        pca = authors_randomized_pca(blocks, 10, np.float32, np.random.RandomState(0))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, peak = rss()
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak": peak, "base": before, "pixels": n, "bands": bands,
                      "passes": 1 if solver == "exact" else authors_passes(n, bands, 10),
                      "agreement": None if pca.exact_agreement is None else [round(float(v), 3) for v in
                                                                             pca.exact_agreement],
                      "gaps": [round(g, 4) for g in pca.eigen_gaps()]}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--city", choices=sorted(cities()), action="append", help="(repeatable; default: all four)")
    p.add_argument("--spectrum", choices=["flat", "spread"], default="flat")
    p.add_argument("--offset", type=float, default=2000.0,
                   help="value every band is centred on (0: the float32 mean is exact, only the tail differs)")
    p.add_argument("--runs", type=int, default=3, help="runs per city and solver (median time reported)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return
    for city in args.city or list(cities()):
        for solver in ("exact", "authors"):
            results = []
            for _ in range(args.runs):
                out = subprocess.run([sys.executable, __file__, "--child", city, solver, args.spectrum,
                                      str(args.offset)],
                                     check=True, capture_output=True, text=True).stdout
                results.append(json.loads(out))
            r = results[-1]
            times = [round(x["seconds"], 1) for x in results]
            cpu = statistics.median(x["cpu"] for x in results)
            print(f"{city:9} {solver:7} {r['pixels']:>10,} px x {r['bands']} bands, {r['passes']:>2} passes: "
                  f"{statistics.median(times):7.1f} s wall (runs {times}), {cpu:.1f} s CPU, peak RSS {max(x['peak'] for x in results) / 1e9:.2f} GB "
                  f"(base {r['base'] / 1e9:.2f} GB)")
            if r["agreement"] is not None:
                print(f"{'':17} |cos| with the exact components: {r['agreement']}")
                print(f"{'':17} eigenvalue gaps (j, j+1), j = 1..10: {r['gaps']}")


if __name__ == "__main__":
    main()
