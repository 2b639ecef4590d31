"""`c2seg prepare`: scene files or challenge tiles -> the cache that training and prediction read.

Per city, streamed (memory stays flat however large the city; see :mod:`c2seg_kit.prepare.scene_city`
and :mod:`c2seg_kit.prepare.tile_city` for the passes):

1. NaN/inf repair: a non-finite value becomes the mean of its finite 4-neighbours (as the
   reference patches Beijing's SAR), else the band's mean over the block; every repair is counted.
2. HSI PCA to 10 components, fitted per city (the paper) or on the source city
   (``pca_fit="source"``), on every finite pixel (the authors' recipe, default) or on a seeded
   sample (``pca_sample=N``), on the HSI's own grid (BW scenes: 30 m, as the authors do), with
   the authors' sign rule (:mod:`c2seg_kit.prepare.pca`); exactly (default) or with the authors'
   randomized solver and random stream (``pca_solver="authors"``).
3. Per-band normalisation statistics: min/max over the whole city (the paper's default) or
   percentiles of a seeded pixel sample; stored as attributes and applied on read
   (see :mod:`c2seg_kit.prepare.cache`).

The output folder must be new, empty, or a previous prepare output (it holds our manifest; the
CLI replaces one only with --force); anything else is refused, so a user's files are never
overwritten. Everything is written into
a staging folder inside it and moved into place only when every city is done: a failure leaves
the folder as it was.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from c2seg_kit import __version__
from c2seg_kit.errors import DatasetNotFoundError
from c2seg_kit.io.locate import locate_data
from c2seg_kit.io.scene import open_city
from c2seg_kit.io.tiles import SPLITS, open_tiles
from c2seg_kit.outputs import claim_folder, publish, temp_dir_in, write_text
from c2seg_kit.prepare.cache import FORMAT, MANIFEST
from c2seg_kit.prepare.pca import PCA, SIGN_RULE
from c2seg_kit.prepare.repair import repair_nonfinite
from c2seg_kit.prepare.scene_city import fit_scene_pca, prepare_scene_city
from c2seg_kit.prepare.steps import AuthorsStream, CityReport, PrepareOptions
from c2seg_kit.prepare.tile_city import fit_tile_pca, prepare_tile_city
from c2seg_kit.registry import MODALITIES, Track

__all__ = ["PCA", "CityReport", "PrepareOptions", "claim_output_dir", "prepare", "repair_nonfinite"]

STAGING_PREFIX = ".c2seg-prepare-"
#: What the manifest says of each solver.
PCA_SOLVER_TEXT = {
    "exact": "exact: the eigenvectors of the covariance, in float64",
    "authors": ("authors: scikit-learn 1.3's randomized solver as PCA(n_components=k) with svd_solver='auto' "
                "ran it (power iterations normalised by LU, 10 oversamples), its normal draws from "
                "numpy.random.RandomState(seed), the source city first"),
}


def _is_prepare_manifest(path: Path) -> bool:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def claim_output_dir(out: Path, replace: bool = True) -> bool:
    """Check that ``out`` may receive a prepared cache; returns whether it must be created.

    Allowed: a path that does not exist, an empty folder (staging folders of an interrupted
    prepare do not count), or (with ``replace``) a previous prepare output. Anything else is a
    one-line error.
    """
    state = claim_folder(out, verb="prepare", marker=MANIFEST, ours=_is_prepare_manifest, force=replace,
                         ignore=lambda name: name.startswith(STAGING_PREFIX))
    return state == "new"


def _publish(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``: the old manifest goes first and the new one last, so a
    crash in between leaves no manifest pointing at a mix of old and new cities."""
    (out / MANIFEST).unlink(missing_ok=True)
    for path in sorted(staging.iterdir()):
        if path.name != MANIFEST:
            publish(path, out / path.name)
    publish(staging / MANIFEST, out / MANIFEST)


def _authors_stream(track: Track, options: PrepareOptions) -> AuthorsStream | None:
    """One random stream for the whole run, drawn by the source city's fit and then the target's."""
    return AuthorsStream(track.name, options.seed) if options.pca_solver == "authors" else None


def _scene_cities(data_dir: Path, track: Track, staging: Path, options: PrepareOptions, progress: bool) -> dict:
    from tqdm.auto import tqdm

    scenes = [open_city(data_dir, track, city) for city in track.cities]
    reports: dict[str, CityReport] = {}
    authors = _authors_stream(track, options)
    try:
        source_pca: PCA | None = None
        for scene in scenes:
            own = options.pca_fit == "city" or scene is scenes[0]
            if own:
                with tqdm(total=scene.native_shape("hsi")[0], desc=f"PCA {scene.name}", unit="row",
                          disable=not progress, leave=False) as bar:
                    pca = fit_scene_pca(scene, options, bar, authors)
            else:
                pca = source_pca
            with tqdm(total=scene.shape[0], desc=f"prepare {scene.name}", unit="row", disable=not progress,
                      leave=False) as bar:
                reports[scene.name], final = prepare_scene_city(scene, staging / f"{scene.name}.h5", pca, options,
                                                                orient=own, progress=bar)
            source_pca = source_pca or final
            if hasattr(scene, "release"):
                for m in MODALITIES:
                    scene.release(m)
    finally:
        for scene in scenes:
            scene.close()
    return reports


def _tile_cities(path: Path, track: Track, staging: Path, options: PrepareOptions, progress: bool) -> dict:
    from tqdm.auto import tqdm

    reports: dict[str, CityReport] = {}
    authors = _authors_stream(track, options)
    with open_tiles(path, track) as tiles:
        missing = [s for s in SPLITS if s not in tiles.splits]
        if missing:
            raise DatasetNotFoundError(f"no {' or '.join(missing)} split in {path}: prepare needs the train "
                                       f"tiles ({track.source.display}) and the test tiles ({track.target.display})")
        source_pca: PCA | None = None
        for split_name, city in zip(SPLITS, track.cities, strict=True):
            split = tiles.splits[split_name]
            own = options.pca_fit == "city" or city is track.source
            if own:
                with tqdm(total=len(split.ids), desc=f"PCA {city.name}", unit="tile", disable=not progress,
                          leave=False) as bar:
                    pca = fit_tile_pca(split, options, bar, authors)
            else:
                pca = source_pca
            with tqdm(total=len(split.ids), desc=f"prepare {city.name}", unit="tile", disable=not progress,
                      leave=False) as bar:
                reports[city.name], final = prepare_tile_city(split, city.name, staging / f"{city.name}.h5", pca,
                                                              options, orient=own, progress=bar)
            source_pca = source_pca or final
    return reports


def prepare(data_dir: str | Path, track: Track, out_dir: str | Path, options: PrepareOptions = PrepareOptions(),
            progress: bool = True, replace: bool = True) -> dict:
    """Prepare both cities of a track from scene files, a tile folder or the tile zip.

    A previous prepare output in ``out_dir`` is replaced only with ``replace`` (the CLI's --force).
    Returns the manifest (also written as ``manifest.json``).
    """
    out = Path(out_dir)
    where = locate_data(data_dir, track)  # the input is checked before anything is written
    create = claim_output_dir(out, replace)
    if create:
        out.mkdir(parents=True)
    staging = temp_dir_in(out, prefix=STAGING_PREFIX)
    try:
        pipeline = _scene_cities if where.layout == "scene" else _tile_cities
        reports = pipeline(where.path, track, staging, options, progress)
        opts = asdict(options)
        opts["percentiles"] = list(options.percentiles)
        manifest = {
            "format": FORMAT,
            "kit_version": __version__,
            "layout": where.layout,
            "track": track.name,
            "source": track.source.name,
            "target": track.target.name,
            "options": opts,
            "pca": {"fit": "all pixels" if options.pca_sample is None else f"sample of {options.pca_sample} pixels",
                    "solver": PCA_SOLVER_TEXT[options.pca_solver], "sign_rule": SIGN_RULE},
            "cities": {name: asdict(r) for name, r in reports.items()},
        }
        write_text(staging / MANIFEST, json.dumps(manifest, indent=2))
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # only the folder this call created
        if create and not any(out.iterdir()):
            out.rmdir()  # created by this call a moment ago, and empty again
        raise
    staging.rmdir()
    return manifest
