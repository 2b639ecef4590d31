"""`c2seg prepare` on scene files: one city streamed in row bands into ``<city>.h5``.

1. The PCA fit (:func:`fit_scene_pca`): one pass over the HSI on its own grid (BW: 30 m, as the
   authors fit it), every finite pixel into float64 moments or a seeded sample of them. Every
   30 m cell of the rows that cover the 10 m grid counts, Beijing's extra column included as
   the authors include it (a 30 m row entirely below the 10 m grid, which no real file has,
   would be left out).
2. The write pass (:func:`prepare_scene_city`): per row band, NaN/inf repair (with a one-row
   halo, counted on the band's own rows), the HSI projected on the city's own grid and brought
   to the 10 m grid by nearest upsampling, per-band statistics, the chunked datasets. Meanwhile
   every HSI pixel's scores are watched for the authors' sign rule.
3. The sign pass: components whose extreme pixel scored negative are negated in place in the
   written HSI (and in the statistics), so the cache holds the authors' channels. (The authors'
   randomized solver, ``pca_solver="authors"``, fixes the signs in its fit by its own U, as
   scikit-learn does: no sign pass.)
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.io.scene import CityScene
from c2seg_kit.prepare.pca import PCA, ExtremeScores
from c2seg_kit.prepare.repair import repair_nonfinite
from c2seg_kit.prepare.steps import (
    CHUNK,
    AuthorsStream,
    BandStats,
    CityReport,
    FitStream,
    PrepareOptions,
    finite_rows,
    flip_channels,
    pca_report,
    write_pca,
)
from c2seg_kit.registry import MODALITIES


def _bands(n_rows: int, step: int):
    for r0 in range(0, n_rows, step):
        yield r0, min(r0 + step, n_rows)


def _read_rows(scene: CityScene, modality: str, r0: int, r1: int, n_rows: int) -> tuple[np.ndarray, int]:
    """Rows r0..r1 on the modality's own grid with a one-row halo (for repair), as float32."""
    h0, h1 = max(r0 - 1, 0), min(r1 + 1, n_rows)
    return scene.read_native(modality, h0, h1).astype(np.float32), r0 - h0


def fit_scene_pca(scene: CityScene, options: PrepareOptions, progress=None, authors: AuthorsStream | None = None) -> PCA:
    """The HSI PCA of one city (provisional signs), from every finite pixel or a seeded sample;
    with ``authors``, the authors' randomized solver over every finite pixel (one pass per product
    with the HSI; a MATLAB v5 HSI is read once and kept, a v7.3 one is read on every pass)."""
    rows, width = scene.native_shape("hsi")
    step = options.band_rows // scene.factor
    if authors is not None:
        def blocks():
            for r0, r1 in _bands(rows, step):
                block = scene.read_native("hsi", r0, r1)
                yield finite_rows(block.reshape(-1, block.shape[-1]))

        return authors.fit(blocks, scene.bands["hsi"], rows * width, scene.dtypes.get("hsi", np.float64), options,
                           progress, per_block=lambda n: max(n // max(width, 1), 1))
    stream = FitStream(scene.bands["hsi"], options)
    for r0, r1 in _bands(rows, step):
        block = scene.read_native("hsi", r0, r1)
        stream.add(block.reshape(-1, block.shape[-1]))
        if progress is not None:
            progress.update(r1 - r0)
    return stream.fit()


def prepare_scene_city(scene: CityScene, out_path: Path, pca: PCA, options: PrepareOptions, *, orient: bool = True,
                       progress=None) -> tuple[CityReport, PCA]:
    """Write one city to ``out_path``; returns the report and the PCA with its final signs.

    ``orient``: this city's pixels decide the component signs (its own PCA); False applies
    ``pca`` as it is (the source city's, already oriented).
    """
    h, w = scene.shape
    k = pca.components.shape[1]
    channels = {"hsi": k, "msi": scene.bands["msi"], "sar": scene.bands["sar"]}
    stats = {m: BandStats(channels[m], options, i) for i, m in enumerate(MODALITIES)}
    counts = dict.fromkeys(MODALITIES, 0)
    extremes = ExtremeScores(k)
    with h5py.File(out_path, "w") as f:
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
                counts[m] += int(np.count_nonzero(~np.isfinite(block[off : off + nr1 - nr0])))
                repair_nonfinite(block)
                block = block[off : off + nr1 - nr0]
                if m == "hsi":
                    scores = pca.scores(block.reshape(-1, block.shape[-1]))
                    if orient:  # every pixel of the HSI grid, the extra 30 m cells included (as the authors)
                        extremes.update(scores, block.shape[1], row0=nr0)
                    chw = scores.astype(np.float32).reshape(k, *block.shape[:2])
                    if f_ > 1:  # 30 m -> 10 m: nearest upsampling, cropped to the band
                        chw = chw.repeat(f_, axis=1).repeat(f_, axis=2)
                        chw = np.ascontiguousarray(chw[:, r0 - nr0 * f_ : r1 - nr0 * f_, :w])
                else:
                    chw = np.ascontiguousarray(block.transpose(2, 0, 1))
                stats[m].add(chw)
                ds[m][:, r0:r1, :] = chw
            if label_ds is not None:
                label_ds[r0:r1] = scene.read_label(r0, r1, 0, w)
            if progress is not None:
                progress.update(r1 - r0)
        signs = extremes.signs() if orient and not pca.signed else np.ones(k)
        flip_channels(ds["hsi"], signs, options.band_rows)
        for m in MODALITIES:
            lo, hi = stats[m].finish(signs if m == "hsi" else None)
            ds[m].attrs["norm_lo"], ds[m].attrs["norm_hi"] = lo, hi
            ds[m].attrs["normalisation"] = options.normalisation
        final = pca.oriented(signs)
        write_pca(f, final)
        f.attrs["city"] = scene.name
    report = CityReport(shape=(h, w), has_label=scene.has_label, nonfinite_repaired=counts,
                        **pca_report(pca, extremes, orient))
    return report, final
