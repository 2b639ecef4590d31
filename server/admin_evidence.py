"""`c2seg admin` verbs that bring out evidence: fetch a stored file (checked against its upload
hash), duplicates across teams, and the export of every scored submission as CSV. Like every
admin verb they talk to the database directly (and upgrade it first), and import the server's
libraries inside the commands.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import click

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.cli.options import track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import csv_cell
from c2seg_kit.text import for_terminal as safe

from .admin_db import ID, open_db, run_verb, user_error

EXPORT_SCORES = ("miou", "oa", "f1", "kappa")


@click.command()
@click.argument("submission_id", type=ID)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="where to write the file")
@click.option("--force", is_flag=True, help="replace OUT if it is an existing regular file (never a link or a device)")
@click.option("--model", "model", is_flag=True, help="the model attached to the submission instead of its file")
@click.pass_context
def fetch(ctx, submission_id, out, force, model):
    """Write the file submitted as ID (or, with --model, the model attached to it) to OUT,
    checked against the hash taken at upload."""
    from . import organizer

    settings, sessions = open_db(ctx)
    with sessions() as s:
        sub = user_error(lambda: organizer.get_any_submission(s, submission_id))
        if model and sub.model is None:
            raise C2SegError(f"submission {submission_id} has no attached model")
        kept = sub.model if model else sub
        stored, sha256, team = settings.storage_dir / kept.stored_as, kept.sha256, sub.team.name
    from c2seg_kit.outputs import claim_file, output_file

    out = Path(out)
    claim_file(out, force=force)  # before anything is read
    what = "attached model" if model else "file"
    if not stored.is_file():
        raise C2SegError(f"the stored {what} of submission {submission_id} is missing ({stored}); check --data-dir")
    digest = hashlib.sha256()
    with output_file(out, force=force) as dst, open(stored, "rb") as src:
        while block := src.read(1 << 20):
            digest.update(block)
            dst.write(block)
        if digest.hexdigest() != sha256:
            raise C2SegError(f"the stored {what} of submission {submission_id} does not match its upload hash")
    click.echo(f"wrote {'the model of ' if model else ''}submission {submission_id} of team {team!r} to {out}", err=True)


@click.command()
@track_option(required=False, help="only this track")
@click.option("--json", "as_json", is_flag=True, help="one JSON array of groups")
@click.pass_context
def duplicates(ctx, track, as_json):
    """List submissions by different teams with identical predictions.

    "file": byte-identical uploads (the sha256 stored at upload). "content": the same
    prediction in different bytes (other compression, chunking or integer type), found by a
    hash of the decoded prediction taken while scoring; submissions scored before this
    existed get it from `c2seg admin rescore`.
    """
    from . import organizer

    groups = run_verb(ctx, organizer.duplicates, track)
    if as_json:
        click.echo(json.dumps(groups, indent=2))
        return
    if not groups:
        click.echo("no identical predictions from different teams", err=True)
        return
    for g in groups:
        click.echo(f"{g['kind']} {g['hash'][:16]}:")
        for x in g["submissions"]:
            click.echo(f"  {x['id']:>6}  {safe(x['team'])[:30]:<30} {x['track']}  {x['created'][:19]}"
                       + ("  (hidden)" if x["hidden"] else ""))


@click.command()
@click.option("--out", type=click.Path(dir_okay=False), show_default="stdout", help="CSV file to write.")
@click.option("--force", is_flag=True, help="replace OUT if it is an existing regular file (never a link or a device)")
@track_option(required=False, help="Only this track.")
@click.pass_context
def export(ctx, out, force, track):
    """Export every scored submission (public and private scores, per-class IoU) as CSV."""
    import csv

    from c2seg_kit.outputs import claim_file, output_file

    from . import crud

    if out:
        claim_file(Path(out), force=force)  # before the database is read
    _, sessions = open_db(ctx)
    head = ["id", "team", "baseline", "track", "created", "filename", "method", "sha256", "size", "url",
            "content_sha256", "final_pick", "hidden", "team_disqualified", "model_kind", "model_sha256"]
    for split in ("public", "private"):
        head += [f"{split}_{k}" for k in EXPORT_SCORES] + [f"{split}_iou_{n}" for n in CLASS_NAMES]
    with sessions() as s:
        rows = []
        for sub in crud.all_submissions(s, track):
            row = [sub.id, csv_cell(sub.team.name), int(sub.team.is_baseline), sub.track, sub.created.isoformat(),
                   csv_cell(sub.filename), csv_cell(sub.method), sub.sha256, sub.size, csv_cell(sub.url),
                   sub.content_sha256 or "",
                   int(sub.final_pick), int(sub.hidden is not None), int(sub.team.disqualified is not None),
                   sub.model.kind if sub.model else "", sub.model.sha256 if sub.model else ""]
            for split in ("public", "private"):
                sc = sub.score(split)
                row += [getattr(sc, k) for k in EXPORT_SCORES] + [sc.per_class_iou.get(n) for n in CLASS_NAMES]
            rows.append(["" if v is None else v for v in row])
    with output_file(out, force=force, mode="w", newline="") if out else contextlib.nullcontext(sys.stdout) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(head)
        w.writerows(rows)
    if out:
        click.echo(f"wrote {len(rows)} submissions to {out}", err=True)


#: The verbs of this module, added to `c2seg admin` by cli.py.
VERBS = (fetch, duplicates, export)
