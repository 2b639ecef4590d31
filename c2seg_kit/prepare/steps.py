"""What the scene and the tile pipelines of `c2seg prepare` share: options, report, band statistics."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from c2seg_kit.errors import InvalidDataError
from c2seg_kit.prepare.pca import PCA, ExtremeScores, Moments, Sampler
from c2seg_kit.prepare.pca_authors import authors_passes, authors_randomized_pca
from c2seg_kit.registry import MODALITIES

CHUNK = 128  # scene cache chunk edge: one training window spans at most 4 chunks
PCA_SAMPLE_MIN = 1000
#: "exact": the eigenvectors of the covariance (default); "authors": the authors' randomized solver.
PCA_SOLVERS = ("exact", "authors")
#: Relative eigenvalue gaps below this make two neighbouring components nearly tied.
NEAR_TIE = 0.01


@dataclass(frozen=True)
class PrepareOptions:
    """How `c2seg prepare` reduces and scales a city (defaults: the authors' recipe).

    ``pca_sample``: None fits the PCA on every finite HSI pixel of the city (the authors'
    recipe), N on a seeded uniform sample of N pixels (faster, approximately the same axes).
    The sign of each component always follows the authors' rule (:mod:`c2seg_kit.prepare.pca`).
    ``pca_solver``: "exact" (the covariance's eigenvectors) or "authors" (the randomized solver
    their scikit-learn call ran, its random stream seeded with ``seed`` and drawn by the source
    city first, as theirs; every pixel, so not with ``pca_sample``).
    ``sample_pixels``: pixels sampled per city and modality for ``normalisation="percentile"``.
    """

    pca_components: int = 10
    pca_fit: str = "city"  # "city": one PCA per city (paper); "source": the source city's for both
    pca_sample: int | None = None  # None: every pixel (paper); N: a seeded sample of N pixels
    pca_solver: str = "exact"  # "exact" or "authors" (their randomized solver, their random stream)
    normalisation: str = "minmax"  # "minmax" (paper) or "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    sample_pixels: int = 200_000
    band_rows: int = 3 * CHUNK  # scene rows per pass step; a multiple of 3 keeps BW's 30 m rows whole
    seed: int = 0

    def __post_init__(self):
        if self.pca_solver not in PCA_SOLVERS:
            raise ValueError(f"pca_solver must be 'exact' or 'authors', got {self.pca_solver!r}")
        if self.pca_solver == "authors" and self.pca_sample is not None:
            raise ValueError("the authors' PCA solver fits every pixel, as they did: it cannot be combined "
                             "with a PCA sample")
        if self.pca_fit not in ("city", "source"):
            raise ValueError(f"pca_fit must be 'city' or 'source', got {self.pca_fit!r}")
        if self.normalisation not in ("minmax", "percentile"):
            raise ValueError(f"normalisation must be 'minmax' or 'percentile', got {self.normalisation!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.pca_components < 1:
            raise ValueError("pca_components must be at least 1")
        if self.pca_sample is not None and self.pca_sample < PCA_SAMPLE_MIN:
            raise ValueError(f"pca_sample must be 'all' or at least {PCA_SAMPLE_MIN} pixels, got {self.pca_sample}")
        if self.sample_pixels < 1:
            raise ValueError("sample_pixels must be at least 1")
        if self.band_rows % 3 or self.band_rows < 3:
            raise ValueError("band_rows must be a positive multiple of 3")


@dataclass
class CityReport:
    """What prepare did to one city (one entry of the manifest's ``cities``)."""

    shape: tuple[int, int] | None = None  # scene: H x W; tiles: None
    tiles: int | None = None  # tiles: how many
    tile_sizes: dict[str, int] = field(default_factory=dict)  # tiles: "HxW" -> count
    nonfinite_repaired: dict[str, int] = field(default_factory=dict)
    pca_explained_variance: list[float] = field(default_factory=list)
    pca_fit_pixels: int = 0  # HSI pixels the PCA was fitted on (0: the source city's PCA was applied)
    # per component, where its extreme pixel lies: [row, col] on the HSI grid (tiles: [id, row, col])
    pca_sign_pixels: list = field(default_factory=list)
    # per component, 1 - (largest score of the other sign) / (extreme score): near 0 the sign is fragile
    pca_sign_margins: list[float] = field(default_factory=list)
    # per kept component j, (eigenvalue j - eigenvalue j+1) / eigenvalue j: near 0, j and j+1 are nearly tied
    pca_eigen_gaps: list[float] = field(default_factory=list)
    # the authors' solver only: |cos| of each component with the exact solver's (1: the same direction)
    pca_exact_agreement: list[float] = field(default_factory=list)
    has_label: bool = False


class FitStream:
    """The PCA fit's first pass: every finite pixel (exact moments) or a seeded sample of them."""

    def __init__(self, channels: int, options: PrepareOptions):
        self.options = options
        if options.pca_sample is None:
            self.moments: Moments | None = Moments(channels)
            self.sampler = None
        else:
            self.moments = None
            self.sampler = Sampler(options.pca_sample, np.random.default_rng([options.seed, 11]))

    def add(self, pixels: np.ndarray) -> None:
        """(n, C) pixels in pixel order; rows with a non-finite band are left out of the fit."""
        finite = np.isfinite(pixels).all(axis=1) if pixels.dtype.kind == "f" else None
        if self.sampler is not None:
            self.sampler.add(pixels, finite)
        elif finite is None or finite.all():
            self.moments.add(pixels)
        else:
            self.moments.add(pixels[finite])

    def fit(self) -> PCA:
        k = self.options.pca_components
        return PCA.from_moments(self.sampler.moments() if self.sampler is not None else self.moments, k)


class AuthorsStream:
    """The random stream of the authors' PCA solver for one prepare run: a legacy numpy RandomState
    seeded as their ``main()`` seeds the global one (``np.random.seed(0)``), drawn by each fit in
    their order of cities (the source city first). Nothing else draws from it between the cities,
    as nothing else draws from numpy's global stream between their two PCA calls."""

    def __init__(self, track: str, seed: int):
        self.track = track
        self.rng = np.random.RandomState(seed)

    def dtype(self, native) -> np.dtype:
        """The float type their PCA ran in: AB's HSI cast to float32 by their loader; BW's HSI as the
        file holds it, which scikit-learn keeps if float32 or float64 and turns into float64 otherwise."""
        native = np.dtype(native)
        if self.track == "AB" or native == np.float32:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def fit(self, blocks, channels: int, pixels: int, native, options: PrepareOptions, progress=None,
            per_block=None) -> PCA:
        """The authors' randomized PCA over ``blocks()`` (finite pixel rows, the same every call).

        ``pixels`` (an estimate is fine) sizes the progress bar: ``progress.total`` becomes
        ``per_block`` units per block times the passes the solver makes."""
        tick = None
        if progress is not None:
            progress.total = (progress.total or 0) * authors_passes(pixels, channels, options.pca_components)
            progress.refresh()
            tick = (lambda n: progress.update(per_block(n))) if per_block else progress.update
        return authors_randomized_pca(blocks, options.pca_components, self.dtype(native), self.rng, tick)


def finite_rows(pixels: np.ndarray) -> np.ndarray:
    """The (n, C) rows whose bands are all finite (every row of an integer array)."""
    if pixels.dtype.kind != "f":
        return pixels
    finite = np.isfinite(pixels).all(axis=1)
    return pixels if finite.all() else pixels[finite]


def near_ties(gaps: list[float], threshold: float = NEAR_TIE) -> list[tuple[int, int, float]]:
    """(j, j + 1, gap) for each pair of neighbouring components (1-based) whose eigenvalues are
    within ``threshold`` of each other, the first one kept (the second may be the first left out)."""
    return [(j + 1, j + 2, g) for j, g in enumerate(gaps) if g < threshold]


class BandStats:
    """Per-band normalisation statistics of one modality of one city, streamed.

    min/max over every pixel, or percentiles of a seeded sample; ``finish(signs)`` accounts
    for PCA components whose sign was turned after their values were seen.
    """

    def __init__(self, channels: int, options: PrepareOptions, stream: int):
        self.options, self.stream = options, stream
        self.lo = np.full(channels, np.inf)
        self.hi = np.full(channels, -np.inf)
        self.sampler = (Sampler(options.sample_pixels, np.random.default_rng([options.seed, 23, stream]))
                        if options.normalisation == "percentile" else None)

    def add(self, block: np.ndarray) -> None:
        """A channel-first (C, ...) block of repaired values (contiguous: reductions run along rows)."""
        flat = block.reshape(block.shape[0], -1)
        if not flat.shape[1]:
            return
        self.lo = np.minimum(self.lo, flat.min(axis=1))
        self.hi = np.maximum(self.hi, flat.max(axis=1))
        if self.sampler is not None:
            self.sampler.add(flat.T)

    def finish(self, signs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) float32 per band: the values that normalise to 0 and to 1."""
        s = np.ones(len(self.lo)) if signs is None else np.asarray(signs, np.float64)
        if self.sampler is not None:
            values = self.sampler.values() * s.astype(np.float32)
            lo, hi = np.percentile(values, self.options.percentiles, axis=0)
        else:
            lo = np.where(s < 0, -self.hi, self.lo)
            hi = np.where(s < 0, -self.lo, self.hi)
        lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
        finite = np.isfinite(lo) & np.isfinite(hi)
        if not finite.all():  # values beyond float32 (HSI scores of +-3e38 pixels): every sample would be NaN
            band = int(np.flatnonzero(~finite)[0])
            raise InvalidDataError(f"{MODALITIES[self.stream].upper()} band {band + 1} reaches values beyond float32 "
                                   f"([{lo[band]:g}, {hi[band]:g}]) after repair: declare such pixels nodata "
                                   "(GDAL_NODATA) or mask them before preparing")
        return lo, hi


def flip_channels(ds: h5py.Dataset, signs: np.ndarray, step: int) -> None:
    """Multiply channel j of a (C, H, W) dataset by signs[j] in place, ``step`` rows at a time."""
    flip = np.asarray(signs) < 0
    if not flip.any():
        return
    for r0 in range(0, ds.shape[1], step):
        block = ds[:, r0 : r0 + step, :]
        block[flip] *= -1
        ds[:, r0 : r0 + step, :] = block


def write_pca(f: h5py.File, pca: PCA) -> None:
    """Keep the PCA beside the data: a raw HSI pixel x maps to (x - pca_mean) @ pca_components."""
    f.create_dataset("pca_mean", data=pca.mean)
    f.create_dataset("pca_components", data=pca.components)


def pca_report(pca: PCA, extremes: ExtremeScores, orient: bool) -> dict:
    """The PCA fields of a :class:`CityReport`; a city that applied the source's PCA has no fit of its own."""
    return {"pca_explained_variance": [round(float(v), 6) for v in pca.explained_variance_ratio],
            "pca_fit_pixels": pca.pixels if orient else 0,
            "pca_sign_pixels": extremes.where if orient else [],
            "pca_sign_margins": [round(float(v), 6) for v in extremes.margins()] if orient else [],
            "pca_eigen_gaps": [round(g, 6) for g in pca.eigen_gaps()] if orient else [],
            "pca_exact_agreement": ([round(float(v), 6) for v in pca.exact_agreement]
                                    if orient and pca.exact_agreement is not None else [])}
