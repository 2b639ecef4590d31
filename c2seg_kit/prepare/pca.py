"""The HSI PCA of `c2seg prepare`, streamed: exact over all pixels or over a seeded sample, or the
authors' randomized solver; with the authors' sign rule.

The authors reduce each city's HSI with scikit-learn 1.3's ``PCA(n_components=10)`` fitted on
every pixel (BW: on the 30 m grid). A principal axis has no intrinsic sign; that release fixed
it with ``svd_flip(U, Vt)`` deciding on U: for each component, the pixel with the largest
absolute (centred) score scores positive, the first such pixel in row-major order on ties.
Later releases decide on the loadings instead (the largest absolute loading positive), which
disagrees on about half the components, and after min-max a flipped channel becomes 1 - x. So
the kit pins the rule, not the library:

1. :class:`Moments` streams sums of the pixels and of their outer products in float64 (in
   fixed-size chunks of the pixel stream, so the result does not depend on how the caller
   blocks its reads), or :class:`Sampler` keeps a seeded uniform sample of them;
2. :meth:`PCA.from_moments` takes the top eigenvectors of the covariance (signs provisional);
3. :class:`ExtremeScores` watches every pixel's scores in a second streamed pass and
   :meth:`PCA.oriented` turns each component so that its extreme pixel scores positive.

Memory is bounded by the chunk size and the number of bands, never by the city.

Their ``PCA(n_components=10)`` left ``svd_solver='auto'``, which on a city (more than 500 pixels,
10 < 0.8 x bands) runs scikit-learn's *randomized* solver, not an exact decomposition. Where the
spectrum's tail is flat the two give other directions for the last components, so a checkpoint
trained on one sees other channels under the other. :func:`c2seg_kit.prepare.pca_authors.authors_randomized_pca`
computes that solver's result again (``c2seg prepare --pca-solver authors``); see its docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from c2seg_kit.errors import InvalidDataError

#: What the manifest records as the sign rule.
SIGN_RULE = ("scikit-learn 1.3 (svd_flip on U): on each component the pixel with the largest absolute "
             "centred score scores positive, the first in pixel order on ties")
#: Pixels per float64 Gram update: bounds memory (CHUNK x bands x 8 bytes) and fixes the summation order.
CHUNK = 16384


class Moments:
    """Streamed count, sum and sum of outer products of (n, C) pixel blocks, in float64.

    Values are shifted by the first chunk's mean before summing, so the covariance does not
    suffer from cancellation when the values sit far from zero (integer-scaled reflectance).
    Pixels are buffered into chunks of ``CHUNK`` in stream order, so the sums are bit-identical
    however the stream is cut into blocks.
    """

    def __init__(self, channels: int, chunk: int = CHUNK):
        self.channels = channels
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s = np.zeros(channels)
        self.ss = np.zeros((channels, channels))
        self._buf = np.empty((chunk, channels))
        self._fill = 0

    def add(self, pixels: np.ndarray) -> None:
        """Add an (n, C) block of pixels (any real dtype)."""
        if pixels.ndim != 2 or pixels.shape[1] != self.channels:
            raise ValueError(f"expected (n, {self.channels}) pixels, got shape {pixels.shape}")
        start = 0
        while start < len(pixels):
            take = min(len(self._buf) - self._fill, len(pixels) - start)
            self._buf[self._fill : self._fill + take] = pixels[start : start + take]
            self._fill += take
            start += take
            if self._fill == len(self._buf):
                self._flush()

    def _flush(self) -> None:
        x = self._buf[: self._fill]
        if not len(x):
            return
        if self.shift is None:
            self.shift = x.mean(axis=0)
        x -= self.shift
        self.n += len(x)
        self.s += x.sum(axis=0)
        self.ss += x.T @ x
        self._fill = 0

    def finish(self) -> tuple[int, np.ndarray, np.ndarray]:
        """(n, mean, covariance with ddof 1) of everything added."""
        self._flush()
        if self.n < 2:
            raise InvalidDataError("too few finite HSI pixels to fit a PCA")
        d = self.s / self.n
        cov = (self.ss - self.n * np.outer(d, d)) / (self.n - 1)
        return self.n, self.shift + d, (cov + cov.T) / 2


class Sampler:
    """A seeded uniform sample of at most ``limit`` rows of an (n, C) stream, without replacement.

    Every row of the stream draws a uniform key from ``rng`` in stream order and the ``limit``
    rows with the smallest keys are kept (bottom-k sampling), so the sample depends only on
    the seed and the stream, not on how the stream is cut into blocks, and its size need not
    be known in advance. ``keep`` masks rows that may not be sampled (they still draw a key).
    Rows are held as float32 in one preallocated array of ``limit`` plus a half rows.
    """

    def __init__(self, limit: int, rng: np.random.Generator):
        if limit < 1:
            raise ValueError("a sample needs at least one pixel")
        self.limit = limit
        self.slack = max(limit // 2, 1)
        self.rng = rng
        self.threshold = np.inf
        self.keys = np.empty(limit + self.slack)
        self.rows: np.ndarray | None = None
        self.held = 0

    def add(self, rows: np.ndarray, keep: np.ndarray | None = None) -> None:
        keys = self.rng.random(len(rows))
        mask = keys < self.threshold
        if keep is not None:
            mask &= keep
        picked = np.flatnonzero(mask)
        if not len(picked):
            return
        if self.rows is None:
            self.rows = np.empty((len(self.keys), rows.shape[1]), np.float32)
        for start in range(0, len(picked), self.slack):
            part = picked[start : start + self.slack]
            if self.held + len(part) > len(self.keys):
                self._prune()
                part = part[keys[part] < self.threshold]
            n = len(part)
            self.keys[self.held : self.held + n] = keys[part]
            self.rows[self.held : self.held + n] = rows[part]
            self.held += n

    def _prune(self) -> None:
        """Keep the ``limit`` smallest keys, compacting in place (no second copy of the rows)."""
        if self.held <= self.limit:
            return
        best = np.sort(np.argpartition(self.keys[: self.held], self.limit - 1)[: self.limit])
        for i in range(0, self.limit, CHUNK):  # best[j] >= j: reads stay ahead of writes
            part = best[i : i + CHUNK]
            self.keys[i : i + len(part)] = self.keys[part]
            self.rows[i : i + len(part)] = self.rows[part]
        self.held = self.limit
        self.threshold = float(self.keys[: self.held].max())

    def order(self) -> np.ndarray:
        """Indices of the held rows in key order (deterministic)."""
        self._prune()
        return np.argsort(self.keys[: self.held], kind="stable")

    def values(self) -> np.ndarray:
        """The sampled rows as float32, in key order."""
        if self.rows is None:
            return np.empty((0, 0), np.float32)
        return self.rows[self.order()]

    def moments(self) -> Moments:
        """The sample's moments, fed in key order chunk by chunk (no float64 copy of the sample)."""
        order = self.order()
        moments = Moments(0 if self.rows is None else self.rows.shape[1])
        for i in range(0, len(order), CHUNK):
            moments.add(self.rows[order[i : i + CHUNK]])
        return moments


@dataclass
class ExtremeScores:
    """Per component, the pixel with the largest absolute score seen so far (first on ties).

    Feed every pixel's scores in pixel order with :meth:`update`; :meth:`signs` then gives
    the factor (+1 or -1) that makes each of those pixels score positive. ``where`` records
    each extreme pixel's location as the caller names it (e.g. ``[row, col]`` or
    ``[tile, row, col]``), for the manifest.
    """

    k: int
    best: np.ndarray = field(init=False)
    sign: np.ndarray = field(init=False)
    where: list = field(init=False)
    tails: np.ndarray = field(init=False)  # (2, k): the largest positive score, the largest |negative| one

    def __post_init__(self):
        self.best = np.full(self.k, -1.0)
        self.sign = np.ones(self.k)
        self.where = [None] * self.k
        self.tails = np.zeros((2, self.k))

    def update(self, scores: np.ndarray, width: int, row0: int = 0, tile: str | None = None) -> None:
        """Scores (k, n) of n pixels in row-major order of rows ``row0...`` that are ``width`` wide."""
        if not scores.shape[1]:
            return
        self.tails = np.maximum(self.tails, [scores.max(axis=1), -scores.min(axis=1)])
        a = np.abs(scores)
        idx = np.argmax(a, axis=1)  # first occurrence on ties
        vals = a[np.arange(self.k), idx]
        for j in np.flatnonzero(vals > self.best):  # strictly larger: an earlier pixel wins ties
            i = int(idx[j])
            self.best[j] = vals[j]
            # a component whose scores are all zero keeps +1 (scikit-learn would zero it)
            self.sign[j] = -1.0 if scores[j, i] < 0 else 1.0
            loc = [row0 + i // width, i % width]
            self.where[j] = loc if tile is None else [tile, *loc]

    def signs(self) -> np.ndarray:
        return self.sign.copy()

    def margins(self) -> np.ndarray:
        """Per component, how clearly the extreme pixel beats the other tail: 1 - opposite / extreme.

        Near 0, the largest positive and negative scores almost tie and the sign rests on
        rounding: the authors' own solver could have gone either way on such a component.
        """
        hi, lo = self.tails.max(axis=0), self.tails.min(axis=0)
        return np.divide(hi - lo, hi, out=np.ones(self.k), where=hi > 0)


@dataclass
class PCA:
    """A PCA fitted from streamed moments: mean (C,), components (C, k), explained variance ratio."""

    mean: np.ndarray
    components: np.ndarray  # (C, k)
    explained_variance_ratio: np.ndarray
    pixels: int = 0  # how many pixels the fit saw
    # every eigenvalue of the covariance, largest first (None: not known, e.g. a PCA read back from a cache)
    eigenvalues: np.ndarray | None = None
    solver: str = "exact"  # "exact" or "authors" (the authors' randomized solver)
    signed: bool = False  # the fit fixed the signs itself (the randomized solver's own rule): no sign pass
    exact_agreement: np.ndarray | None = None  # authors: |cos| of each component with the exact one

    @classmethod
    def from_covariance(cls, n: int, mean: np.ndarray, cov: np.ndarray, k: int) -> PCA:
        """The top ``k`` eigenvectors; provisional signs (largest loading positive) until :meth:`oriented`."""
        if k > len(mean):
            raise InvalidDataError(f"cannot keep {k} PCA components of {len(mean)} HSI bands")
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:k]
        vecs = vecs[:, order]
        vecs *= np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
        total = max(float(vals.clip(min=0).sum()), 1e-30)
        return cls(np.asarray(mean, np.float64), vecs, vals[order].clip(min=0) / total, n,
                   eigenvalues=np.sort(vals)[::-1].clip(min=0))

    @classmethod
    def from_moments(cls, moments: Moments, k: int) -> PCA:
        return cls.from_covariance(*moments.finish(), k)

    @classmethod
    def from_sums(cls, n: int, s: np.ndarray, ss: np.ndarray, k: int) -> PCA:
        """From plain sums of x and of x x^T over n pixels (no shift)."""
        if n < 2:
            raise InvalidDataError("too few finite HSI pixels to fit a PCA")
        mean = s / n
        return cls.from_covariance(n, mean, (ss - n * np.outer(mean, mean)) / (n - 1), k)

    def eigen_gaps(self) -> list[float]:
        """Per kept component j, the relative gap (l_j - l_{j+1}) / l_j to the next eigenvalue (the
        last one: to the first component left out). Near 0, components j and j+1 are nearly tied: any
        two solvers (and two runs of a randomized one) may return other mixtures of them."""
        if self.eigenvalues is None:
            return []
        k = self.components.shape[1]
        vals = np.asarray(self.eigenvalues, np.float64)
        nxt = np.append(vals[1:], 0.0)[:k]
        return [float(v) for v in np.divide(vals[:k] - nxt, vals[:k], out=np.zeros(k), where=vals[:k] > 0)]
    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """(n, C) pixels -> (k, n) centred scores in float64, channel-first (what the sign rule
        looks at; channel-first keeps the per-component reductions and the cache layout fast).

        Computed ``CHUNK`` pixels at a time, so the float64 copy of the input stays small, as
        ``V^T x - V^T mean`` (float64 keeps the cancellation harmless; centring every band
        first would cost another pass over the widest array).
        """
        vt = np.ascontiguousarray(self.components.T)
        out = np.empty((vt.shape[0], len(pixels)))
        for i in range(0, len(pixels), CHUNK):
            np.matmul(vt, pixels[i : i + CHUNK].astype(np.float64).T, out=out[:, i : i + CHUNK])
        out -= (vt @ self.mean)[:, None]
        return out

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., C) -> (k, ...) float32 centred scores, channel-first (the cache's layout)."""
        flat = x.reshape(-1, x.shape[-1])
        return self.scores(flat).astype(np.float32).reshape(self.components.shape[1], *x.shape[:-1])

    def oriented(self, signs: np.ndarray) -> PCA:
        """The same PCA with component j multiplied by signs[j]."""
        return replace(self, components=self.components * np.asarray(signs, np.float64))
