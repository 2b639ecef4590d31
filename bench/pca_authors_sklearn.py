"""Side by side at full size: `--pca-solver authors` against scikit-learn 1.3.2 itself.

Builds the synthetic Augsburg of bench/pca_authors.py (1,204,960 pixels x 242 bands, values around
``--offset``) as one float32 matrix, runs the authors' call (``np.random.seed(0)`` then
``PCA(n_components=10).fit``) and the kit's solver on ``RandomState(0)``, and prints how far apart
their components are, and how far numpy's float32 mean lies from the float64 one. Needs the side
environment of tests/fixtures/make_pca_authors_fixtures.py (scikit-learn 1.3.2, numpy 1.26.4) and
about 4 GB of memory (scikit-learn copies the matrix):

    PYTHONPATH=. /tmp/sk132/bin/python bench/pca_authors_sklearn.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from pca_authors import POOL, cities, pool  # noqa: E402

from c2seg_kit.prepare.pca_authors import authors_randomized_pca  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--city", choices=sorted(cities()), default="augsburg")
    p.add_argument("--spectrum", choices=["flat", "spread"], default="flat")
    p.add_argument("--offset", type=float, default=2000.0)
    args = p.parse_args()
    from sklearn import __version__
    from sklearn.decomposition import PCA

    rows, cols, bands = cities()[args.city]
    n = rows * cols
    base = pool(bands, args.spectrum, args.offset)
    x = np.concatenate([np.roll(base, 997 * i, axis=0) for i in range(-(-n // POOL))])[:n]
    error = np.abs(x.mean(axis=0) - x.astype(np.float64).mean(axis=0)).max()
    print(f"{args.city}: {n:,} pixels x {bands} bands; numpy {np.__version__}'s float32 mean is off by up to {error:.3g}")
    ours = authors_randomized_pca(lambda: iter([x]), 10, np.float32, np.random.RandomState(0))
    np.random.seed(0)
    t0 = time.perf_counter()
    theirs = PCA(n_components=10).fit(x)
    print(f"scikit-learn {__version__} ({theirs._fit_svd_solver}) fitted in {time.perf_counter() - t0:.1f} s")
    diff = np.abs(theirs.components_ - ours.components.T).max(axis=1)
    print("largest difference per component:", " ".join(f"{d:.1e}" for d in diff))
    print("|cos| of the authors' components with the exact ones:", np.round(ours.exact_agreement, 3).tolist())


if __name__ == "__main__":
    main()
