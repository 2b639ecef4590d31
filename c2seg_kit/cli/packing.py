"""`c2seg pack` and `c2seg unpack`: per-tile images into one tile-layout file, and back to GeoTIFFs."""

from __future__ import annotations

from pathlib import Path

import click

from c2seg_kit.cli.options import progress_option, track_option
from c2seg_kit.registry import get_track

_LIKE_HELP = "The test tiles: the C2Seg_XX folder (or its parent), its zip as distributed, or the test folder itself."


@click.command()
@click.argument("pred_dir", type=click.Path(file_okay=False, path_type=Path))
@track_option(param="track_name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The tile-layout file to write (predictions.h5; labels.h5 with --labels).")
@click.option("--like", type=click.Path(path_type=Path),
              help=f"Check the ids (exactly the test tiles) and each image's shape against the test tiles. {_LIKE_HELP}")
@click.option("--add-one", is_flag=True, help="Shift 0-based predictions (0..12) to the class ids 1..13.")
@click.option("--labels", "as_labels", is_flag=True,
              help="Pack label tiles (0..13) into a tile-layout labels file, for organizers.")
@click.option("--force", is_flag=True, help="Replace --out if it exists; without it an existing file is left alone.")
@click.option("--team", help="Team name stored in the submission's attributes.")
@click.option("--method", help="Method name stored in the submission's attributes.")
@progress_option
def pack(pred_dir: Path, track_name: str, out: Path, like: Path | None, add_one: bool, as_labels: bool, force: bool,
         team: str | None, method: str | None, progress: bool) -> None:
    """Pack per-tile prediction images in PRED_DIR into one tile-layout submission.

    Images as the challenge's teams wrote them: <id>.png, <id>.tif, <id>.tiff or
    <id>_prediction.tif, one band of integer class ids (greyscale or palette PNG, any integer
    TIFF, pixel-interleaved or not). A colour image, an id found twice or a value outside 0..13
    is refused in one line and nothing is written; so is any 0, which is no class (a model
    trained with "reduce zero label" writes 0-based ids 0..12: --add-one shifts them). Tiles
    are read and written one at a time; the file appears only when complete. Example:

    \b
        c2seg pack preds/ --track BW --like C2Seg_BW.zip --out predictions.h5
    """
    from tqdm.auto import tqdm

    from c2seg_kit.submission.pack_files import pack_tiles

    if as_labels and add_one:
        raise click.UsageError("--add-one is for 0-based predictions; label tiles are 0..13 already")
    if as_labels and (team or method):
        raise click.UsageError("--team and --method describe a submission, not a labels file")
    with tqdm(desc="pack", unit="tile", disable=not progress, leave=False, delay=0.5) as bar:
        packed = pack_tiles(pred_dir, get_track(track_name), out, labels=as_labels, like=like, add_one=add_one,
                            overwrite=force, team=team, method=method, progress=bar.update)
    kind = "labels file" if as_labels else "submission"
    checked = f"; ids and shapes match the {packed.checked_against} test tiles" if packed.checked_against else ""
    click.echo(f"wrote {out}: {track_name} tile {kind}, {packed.n_tiles} tiles, {packed.n_pixels:,} pixels{checked}")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--like", type=click.Path(path_type=Path), required=True,
              help=f"Where each tile's georeferencing comes from. {_LIKE_HELP}")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new or empty folder for the GeoTIFFs.")
@progress_option
def unpack(file: Path, like: Path, out: Path, progress: bool) -> None:
    """Write each tile of FILE (a tile-layout submission or labels file) as a GeoTIFF, for GIS.

    One single-band uint8 GeoTIFF per tile, OUT/<id>.tif, carrying the georeferencing of the
    test tile with the same id (nodata 0: class 0 means no class), as GDAL reads it. Every tile
    of FILE must be a test tile of the same shape. The folder appears only when complete.
    """
    from tqdm.auto import tqdm

    from c2seg_kit.submission.pack_files import unpack_tiles

    with tqdm(desc="unpack", unit="tile", disable=not progress, leave=False, delay=0.5) as bar:
        n, folder = unpack_tiles(file, like, out, progress=bar.update)
    click.echo(f"wrote {n} GeoTIFFs to {folder}")
