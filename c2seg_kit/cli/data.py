"""Data verbs: `c2seg synth`, `c2seg info`, `c2seg prepare`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from c2seg_kit.classes import CLASSES
from c2seg_kit.cli.options import progress_option, track_option
from c2seg_kit.registry import get_track

TRACK = track_option(param="track_name")


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@TRACK
@click.option("--layout", type=click.Choice(["scene", "tiles"]), default="scene", show_default=True,
              help="scene: the RSE scene files; tiles: the WHISPERS challenge's GeoTIFF tiles (C2Seg_XX/).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True, max=4), default=0.1, show_default=True,
              help="City sizes = nominal sizes x SCALE (1 = real size: several GB for BW). Tiles keep their "
                   "size (AB 128 px, BW 256 px) but never exceed half the city's shorter side, so small "
                   "scales still give at least a 2 x 2 grid of smaller tiles.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed: the same seed writes the same files.")
@progress_option
def synth(out_dir: Path, track_name: str, layout: str, scale: float, seed: int, progress: bool) -> None:
    """Write a synthetic C2Seg-like city pair into OUT_DIR.

    --layout scene (default): exactly the real scene-file layout (AB: MATLAB v5; BW: MATLAB
    v7.3 with reversed axes and HSI at 1/3 resolution), so every other verb reads them like
    real data. Also writes labels.h5, the target city's hidden labels in the organizers' format.

    --layout tiles: the same cities cut into the challenge's tiles, OUT_DIR/C2Seg_XX/{train,test}/
    {hsi,msi,sar,label}/<id>.tiff (BW's train HSI in train/hsi/hsi/), pixel-interleaved
    georeferenced GeoTIFFs as GDAL writes them, ids 1, 2, ... in row-major order; the test split
    has no labels: they go to OUT_DIR/labels.h5 in the tile layout. Refuses to overwrite either.
    """
    track = get_track(track_name)
    if layout == "tiles":
        from c2seg_kit.synth.tile_sets import synthesize_tiles

        written = synthesize_tiles(out_dir, track, scale=scale, seed=seed, progress=progress)
    else:
        from c2seg_kit.synth.scenes import synthesize

        written = synthesize(out_dir, track, scale=scale, seed=seed, progress=progress)
    for role, path in written.items():
        click.echo(f"{role:>14}: {path}")


def _format_modalities(entry: dict) -> list[str]:
    lines = []
    for m, s in entry["modalities"].items():
        rng = f"[{s['min']:.4g}, {s['max']:.4g}]" if s["min"] is not None else "[]"
        nodata = (f"  nodata {s['nodata_pixels']} (value {', '.join(f'{v:g}' for v in s['nodata'])})"
                  if s.get("nodata") else "")
        lines.append(f"  {m.upper():4} {s['bands']:>4} bands  {s['dtype']:8} range {rng}  NaN {s['nan']}  "
                     f"inf {s['inf']}{nodata}")
        expected = s.get("expected_bands")
        if expected is not None and s["bands"] is not None and s["bands"] != expected:
            lines.append(f"       {s['bands']} of the track's {expected} {m.upper()} bands (a subset)")
        if s.get("outlier_bands"):
            shown = ", ".join(str(b + 1) for b in s["outlier_bands"][:10]) + (", ..." if len(s["outlier_bands"]) > 10 else "")
            lines.append(f"       {len(s['outlier_bands'])} band(s) with a range dominated by a few outliers (band "
                         f"{shown}): min-max scaling squeezes the other pixels together; declare them nodata")
    return lines


def _format_labels(hist: list[int] | None) -> list[str]:
    if hist is None:
        return ["  label: none"]
    total = sum(hist)
    lines = [f"  label: {total} pixels, {hist[0]} unlabelled ({100 * hist[0] / max(total, 1):.1f}%)"]
    for c, n in zip(CLASSES[1:], hist[1:], strict=True):
        lines.append(f"    {c.id:2d} {c.display:38} {n:>12} {100 * n / max(total, 1):6.2f}%")
    return lines


def _format_archive(archive: dict) -> str:
    """The archive's line; a mismatch is not repeated here, `info` warns of it once on stderr."""
    if "match" not in archive:
        return f"archive {archive['path']}"
    return f"archive {archive['path']}: MD5 {archive['md5']}" + (" matches" if archive["match"] else "")


def _format_info(info: dict) -> str:
    lines = []
    for name, entry in info.items():
        if name == "archive":
            lines.append(_format_archive(entry))
            continue
        if entry["layout"] == "tiles":
            sizes = ", ".join(f"{n} of {size}" for size, n in entry["tile_sizes"].items())
            lines.append(f"{name}: {entry['city']} ({entry['role']}, tiles): {entry['tiles']} tiles ({sizes})")
            geo = entry["georef"]
            if geo is None:
                lines.append("  georeferencing: none")
            else:
                crs = ", ".join(f"EPSG:{c}" for c in geo["epsg"]) or "no EPSG code"
                px = ", ".join(f"{x:g} x {y:g}" for x, y in geo["pixel_size"]) or "?"
                lines.append(f"  georeferencing: {crs}, pixel {px}, on {geo['tiles']} of {entry['tiles']} tiles")
        else:
            shape = "x".join(map(str, entry["shape"]))
            extra = f", HSI grid 1/{entry['hsi_grid_factor']}" if entry.get("hsi_grid_factor", 1) > 1 else ""
            lines.append(f"{name} ({entry['role']}, {entry['format']}): {shape}{extra}")
        lines += _format_modalities(entry)
        lines += _format_labels(entry["label_histogram"])
    return "\n".join(lines)


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@TRACK
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@progress_option
def info(data_dir: Path, track_name: str, as_json: bool, progress: bool) -> None:
    """Describe the C2Seg data in DATA_DIR, city by city (or the prepared cache DATA_DIR).

    Reads scene files (MATLAB v5 / v7.3), a folder of challenge GeoTIFF tiles, or the tile zip
    as distributed (C2Seg_AB.zip, C2Seg_BW.zip: every member checked first, the MD5 compared
    with the distributed one; a re-zipped copy only warns; inner zips are read in place when
    stored, else decompressed once into a new temporary folder under TMPDIR and removed
    afterwards). A folder unzipped from it may keep BW's train/<m>.zip unopened: they are read
    in place. Reports shape (tiles: count and
    sizes), bands per modality, dtype, value range, NaN/inf counts, georeferencing and the label
    histogram, streaming over every pixel. Tiles also: pixels their GDAL nodata value marks
    (counted apart; every reader treats them as missing), an HSI band subset, and bands whose
    range a few outliers dominate. A tile whose header does not fit the track (band counts, at
    most twice the track's tile side) is refused before its pixels are read.

    A prepared cache (a folder `c2seg prepare` wrote) is described from its manifest instead:
    how it was prepared, and per city the PCA report, with a note where neighbouring components
    are nearly tied (two PCA solvers would give other directions there).
    """
    from c2seg_kit.info import data_info
    from c2seg_kit.prepare.cache import FORMAT, MANIFEST

    manifest = _read_manifest(data_dir / MANIFEST) if data_dir.is_dir() else None
    if manifest is not None and manifest.get("format") == FORMAT:
        if manifest.get("track") != track_name:
            raise click.ClickException(f"{data_dir} is prepared for track {manifest.get('track')}, not {track_name}")
        try:
            text = json.dumps(manifest, indent=2) if as_json else _prepared_info(data_dir, manifest)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise click.ClickException(f"{data_dir / MANIFEST} is not a manifest `c2seg prepare` wrote") from None
        click.echo(text)
        return
    result = data_info(data_dir, get_track(track_name), progress=progress)
    archive = result.get("archive", {})
    if archive.get("match") is False:
        click.echo(f"warning: {archive['name']} has MD5 {archive['md5']}, the distributed archive "
                   f"{archive['expected_md5']}; a re-zipped copy is fine, a damaged download is not", err=True)
    click.echo(json.dumps(result, indent=2) if as_json else _format_info(result))


def _read_manifest(path: Path) -> dict | None:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


#: A sign margin below this is reported: the authors' solver could have turned such a component either way.
FRAGILE_SIGN = 1e-3


class PixelCount(click.ParamType):
    """``all`` (None) or a whole number of pixels, at least ``minimum``."""

    name = "N|all"

    def __init__(self, minimum: int):
        self.minimum = minimum

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int):
            return value
        if str(value).strip().lower() == "all":
            return None
        try:
            n = int(str(value).replace("_", ""))
        except ValueError:
            self.fail(f"expected 'all' or a number of pixels, got {value!r}", param, ctx)
        if n < self.minimum:
            self.fail(f"a sample needs at least {self.minimum} pixels, got {n}", param, ctx)
        return n


def _report_line(name: str, city: dict) -> str:
    repaired = ", ".join(f"{m.upper()} {n}" for m, n in city["nonfinite_repaired"].items())
    kept = sum(city["pca_explained_variance"])
    if city.get("tiles") is not None:
        sizes = ", ".join(f"{n} of {size}" for size, n in city["tile_sizes"].items())
        what = f"{city['tiles']} tiles ({sizes})"
    else:
        what = f"{city['shape'][0]}x{city['shape'][1]}"
    return (f"{name}: {what}, non-finite repaired: {repaired}; PCA keeps {100 * kept:.1f}% of HSI variance; "
            f"labels: {'yes' if city['has_label'] else 'no'}")


@click.command()
@click.argument("data_dir", type=click.Path(path_type=Path))
@TRACK
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              metavar="PREPARED_DIR", help="Folder for the prepared cache (manifest.json + one HDF5 file per city): new, empty, or "
                   "(with --force) a previous prepare output to replace (anything else is refused).")
@click.option("--force", is_flag=True, help="Replace the prepared cache already in --out.")
@click.option("--pca-fit", type=click.Choice(["city", "source"]), default="city", show_default=True,
              help="Fit the HSI PCA per city (the paper) or on the source city and apply it to both.")
@click.option("--pca-components", type=click.IntRange(1, 64), default=10, show_default=True,
              help="HSI principal components kept (the paper: 10).")
@click.option("--pca-sample", type=PixelCount(1000), default="all", show_default=True,
              help="Pixels the PCA is fitted on: all (exact, the authors' recipe) or a seeded sample of N "
                   "(faster). Either way each component's sign follows the authors' rule.")
@click.option("--pca-solver", type=click.Choice(["exact", "authors"]), default="exact", show_default=True,
              help="exact: the covariance's eigenvectors (for new training). authors: the randomized solver "
                   "the authors' scikit-learn call ran, with their random stream (--seed, the source city "
                   "first): the channels their checkpoints were trained on. Every pixel; slower (17 passes).")
@click.option("--normalise", "normalisation", type=click.Choice(["minmax", "percentile"]), default="minmax",
              show_default=True, help="Per-band scaling: min-max per city (the paper) or percentile-clipped.")
@click.option("--percentiles", type=(float, float), default=(1.0, 99.0), show_default=True,
              help="Low and high percentiles for --normalise percentile.")
@click.option("--sample-pixels", type=click.IntRange(1000), default=200_000, show_default=True,
              help="Pixels sampled per city and modality for --normalise percentile (the PCA sample is "
                   "--pca-sample).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the pixel samples and of --pca-solver authors (theirs: 0): the same seed writes "
                   "the same cache.")
@progress_option
def prepare(data_dir: Path, track_name: str, out_dir: Path, pca_fit: str, pca_components: int,
            pca_sample: int | None, pca_solver: str, normalisation: str, percentiles: tuple[float, float],
            sample_pixels: int, seed: int, force: bool, progress: bool) -> None:
    """Turn the data in DATA_DIR into the cache that training and prediction read.

    DATA_DIR holds the scene files, the challenge tiles (C2Seg_XX/ or a folder above it), or
    is the tile zip itself (checked member by member first). Repairs NaN/inf (counted and
    reported; tiles: within each tile), reduces the HSI to PCA components with the authors'
    sign rule (exactly, or with --pca-solver authors by the randomized solver their call ran), records per-band normalisation per city (tiles: fitted over all the city's
    tiles; overlapping edge tiles count once per tile), and writes HDF5 read window by window.
    Memory stays flat: scenes are streamed in row bands, tiles one at a time.
    """
    from c2seg_kit.prepare.pipeline import PrepareOptions
    from c2seg_kit.prepare.pipeline import prepare as run_prepare

    try:
        options = PrepareOptions(pca_components=pca_components, pca_fit=pca_fit, pca_sample=pca_sample,
                                 pca_solver=pca_solver, normalisation=normalisation, percentiles=percentiles, sample_pixels=sample_pixels,
                                 seed=seed)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    manifest = run_prepare(data_dir, get_track(track_name), out_dir, options, progress=progress, replace=force)
    for name, city in manifest["cities"].items():
        click.echo(_report_line(name, city))
        for note in _pca_notes(city):
            click.echo(f"  note: {note}")
    click.echo(f"prepared cache ({manifest['layout']}): {out_dir}")


def _pca_notes(city: dict) -> list[str]:
    """What a city's PCA report warns about: fragile signs, nearly tied components."""
    from c2seg_kit.prepare.steps import NEAR_TIE, near_ties

    notes = []
    fragile = [j + 1 for j, m in enumerate(city.get("pca_sign_margins") or []) if m < FRAGILE_SIGN]
    if fragile:
        notes.append(f"the sign of PCA component(s) {', '.join(map(str, fragile))} rests on a near tie between "
                     "the largest positive and negative scores (see pca_sign_margins in the manifest)")
    for a, b, gap in near_ties(city.get("pca_eigen_gaps") or []):
        left = " (the first one left out)" if b > len(city["pca_eigen_gaps"]) else ""
        notes.append(f"PCA components {a} and {b}{left} are nearly tied (eigenvalues {100 * gap:.2f} % apart, "
                     f"under {100 * NEAR_TIE:g} %): two solvers (exact, the authors' randomized one) give other "
                     "directions there, so a checkpoint trained on one sees other channels under the other "
                     "(see pca_eigen_gaps in the manifest)")
    return notes


def _prepared_info(folder: Path, manifest: dict) -> str:
    """`c2seg info` on a prepared cache: how it was prepared, and per city the PCA report and notes."""
    options = manifest.get("options") or {}
    pca = manifest.get("pca") or {}
    lines = [f"prepared cache ({manifest.get('layout', 'scene')}, track {manifest.get('track')}): {folder}",
             f"  PCA: {options.get('pca_components')} components fitted per {options.get('pca_fit')} on "
             f"{pca.get('fit', '?')}; solver {options.get('pca_solver', 'exact')}; "
             f"normalisation {options.get('normalisation')}"]
    for name, city in (manifest.get("cities") or {}).items():
        lines.append(_report_line(name, city))
        lines += [f"  note: {note}" for note in _pca_notes(city)]
    return "\n".join(lines)


@click.command()
@click.argument("prepared_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["mmseg"]), required=True,
              help="The training framework to write for: mmseg (mmsegmentation 1.x).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new or empty folder for the dataset.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of the source city's images held out for validation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the held-out draw.")
@progress_option
def export(prepared_dir: Path, fmt: str, out: Path, val_fraction: float, seed: int, progress: bool) -> None:
    """Write a prepared cache (PREPARED_DIR, from `c2seg prepare`) as a dataset another framework trains on.

    mmseg: float32 GeoTIFF images with the kit's preprocessing (HSI components, MSI, SAR stacked
    in the order of OUT/bands.txt; per tile for tile caches, fixed windows of the track's tile
    side for scene caches), PNG annotations as the kit has them (0 = unlabelled, 1..13; use
    reduce_zero_label=True), split files (train and val from the source city, test = the target
    city without annotations) and the dataset-config snippet printed here (also in
    OUT/mmseg_dataset.py). mmseg's 0-based test predictions go back through
    `c2seg pack PRED_DIR --add-one`. Example:

    \b
        c2seg export --format mmseg prepared/ --out mmseg_c2seg/
    """
    from tqdm.auto import tqdm

    from c2seg_kit.export_mmseg import export_mmseg

    with tqdm(desc="export", unit="image", disable=not progress, leave=False, delay=0.5) as bar:
        done = export_mmseg(prepared_dir, out, val_fraction=val_fraction, seed=seed, progress=bar.update)
    click.echo(done.snippet, nl=False)
    counts = ", ".join(f"{split} {n}" for split, n in done.counts.items())
    click.echo(f"# wrote {out}: {fmt} dataset ({done.layout} cache), {len(done.bands)} bands, images: {counts}")
