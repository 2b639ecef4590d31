"""`c2seg prepare`: scene files -> the chunked cache that training and prediction read.

Per city, in row bands (memory stays flat however large the city):
1. NaN/inf repair: a non-finite value becomes the mean of its finite 4-neighbours (as the
   reference patches Beijing's SAR), else the band's median; every repair is counted.
2. HSI PCA to 10 components, on the HSI's own grid (BW: 30 m, as the authors do) and then
   brought onto the 10 m grid by nearest upsampling. The PCA is fitted per city (the
   paper) or on the source city (``pca_fit="source"``), from the mean and covariance of a
   seeded pixel sample accumulated band by band: never the whole cube in memory.
3. Per-band normalisation statistics: min/max over the whole city (the paper's default) or
   percentiles of a pixel sample; stored as attributes and applied on read
   (see :mod:`c2seg_kit.prepared`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit import __version__
from c2seg_kit.errors import DatasetNotFoundError, InvalidDataError
from c2seg_kit.io.scene import CityScene, open_city
from c2seg_kit.io.tiles import find_tile_root
from c2seg_kit.prepared import FORMAT, MANIFEST
from c2seg_kit.registry import MODALITIES, Track

CHUNK = 128  # cache chunk edge: one training window spans at most 4 chunks


@dataclass(frozen=True)
class PrepareOptions:
    pca_components: int = 10
    pca_fit: str = "city"  # "city": one PCA per city (paper); "source": the source city's for both
    normalisation: str = "minmax"  # "minmax" (paper) or "percentile"
    percentiles: tuple[float, float] = (1.0, 99.0)
    sample_pixels: int = 200_000
    band_rows: int = 3 * CHUNK  # rows per pass step; a multiple of 3 keeps BW's 30 m rows whole
    seed: int = 0

    def __post_init__(self):
        if self.pca_fit not in ("city", "source"):
            raise ValueError(f"pca_fit must be 'city' or 'source', got {self.pca_fit!r}")
        if self.normalisation not in ("minmax", "percentile"):
            raise ValueError(f"normalisation must be 'minmax' or 'percentile', got {self.normalisation!r}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        if self.pca_components < 1:
            raise ValueError("pca_components must be at least 1")
        if self.band_rows % 3:
            raise ValueError("band_rows must be a multiple of 3")


@dataclass
class PCA:
    """A PCA fitted from streamed sums: mean and the top components of the covariance."""

    mean: np.ndarray
    components: np.ndarray  # (C, k)
    explained_variance_ratio: np.ndarray

    @classmethod
    def from_sums(cls, n: int, s: np.ndarray, ss: np.ndarray, k: int) -> PCA:
        if n < 2:
            raise InvalidDataError("too few finite HSI pixels to fit a PCA")
        mean = s / n
        cov = (ss - n * np.outer(mean, mean)) / (n - 1)
        vals, vecs = np.linalg.eigh(cov)
        order = np.argsort(vals)[::-1][:k]
        vecs = vecs[:, order]
        vecs *= np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])  # fixed signs
        total = max(float(vals.clip(min=0).sum()), 1e-30)
        return cls(mean, vecs, vals[order].clip(min=0) / total)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(..., C) -> (..., k) float32."""
        return ((x - self.mean.astype(np.float32)) @ self.components.astype(np.float32)).astype(np.float32)


@dataclass
class CityReport:
    shape: tuple[int, int]
    nonfinite_repaired: dict[str, int] = field(default_factory=dict)
    pca_explained_variance: list[float] = field(default_factory=list)
    has_label: bool = False


def repair_nonfinite(block: np.ndarray) -> int:
    """Replace non-finite values of an (h, w, C) block in place; returns how many.

    Each becomes the mean of its finite 4-neighbours; where none is finite, the mean of the
    block's finite values in that band (0 if the band has none).
    """
    bad = ~np.isfinite(block)
    n = int(np.count_nonzero(bad))
    if not n:
        return 0
    with warnings.catch_warnings():  # a band with no finite value at all: "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        fallback = np.nan_to_num(np.nanmean(np.where(bad, np.nan, block).reshape(-1, block.shape[-1]), axis=0))
    finite = np.where(bad, 0.0, block).astype(np.float64)
    ok = (~bad).astype(np.float64)
    total = np.zeros_like(finite)
    count = np.zeros_like(ok)
    for axis in (0, 1):
        for shift in (1, -1):
            sl_dst = [slice(None)] * 3
            sl_src = [slice(None)] * 3
            sl_dst[axis] = slice(1, None) if shift == 1 else slice(None, -1)
            sl_src[axis] = slice(None, -1) if shift == 1 else slice(1, None)
            total[tuple(sl_dst)] += finite[tuple(sl_src)]
            count[tuple(sl_dst)] += ok[tuple(sl_src)]
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    fill = np.where(count > 0, mean, np.broadcast_to(fallback, block.shape))
    block[bad] = fill[bad].astype(block.dtype)
    return n


def _bands(n_rows: int, step: int):
    for r0 in range(0, n_rows, step):
        yield r0, min(r0 + step, n_rows)


def _read_rows(scene: CityScene, modality: str, r0: int, r1: int, n_rows: int) -> tuple[np.ndarray, int]:
    """Rows r0..r1 on the modality's own grid with a one-row halo (for repair), as float32."""
    h0, h1 = max(r0 - 1, 0), min(r1 + 1, n_rows)
    return scene.read_native(modality, h0, h1).astype(np.float32), r0 - h0


class Sampler:
    """A seeded sample of pixels of one (h, w, C) stream, at most `limit` in all."""

    def __init__(self, total_pixels: int, limit: int, rng: np.random.Generator):
        self.p = min(1.0, limit / max(total_pixels, 1))
        self.rng = rng
        self.parts: list[np.ndarray] = []

    def add(self, block: np.ndarray) -> None:
        flat = block.reshape(-1, block.shape[-1])
        keep = self.rng.random(flat.shape[0]) < self.p
        self.parts.append(flat[keep].astype(np.float32))

    def values(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.empty((0, 0), np.float32)


def fit_pca(scene: CityScene, options: PrepareOptions, progress=None) -> PCA:
    """Fit the HSI PCA from a seeded sample of finite pixels, accumulated band by band."""
    rows, cols = scene.native_shape("hsi")
    sampler = Sampler(rows * cols, options.sample_pixels, np.random.default_rng([options.seed, 11]))
    step = options.band_rows // scene.factor
    for r0, r1 in _bands(rows, step):
        block = scene.read_native("hsi", r0, r1)
        flat = block.reshape(-1, block.shape[-1])
        sampler.add(flat[np.isfinite(flat).all(axis=1)][:, None, :])
        if progress is not None:
            progress.update(r1 - r0)
    x = sampler.values().astype(np.float64)
    return PCA.from_sums(len(x), x.sum(axis=0), x.T @ x, options.pca_components)


def prepare_city(scene: CityScene, out_path: Path, pca: PCA, options: PrepareOptions, progress=None) -> CityReport:
    """Stream one city into `out_path` (see module docstring); returns what was done."""
    h, w = scene.shape
    report = CityReport(shape=(h, w), has_label=scene.has_label,
                        pca_explained_variance=[round(float(v), 6) for v in pca.explained_variance_ratio])
    channels = {"hsi": pca.components.shape[1], "msi": scene.bands["msi"], "sar": scene.bands["sar"]}
    rng = np.random.default_rng([options.seed, 23])
    samplers = {m: Sampler(h * w, options.sample_pixels, rng) for m in MODALITIES}
    lo = {m: np.full(channels[m], np.inf) for m in MODALITIES}
    hi = {m: np.full(channels[m], -np.inf) for m in MODALITIES}
    counts = dict.fromkeys(MODALITIES, 0)
    tmp_path = out_path.with_suffix(".h5.partial")
    with h5py.File(tmp_path, "w") as f:
        ds = {m: f.create_dataset(m, shape=(channels[m], h, w), dtype=np.float32,
                                  chunks=(channels[m], min(CHUNK, h), min(CHUNK, w))) for m in MODALITIES}
        label_ds = (f.create_dataset("label", shape=(h, w), dtype=np.uint8, chunks=(min(CHUNK, h), min(CHUNK, w)),
                                     compression="gzip", compression_opts=1) if scene.has_label else None)
        for r0, r1 in _bands(h, options.band_rows):
            for m in MODALITIES:
                f_ = scene.factor if m == "hsi" else 1
                nr0, nr1 = r0 // f_, -(-r1 // f_)
                block, off = _read_rows(scene, m, nr0, nr1, scene.native_shape(m)[0])
                # repair on the block with its halo, but count only the band's own rows
                bad_own = int(np.count_nonzero(~np.isfinite(block[off : off + nr1 - nr0])))
                repair_nonfinite(block)
                counts[m] += bad_own
                block = block[off : off + nr1 - nr0]
                if m == "hsi":
                    block = pca.transform(block)
                    if f_ > 1:  # 30 m -> 10 m: nearest upsampling, cropped to the band
                        block = block.repeat(f_, axis=0).repeat(f_, axis=1)
                        block = block[r0 - nr0 * f_ : r1 - nr0 * f_, :w]
                lo[m] = np.minimum(lo[m], block.min(axis=(0, 1)))
                hi[m] = np.maximum(hi[m], block.max(axis=(0, 1)))
                samplers[m].add(block)
                ds[m][:, r0:r1, :] = block.transpose(2, 0, 1)
            if label_ds is not None:
                label_ds[r0:r1] = scene.read_label(r0, r1, 0, w)
            if progress is not None:
                progress.update(r1 - r0)
        for m in MODALITIES:
            if options.normalisation == "percentile":
                values = samplers[m].values()
                lo_m, hi_m = np.percentile(values, options.percentiles, axis=0)
            else:
                lo_m, hi_m = lo[m], hi[m]
            ds[m].attrs["norm_lo"] = np.asarray(lo_m, np.float32)
            ds[m].attrs["norm_hi"] = np.asarray(hi_m, np.float32)
            ds[m].attrs["normalisation"] = options.normalisation
        f.attrs["city"] = scene.name
    tmp_path.replace(out_path)  # a crash never leaves a half-written cache behind
    report.nonfinite_repaired = counts
    return report


def prepare(data_dir: str | Path, track: Track, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
            progress: bool = True) -> dict:
    """Prepare both cities of a track; returns the manifest (also written as manifest.json)."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetNotFoundError(f"data folder {data_dir} does not exist")
    if not (data_dir / track.source.scene_file).is_file() and find_tile_root(data_dir, track) is not None:
        raise DatasetNotFoundError(
            f"{data_dir} holds challenge tiles; prepare reads the scene files ({track.source.scene_file}, "
            f"{track.target.scene_file}). `c2seg info` describes tiles."
        )
    scenes = [open_city(data_dir, track, city) for city in track.cities]
    try:
        out.mkdir(parents=True, exist_ok=True)
        pcas: dict[str, PCA] = {}
        for scene in scenes:
            if options.pca_fit == "source" and scene is not scenes[0]:
                pcas[scene.name] = pcas[scenes[0].name]
                continue
            rows = scene.native_shape("hsi")[0]
            with tqdm(total=rows, desc=f"PCA {scene.name}", unit="row", disable=not progress, leave=False) as bar:
                pcas[scene.name] = fit_pca(scene, options, bar)
        reports = {}
        for scene in scenes:
            with tqdm(total=scene.shape[0], desc=f"prepare {scene.name}", unit="row", disable=not progress,
                      leave=False) as bar:
                reports[scene.name] = prepare_city(scene, out / f"{scene.name}.h5", pcas[scene.name], options, bar)
            if hasattr(scene, "release"):
                for m in MODALITIES:
                    scene.release(m)
    finally:
        for scene in scenes:
            scene.close()
    opts = asdict(options)
    opts["percentiles"] = list(options.percentiles)
    manifest = {
        "format": FORMAT,
        "kit_version": __version__,
        "track": track.name,
        "source": track.source.name,
        "target": track.target.name,
        "options": opts,
        "cities": {name: asdict(r) for name, r in reports.items()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
