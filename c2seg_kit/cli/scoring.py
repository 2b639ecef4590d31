"""`c2seg validate`, `c2seg score`, `c2seg render`: offline checks and scores of a submission.

All three open files through the safe reader (c2seg_kit.submission); a refused file is a user
mistake: one line on stderr, exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from c2seg_kit.classes import EVAL_CLASSES
from c2seg_kit.cli.options import MISSING_SCORE, format_score, track_option

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("predictions", type=_FILE)
@track_option(required=False, help="Require the submission to be for this track.")
@click.option("--labels", type=_FILE,
              help="Hidden labels (labels.h5): also require the track and the exact shape they have.")
def validate(predictions: Path, track: str | None, labels: Path | None) -> None:
    """Check that PREDICTIONS is a valid submission file; exit 0 if so.

    Checks the file structure, links, storage, track, dtype and shape (the labels' shape with
    --labels, else a size bound from the track), then every value (0..13). On failure prints
    one line saying why and exits 1.
    """
    from c2seg_kit.submission import open_labels, open_submission

    expected_shape = None
    if labels is not None:
        with open_labels(labels) as lab:
            if track is not None and lab.track != track:
                raise click.UsageError(f"--track {track} contradicts the labels file (track {lab.track})")
            track, expected_shape = lab.track, lab.shape
    with open_submission(predictions, track=track, expected_shape=expected_shape) as sub:
        sub.check_values()
        h, w = sub.shape
        click.echo(f"OK: {predictions.name} is a valid {sub.track} submission ({h} x {w}, {sub.dtype})")


def _table(result: dict) -> str:
    fmt = format_score
    lines = [
        f"track {result['track']}   evaluated pixels {result['n_pixels']:,}",
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
def score(predictions: Path, labels: Path, as_json: bool, report: Path | None) -> None:
    """Score PREDICTIONS against LABELS: OA, mIoU, per-class IoU, macro F1, Cohen's kappa.

    Pixels labelled 0 are ignored; a predicted 0 counts as wrong. A class absent from both
    labels and predictions has no IoU (n/a / null) and is left out of the means.
    """
    from c2seg_kit.scoring import score_files, write_report

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
@click.option("--out", type=_FILE, required=True, help="PNG file to write.")
@click.option("--max-side", type=click.IntRange(16, 20000), default=2048, show_default=True,
              help="Longest side of the map in pixels; larger rasters keep every k-th pixel.")
@click.option("--legend/--no-legend", default=True, show_default=True, help="Draw the class legend.")
@click.option("--title", help="Title above the map (default: the file name and track).")
def render(file: Path, out: Path, max_side: int, legend: bool, title: str | None) -> None:
    """Draw FILE (a submission or a labels.h5) as a PNG in the official class colours."""
    from c2seg_kit.render import render_rows_png
    from c2seg_kit.submission import open_class_raster

    with open_class_raster(file) as raster:
        h, w = raster.shape
        title = title if title is not None else f"{file.name}  ({raster.track}, {h} x {w})"
        render_rows_png(raster.shape, raster.iter_rows(), out, legend=legend, title=title, max_side=max_side)
    click.echo(f"wrote {out}")
