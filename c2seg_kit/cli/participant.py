"""Participant verbs (the light install: httpx only): `c2seg submit`, `c2seg leaderboard`,
`c2seg me` (quota, reset time, phase and its end) and `c2seg submissions` (own history, final
picks, metadata edits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from c2seg_kit.classes import EVAL_CLASSES, zero_prediction_refusal
from c2seg_kit.cli.options import format_score, progress_option, track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import for_terminal as safe


def print_scores(result: dict) -> None:
    sc = result["scores"]
    if result.get("public_scores") == "ladder":  # the server shows one number: the team's Ladder value
        moved = "moved by this submission" if result.get("ladder_moved") else "unchanged: your previous best"
        click.echo(f"submission {result['id']} (track {safe(result['track'])}, team {safe(result['team'])}) scored; "
                   f"public mIoU (ladder) {format_score(sc['miou'])}, {moved}")
        return
    click.echo(f"submission {result['id']} (track {safe(result['track'])}, team {safe(result['team'])}) scored; "
               "public split:")
    for key, label in (("miou", "mIoU"), ("oa", "OA"), ("f1", "F1 (macro)"), ("kappa", "Kappa")):
        click.echo(f"  {label:<36} {format_score(sc[key])}")
    click.echo("  per-class IoU:")
    for c in EVAL_CLASSES:
        click.echo(f"    {c.display:<36} {format_score(sc['per_class_iou'].get(c.name))}")


def server_option(fn):
    """--server, from the option, else C2SEG_SERVER, else the client's default."""
    from c2seg_kit.client import DEFAULT_SERVER

    return click.option("--server", envvar="C2SEG_SERVER", show_envvar=True, default=DEFAULT_SERVER,
                        show_default=True, help="The scoring server's URL.")(fn)


def server_options(fn):
    """--server and --token, from the options or C2SEG_SERVER / C2SEG_TOKEN."""
    fn = click.option("--token", envvar="C2SEG_TOKEN", show_envvar=True, help="Your team's token.")(fn)
    return server_option(fn)


def metadata_options(method_default: str | None = None):
    """--method, --description and --url, checked later with the server's own rules (c2seg_kit.text).
    ``method_default`` is what an unset --method stands for, shown in the help."""
    from c2seg_kit import text

    def add(fn):
        fn = click.option("--url", help=f"http(s) link to a paper, report or code (at most {text.URL_MAX} "
                                        "characters)")(fn)
        fn = click.option("--description", help=f"what the method does (at most {text.DESCRIPTION_MAX} "
                                                "characters)")(fn)
        return click.option("--method", show_default=method_default,
                            help=f"method name shown on the board (one line, at most {text.METHOD_MAX} "
                                 "characters)")(fn)

    return add


@click.command()
@click.argument("predictions", type=click.Path(dir_okay=False))
@server_options
@metadata_options(method_default="the file's `method` attribute")
@click.option("--model", "model", type=click.Path(dir_okay=False),
              help="attach the model that made PREDICTIONS (a kit checkpoint or an ONNX file, docs/verify.md), "
                   "for the organizers to re-run; checked before anything is sent")
@click.option("--json", "as_json", is_flag=True, help="print the server's answer as one JSON object")
@progress_option
def submit(predictions, server, token, method, description, url, model, as_json, progress):
    """Validate PREDICTIONS locally, upload them and print the public scores.

    The file and the metadata are checked with the server's own rules before a byte is sent,
    so a broken file costs neither quota nor a failed attempt; a file of tiles holding 0 (no
    class, only ever scored wrong) is refused too. On a track scored on tiles the
    file must hold exactly the test tiles (the server lists them); pack per-tile images with
    `c2seg pack`. The metadata is shown on the
    board; change it later with `c2seg submissions edit ID`.
    """
    from tqdm import tqdm

    from c2seg_kit import client, text
    from c2seg_kit.submission.formats import LAYOUT_TILES
    from c2seg_kit.submission.readers import open_submission

    path = Path(predictions)
    if not path.is_file():
        raise C2SegError(f"no such file: {path}")
    if model is not None:  # a model that would be refused is found out before the predictions cost quota
        from c2seg_kit import model_files

        model_files.inspect_model(model)
    try:
        text.check_metadata(method, client.normalise_newlines(description), url)
    except ValueError as e:
        raise C2SegError(str(e)) from None
    site = client.server_url(server)
    token = client.server_token(token)
    size = path.stat().st_size
    with open_submission(path) as sub:
        track = sub.track
    # Ask the server what it scores first: an unreachable server, an unserved track, a wrong
    # shape or an oversized file are all explained before a byte is uploaded.
    info = client.health(site)
    served = {t["track"]: t for t in info.get("tracks", [])}
    if track not in served:
        raise C2SegError(f"the server at {site} does not score track {track} "
                         f"(it serves: {', '.join(map(safe, served)) or 'none'})")
    for file, key in ((path, "max_upload_bytes"), *(((Path(model), "max_model_bytes"),) if model else ())):
        cap, size_of = info.get(key), file.stat().st_size
        if cap and size_of > cap:
            raise C2SegError(f"{file.name} is {size_of / 2**20:.1f} MiB, larger than the server accepts "
                             f"({cap / 2**20:g} MiB; it would answer 413)")
    # The track's layout decides what the file must hold: the label raster's shape, or exactly
    # the test tiles (ids and shapes); a file of the other layout is told how to convert.
    if served[track].get("layout", "scene") == "tiles":
        expected = {"expected_tiles": client.track_tiles(track, server=site)}
    elif served[track]["shape"] is None:
        raise C2SegError(f"the server at {site} gives no label shape for track {track}, which it scores on the "
                         "whole scene: is the URL that of a C2Seg server of this version?")
    else:
        expected = {"expected_shape": tuple(served[track]["shape"])}
    with open_submission(path, track=track, **expected) as sub:
        zeros = sub.check_values()
        tiles = sub.layout == LAYOUT_TILES
    if zeros and tiles:  # legal in the format and scored, but only ever wrong: refused before it costs quota
        raise C2SegError(zero_prediction_refusal(path.name, zeros))
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"uploading ({track})", file=sys.stderr,
              disable=not progress, leave=False) as bar:
        result = client.submit(path, server=site, token=token, progress=bar.update, method=method,
                               description=description, url=url, track=track)
    if model is not None:
        result = _attach(result["id"], model, site, token, progress)
    if as_json:
        click.echo(json.dumps(result))
    else:
        print_scores(result)


def _attach(submission_id: int, model: str, site: str, token: str, progress: bool) -> dict:
    """Attach `model` to the submission; a refusal says the submission itself stands."""
    from tqdm import tqdm

    from c2seg_kit import client

    size = Path(model).stat().st_size
    try:
        with tqdm(total=size, unit="B", unit_scale=True, desc="uploading the model", file=sys.stderr,
                  disable=not progress, leave=False) as bar:
            result = client.attach_model(submission_id, model, server=site, token=token, progress=bar.update)
    except C2SegError as e:
        raise C2SegError(f"submission {submission_id} was scored, but its model was not attached: {e} "
                         f"(retry with `c2seg attach-model {submission_id} {model}`)") from None
    m = result["model"] or {}
    click.echo(f"attached {safe(m.get('filename', ''))} ({safe(m.get('kind', ''))}, sha256 "
               f"{safe(m.get('sha256', ''))[:16]}...) to submission {submission_id}", err=True)
    return result


@click.command("attach-model")
@click.argument("submission_id", type=click.IntRange(1, 2**31 - 1))
@click.argument("model", type=click.Path(dir_okay=False))
@server_options
@click.option("--json", "as_json", is_flag=True, help="print the server's answer as one JSON object")
@progress_option
def attach_model(submission_id, model, server, token, as_json, progress):
    """Attach MODEL (a kit checkpoint or an ONNX file, docs/verify.md) to your submission
    SUBMISSION_ID, for the organizers to re-run on the hidden test inputs and compare with the
    submitted labels. Checked here first (an ONNX file must be a plain inference graph); the
    server stores it and never runs it. One model per submission."""
    from c2seg_kit import client

    result = _attach(submission_id, model, client.server_url(server), client.server_token(token), progress)
    if as_json:
        click.echo(json.dumps(result))


@click.command()
@server_option
@track_option()
@click.option("--json", "as_json", is_flag=True, help="print the server's JSON")
def leaderboard(server, track, as_json):
    """Print a track's leaderboard: each team's shown submission, ranked (baselines shown, not ranked)."""
    from c2seg_kit import client

    board = client.leaderboard(track, server=server)
    if as_json:
        click.echo(json.dumps(board))
        return
    final = board["phase"] == "final"
    click.echo(f"track {safe(board['track'])} ({safe(board['phase'])}), ranked by {safe(board['ranked_by'])} mIoU; "
               "baselines (*) are shown, not ranked")
    if board.get("public_scores") == "ladder":
        by = ("the standard error of their difference" if board.get("ladder_rule") == "standard error"
              else safe(str(board.get("ladder_step"))))
        click.echo(f"public mIoU: each team's Ladder value (it moves only when a submission beats it by more than "
                   f"{by}); the other public figures are withheld")
    if not board["entries"]:
        click.echo("no submissions yet")
        return
    head = f"{'#':>3}  {'team':<28} " + (f"{'priv.mIoU':>9} " if final else "") + \
        f"{'mIoU':>7} {'OA':>7} {'F1':>7} {'kappa':>7} {'subs':>5}"
    click.echo(head)
    for e in board["entries"]:
        name = safe(e["team"])[:28] + (" *" if e["baseline"] else "")
        priv = f"{format_score(e['private']['miou']):>9} " if final and e.get("private") else ""
        p = e["public"]
        rank = "-" if e["rank"] is None else e["rank"]
        click.echo(f"{rank:>3}  {name:<28} {priv}{format_score(p['miou']):>7} {format_score(p['oa']):>7} "
                   f"{format_score(p['f1']):>7} {format_score(p['kappa']):>7} {e['submissions']:>5}")
    if any(e["baseline"] for e in board["entries"]):
        click.echo("* baseline")
