"""Oracles for the prepare tests: the authors' PCA written out, and spectra with a known structure.

`authors_pca` is scikit-learn 1.3's ``PCA(n_components=k).fit(X)`` up to solver precision,
written out with numpy instead of calling whichever scikit-learn is installed (releases from
1.5 flip signs by the loadings instead): an SVD of the centred matrix, then that release's
``svd_flip(U, Vt)`` with ``u_based_decision=True``: for each component, the row of U with the
largest absolute value (the first one on ties, as ``np.argmax``) is made positive.
"""

from __future__ import annotations

import numpy as np


def authors_pca(pixels: np.ndarray, k: int) -> np.ndarray:
    """(n, C) pixels in the authors' order -> (k, C) components, oriented by the 1.3 rule."""
    x = np.asarray(pixels, dtype=np.float64)
    u, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    rows = np.argmax(np.abs(u), axis=0)
    signs = np.sign(u[rows, np.arange(u.shape[1])])
    return (vt * signs[:, None])[:k]


def loading_rule_disagreements(components: np.ndarray) -> int:
    """How many of these (k, C) components the current scikit-learn rule (largest absolute loading
    positive) would turn the other way: the tests use it to show they can tell the rules apart."""
    cols = np.argmax(np.abs(components), axis=1)
    return int(np.sum(components[np.arange(len(components)), cols] < 0))


def minmax_channels(projected: np.ndarray) -> np.ndarray:
    """Per-channel min-max of (..., k) values over everything but the last axis, in float64."""
    flat = projected.reshape(-1, projected.shape[-1])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    return (projected - lo) / (hi - lo)


def structured_spectra(rng: np.random.Generator, n: int, bands: int, latent: int = 12, ratio: float = 4.0,
                       offset: float = 2000.0, scale: float = 1000.0) -> np.ndarray:
    """(n, bands) spectra whose covariance has well separated eigenvalues (each ``ratio`` times the
    next), so the principal axes are well defined and a fit can be compared to float tolerance.

    The latent factors are skewed (centred gamma, each with a random direction), as reflectance
    is: a component's extreme pixel then lies clearly in one tail. With symmetric factors the
    largest positive and negative scores nearly tie, and the sign rule itself becomes fragile.
    """
    basis, _ = np.linalg.qr(rng.normal(size=(bands, latent)))
    std = scale * ratio ** (-np.arange(latent) / 2)
    skew = (rng.gamma(2.0, size=(n, latent)) - 2.0) / np.sqrt(2.0) * rng.choice([-1.0, 1.0], size=latent)
    return offset + (skew * std) @ basis.T + rng.normal(size=(n, bands)) * 1e-3
