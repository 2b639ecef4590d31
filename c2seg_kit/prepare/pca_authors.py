"""The authors' PCA solver, computed again: scikit-learn 1.3's ``PCA(n_components=k)`` with
``svd_solver='auto'``, which on a city runs the *randomized* solver (``c2seg prepare --pca-solver
authors``), streamed over the pixels. The exact fit, the sign rule and the :class:`PCA` it returns
are :mod:`c2seg_kit.prepare.pca`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.prepare.pca import CHUNK, PCA, Moments

#: The random directions the authors' solver draws beyond the components kept (scikit-learn's default).
AUTHORS_OVERSAMPLES = 10
#: Pixels above which scikit-learn's ``svd_solver='auto'`` leaves the exact SVD for the randomized one.
AUTHORS_EXACT_UP_TO = 500


def authors_solver_choice(n: int, channels: int, k: int) -> str:
    """What ``svd_solver='auto'`` of scikit-learn 1.3 runs on an (n, channels) matrix for k
    components: "full" (an exact SVD) on a small matrix or when k is most of the bands, else
    "randomized"."""
    if max(n, channels) <= AUTHORS_EXACT_UP_TO:
        return "full"
    return "randomized" if 1 <= k < 0.8 * min(n, channels) else "full"


def authors_iterations(n: int, channels: int, k: int) -> int:
    """The randomized solver's power iterations: 7 when k is under a tenth of the smaller side, else 4."""
    return 7 if k < 0.1 * min(n, channels) else 4


def authors_passes(n: int, channels: int, k: int) -> int:
    """Passes over the pixels :func:`authors_randomized_pca` makes (for a progress bar)."""
    if authors_solver_choice(n, channels, k) == "full":
        return 1
    return 1 + 2 * authors_iterations(n, channels, k) + 2


class _RowSum:
    """numpy's ``x.sum(axis=0)`` of an (n, C) float array, streamed: the rows added one after the
    other in the array's own precision (that is how numpy reduces along the first axis of a
    row-major array, so float32 rounding is reproduced exactly, however the rows come in blocks)."""

    def __init__(self):
        self.total: np.ndarray | None = None
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        if not len(x):
            return
        self.total = x.sum(axis=0) if self.total is None else np.concatenate([self.total[None], x]).sum(axis=0)
        self.n += len(x)


def _rows(blocks: Callable[[], Iterable[np.ndarray]], dtype: np.dtype, progress=None):
    """Every pixel of ``blocks()`` cast to ``dtype`` (as the authors cast the HSI), regrouped into
    pieces of ``CHUNK`` rows (the last one shorter), so that every product, and its rounding, is
    the same however the caller cuts its blocks. A piece is overwritten by the next one."""
    buf: np.ndarray | None = None
    fill = 0
    for block in blocks():
        start = 0
        while start < len(block):
            if buf is None:
                buf = np.empty((CHUNK, block.shape[1]), dtype)
            take = min(CHUNK - fill, len(block) - start)
            buf[fill : fill + take] = block[start : start + take]
            fill, start = fill + take, start + take
            if fill == CHUNK:
                yield buf
                fill = 0
        if progress is not None:
            progress(len(block))
    if fill:
        yield buf[:fill]


def authors_randomized_pca(blocks: Callable[[], Iterable[np.ndarray]], k: int, dtype, rng: np.random.RandomState,
                           progress: Callable[[int], None] | None = None) -> PCA:
    """scikit-learn 1.3's ``PCA(n_components=k).fit(X)`` with ``svd_solver='auto'``, streamed.

    ``blocks()`` yields the (n_i, C) pixel rows of X in order, the same every call (it is called
    once per pass); ``dtype`` is X's float type (the authors cast AB's HSI to float32; scikit-learn
    keeps float32 and float64 and turns anything else into float64); ``rng`` is the legacy numpy
    stream the solver draws from (theirs: the global one, seeded 0 by their ``main()``, drawn
    by the source city and then by the target city).

    When 'auto' picks the exact SVD (at most 500 pixels, or k at least 0.8 x bands) this is the
    exact fit with provisional signs, as :meth:`PCA.from_moments` (nothing is drawn). Otherwise,
    as that release does it, in ``dtype`` throughout:

    1. the mean as numpy's ``X.mean(axis=0)``: rows summed in order in ``dtype``, divided by n;
       X centred by it;
    2. Q = C x (k + 10) standard normals from ``rng.normal``, cast to ``dtype``;
    3. 7 power iterations (4 when k >= bands / 10), each normalised by an LU factorisation with
       the permutation folded in (scipy.linalg.lu, ``permute_l=True``): Q = lu(X Q), Q = lu(X^T Q);
    4. Q = the economic QR of X Q; B = Q^T X; the small SVD of B (LAPACK gesdd); U = Q U_B;
    5. the sign rule of that release (svd_flip on U): for each component, the pixel with the
       largest |U| (the first on ties) gets a positive U, the component turned with it;
    6. explained variance S^2 / (n - 1) over the total variance from the squared centred X
       (summed as numpy does, in ``dtype``).

    X is never held: every product with X streams over the pixels (``CHUNK`` rows at a time,
    however ``blocks()`` cuts them, so the result does not depend on the cut), 2 x 7 + 3 passes.
    What is held is the n x (k + 10) matrix X Q in ``dtype``, about twice over at the peak (the
    LU and the QR factor all n rows at once, so they cannot be streamed without changing the
    result): 2.1 x n x 20 x 4 bytes in float32, 2.2 GB for Beijing's 13 million 30 m cells.
    Products over all pixels (X^T Q, Q^T X) are summed block by block in float64 and rounded to
    ``dtype`` once, where the BLAS sums in ``dtype`` in an order of its own: the results agree
    with scikit-learn's to float rounding, not bit for bit. Pixels are as ``blocks()`` gives them:
    the caller leaves out non-finite ones (scikit-learn refuses them).
    """
    from scipy import linalg

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"the authors' solver runs in float32 or float64, not {dtype}")
    # pass 1: numpy's mean in dtype, and exact float64 moments (the eigenvalues, for the gaps)
    moments: Moments | None = None
    total = _RowSum()
    for x in _rows(blocks, dtype, progress):
        moments = moments or Moments(x.shape[1])
        moments.add(x)
        total.add(x)
    if moments is None:
        raise InvalidDataError("too few finite HSI pixels to fit a PCA")
    exact = PCA.from_moments(moments, k)
    n, c = total.n, moments.channels
    if authors_solver_choice(n, c, k) == "full":
        return replace(exact, solver="authors")
    mean = total.total / n  # true division by the count in dtype, as np.mean
    width = k + AUTHORS_OVERSAMPLES
    sumsq = _RowSum()

    def times(q: np.ndarray, squares: bool = False, order: str = "C") -> np.ndarray:
        """(n, width) = X q in dtype, pixel block by pixel block. The LU factors a row-major
        matrix in place, the QR a column-major one: ``order`` saves them a copy."""
        y = np.empty((n, q.shape[1]), dtype, order=order)
        i = 0
        for x in _rows(blocks, dtype, progress):
            x = x - mean
            if squares:
                sumsq.add(np.square(x))
            y[i : i + len(x)] = x @ q
            i += len(x)
        return y

    def t_times(p: np.ndarray) -> np.ndarray:
        """(C, width) = X^T p, summed over pixel blocks in float64, rounded to dtype."""
        acc = np.zeros((c, p.shape[1]))
        i = 0
        for x in _rows(blocks, dtype, progress):
            x = x - mean
            acc += x.T @ p[i : i + len(x)]
            i += len(x)
        return acc.astype(dtype)

    def lu(a: np.ndarray) -> np.ndarray:
        return linalg.lu(a, permute_l=True, overwrite_a=True, check_finite=False)[0]

    q = rng.normal(size=(c, width)).astype(dtype, copy=False)
    for it in range(authors_iterations(n, c, k)):
        q = lu(times(q, squares=it == 0))
        q = lu(t_times(q))
    q = linalg.qr(times(q, order="F"), mode="economic", overwrite_a=True, check_finite=False)[0]
    b = t_times(q).T  # Q^T X
    u_b, s, vt = linalg.svd(b, full_matrices=False, lapack_driver="gesdd", check_finite=False)
    # svd_flip on U = Q U_B, one block of rows at a time: the first largest |U| of each column
    best, signs = np.full(k, -1.0), np.ones(k)
    for i in range(0, n, CHUNK):
        u = q[i : i + CHUNK] @ u_b[:, :k]
        idx = np.argmax(np.abs(u), axis=0)
        vals = np.abs(u[idx, np.arange(k)])
        for j in np.flatnonzero(vals > best):
            best[j], signs[j] = vals[j], (-1.0 if u[idx[j], j] < 0 else 1.0)
    components = (vt[:k].astype(np.float64) * signs[:, None]).T
    variance = (s[:k] ** 2) / dtype.type(n - 1)
    total_var = (sumsq.total / (n - 1)).sum()
    agreement = np.abs(np.sum(components * exact.components, axis=0))
    return PCA(mean.astype(np.float64), components, (variance / total_var).astype(np.float64), n,
               eigenvalues=exact.eigenvalues, solver="authors", signed=True, exact_agreement=agreement)
