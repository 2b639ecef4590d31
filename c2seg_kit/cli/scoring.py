"""`c2seg validate`, `c2seg score`, `c2seg render`: offline checks and scores of a submission.

All three open files through the safe reader (c2seg_kit.submission); a refused file is a user
mistake: one line on stderr, exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from c2seg_kit.classes import EVAL_CLASSES, zero_prediction_refusal
from c2seg_kit.cli.options import MISSING_SCORE, format_score, track_option
from c2seg_kit.errors import InvalidSubmissionError
from c2seg_kit.outputs import claim_file

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("predictions", type=_FILE)
@track_option(required=False, help="Require the submission to be for this track.")
@click.option("--labels", type=_FILE,
              help="Hidden labels (labels.h5): also require the track, the layout and the exact shape (tiles: "
                   "ids and shapes) they have.")
def validate(predictions: Path, track: str | None, labels: Path | None) -> None:
    """Check that PREDICTIONS is a valid submission file; exit 0 if so.

    Checks the file structure, links, storage, track, dtype and shape (the labels' shape with
    --labels, else a size bound from the track), then every value (0..13). Tile-layout files
    (one raster per test tile) are checked tile by tile; with --labels they must hold exactly
    the labels' tile ids, each of its label tile's shape; a 0 in a tile (no class, scored wrong
    wherever a pixel is labelled) is refused too. On failure prints one line saying why
    and exits 1.
    """
    from c2seg_kit.submission.formats import LAYOUT_TILES
    from c2seg_kit.submission.readers import open_labels, open_submission

    expected: dict = {}
    if labels is not None:
        with open_labels(labels) as lab:
            if track is not None and lab.track != track:
                raise click.UsageError(f"--track {track} contradicts the labels file (track {lab.track})")
            track, expected = lab.track, lab.expectation()
    with open_submission(predictions, track=track, **expected) as sub:
        zeros = sub.check_values()
        if zeros and sub.layout == LAYOUT_TILES:
            raise InvalidSubmissionError(zero_prediction_refusal(predictions.name, zeros))
        kind = "tile submission" if sub.layout == LAYOUT_TILES else "submission"
        click.echo(f"OK: {predictions.name} is a valid {sub.track} {kind} ({sub.describe()})")


def _table(result: dict) -> str:
    fmt = format_score
    tiles = f"   tiles {result['n_tiles']:,}" if "n_tiles" in result else ""
    lines = [
        f"track {result['track']}{tiles}   evaluated pixels {result['n_pixels']:,}",
        f"  OA     {fmt(result['oa'])}",
        f"  mIoU   {fmt(result['miou'])}",
        f"  F1     {fmt(result['f1'])}   (macro)",
        f"  kappa  {fmt(result['kappa'])}",
        "",
        f"  {'id':>2}  {'class':<38} {'IoU':>7}",
    ]
    for c in EVAL_CLASSES:
        iou = result["per_class_iou"][c.name]
        lines.append(f"  {c.id:>2}  {c.display:<38} {fmt(iou):>7}")
    lines.append(f"  ({MISSING_SCORE}: class absent from both labels and predictions, left out of the means)")
    return "\n".join(lines)


@click.command()
@click.argument("predictions", type=_FILE)
@click.option("--labels", type=_FILE, required=True, help="Hidden labels file (labels.h5) of the target city.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object instead of the table.")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path),
              help="Also write scores.json, per_class.csv, confusion_matrix.csv and confusion_matrix.png here.")
@click.option("--force", is_flag=True, help="Replace report files that exist; without it they are left alone.")
def score(predictions: Path, labels: Path, as_json: bool, report: Path | None, force: bool) -> None:
    """Score PREDICTIONS against LABELS: OA, mIoU, per-class IoU, macro F1, Cohen's kappa.

    Pixels labelled 0 are ignored; a predicted 0 counts as wrong. A class absent from both
    labels and predictions has no IoU (n/a / null) and is left out of the means.

    Tile-layout labels take a tile-layout submission holding exactly their tile ids: one
    confusion matrix over all tiles' pixels, each tile counted once, so a pixel where tiles
    overlap counts once per tile it lies in (as the challenge scored tiles); --json then adds
    "layout": "tiles" and "n_tiles".
    """
    from c2seg_kit.submission.score_files import REPORT_FILES, score_files, write_report

    if report is not None:
        for name in REPORT_FILES:
            claim_file(report / name, force=force, inputs=(predictions, labels))
    result = score_files(predictions, labels)
    if report is not None:
        write_report(result, report)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(_table(result))
        if report is not None:
            click.echo(f"report written to {report}")


@click.command()
@click.argument("file", type=_FILE)
@click.option("--out", type=_FILE, required=True, help="PNG file to write (a new file unless --force).")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never FILE or the --like tiles).")
@click.option("--max-side", type=click.IntRange(16, 20000), default=2048, show_default=True,
              help="Longest side of the map in pixels; larger rasters keep every k-th pixel.")
@click.option("--legend/--no-legend", default=True, show_default=True, help="Draw the class legend.")
@click.option("--title", show_default="the file name and track", help="Title above the map.")
@click.option("--like", "like", type=click.Path(path_type=Path),
              help="Tile files only: the test tiles (C2Seg_XX folder, its zip, or the test folder); draw a "
                   "mosaic placed by their georeferencing instead of a contact sheet.")
def render(file: Path, out: Path, max_side: int, legend: bool, title: str | None, like: Path | None,
           force: bool) -> None:
    """Draw FILE (a submission or a labels.h5) as a PNG in the official class colours.

    A file of tiles is drawn as a contact sheet: the tiles in id order, row by row in a grid,
    grey between them. With --like TEST_DIR it is drawn as a mosaic of the scene instead, each
    tile where its test tile's georeferencing puts it; where tiles overlap, the tile with the
    later id is drawn over the earlier ones, and ground no tile covers is grey.
    """
    from c2seg_kit.submission.formats import LAYOUT_TILES
    from c2seg_kit.submission.readers import open_class_raster

    claim_file(out, force=force, inputs=(file, like))
    with open_class_raster(file) as raster:
        if raster.layout != LAYOUT_TILES:
            if like is not None:
                raise click.UsageError("--like is for files of tiles; this file holds one raster of the scene")
            h, w = raster.shape
            title = title if title is not None else f"{file.name}  ({raster.track}, {h} x {w})"
            from c2seg_kit.render import render_rows_png

            render_rows_png(raster.shape, raster.iter_rows(), out, legend=legend, title=title, max_side=max_side)
            click.echo(f"wrote {out}")
            return
        title = title if title is not None else f"{file.name}  ({raster.track}, {len(raster.ids)} tiles)"
        options = {"legend": legend, "title": title, "max_side": max_side}
        if like is None:
            from c2seg_kit.render import render_sheet_png

            render_sheet_png(raster.shapes, raster.iter_tiles(), out, **options)
            click.echo(f"wrote {out} (contact sheet of {len(raster.ids)} tiles in id order)")
            return
        shape, placements = _placements(raster, like)
        from c2seg_kit.render import render_mosaic_png

        render_mosaic_png(shape, placements, raster.iter_tiles(), out, **options)
        click.echo(f"wrote {out} (mosaic of {len(raster.ids)} tiles, {shape[0]} x {shape[1]} px; where tiles "
                   "overlap, later ids are drawn over earlier ones)")


def _placements(raster, like: Path) -> tuple[tuple[int, int], dict[str, tuple[int, int]]]:
    """Each tile's place in the scene, from the test tile of the same id (same shape required)."""
    from c2seg_kit.io.tiles import open_test_split
    from c2seg_kit.mosaic import tile_placements
    from c2seg_kit.registry import get_track

    with open_test_split(like, get_track(raster.track)) as split:
        georefs = split.georefs_for(raster.shapes, raster.what)
    return tile_placements(georefs, raster.shapes)
