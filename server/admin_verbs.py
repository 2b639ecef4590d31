"""The organizer verbs for running a leaderboard, added to the `c2seg admin` group by cli.py (VERBS): hide/unhide a
submission, disqualify/reinstate a team, rotate a token, team members, fetch a stored file,
and the duplicate check. Like the rest of `admin`, they talk to the database directly (and
upgrade it first), and import the server's libraries inside the commands.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from c2seg_kit.cli.options import track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import for_terminal as safe

from .admin_db import open_db, user_error

ID = click.IntRange(1, 2**31 - 1)


def _run(ctx, fn, *args, **kwargs):
    """fn(session, *args) on the admin database; ValueError becomes a one-line user error."""
    _, sessions = open_db(ctx)
    with sessions() as s:
        return user_error(lambda: fn(s, *args, **kwargs))


@click.command()
@click.argument("submission_id", type=ID)
@click.pass_context
def hide(ctx, submission_id):
    """Take submission ID off the board (kept in the database; the team still sees it, marked hidden)."""
    from . import organizer

    sub = _run(ctx, organizer.set_hidden, submission_id, True)
    click.echo(f"hid submission {sub.id} of team {sub.team.name!r} (track {sub.track})", err=True)


@click.command()
@click.argument("submission_id", type=ID)
@click.pass_context
def unhide(ctx, submission_id):
    """Put a hidden submission back on the board."""
    from . import organizer

    sub = _run(ctx, organizer.set_hidden, submission_id, False)
    click.echo(f"submission {sub.id} of team {sub.team.name!r} is visible again", err=True)


@click.command()
@click.argument("team")
@click.option("--reason", required=True, help="why (kept with the team, shown to it by `c2seg me`; one line)")
@click.pass_context
def disqualify(ctx, team, reason):
    """Take TEAM off the board and refuse its submissions; everything is kept, with the reason."""
    from . import organizer

    _run(ctx, organizer.disqualify, team, reason)
    click.echo(f"disqualified team {team!r}", err=True)


@click.command()
@click.argument("team")
@click.pass_context
def reinstate(ctx, team):
    """Undo `disqualify`: TEAM is back on the board and may submit again."""
    from . import organizer

    _run(ctx, organizer.reinstate, team)
    click.echo(f"reinstated team {team!r}", err=True)


@click.command("rotate-token")
@click.argument("team")
@click.pass_context
def rotate_token(ctx, team):
    """Give TEAM a new token, printed alone on stdout (shown once); the old one stops working now.
    It also lifts a `revoke`."""
    from . import organizer

    token = _run(ctx, organizer.rotate_token, team)
    click.echo(f"new token for team {team!r} follows, shown once; the old one no longer works", err=True)
    click.echo(token)


@click.command()
@click.argument("team")
@click.option("--name", help="the member's name")
@click.option("--email", required=True, help="the member's e-mail address (one member per address)")
@click.option("--affiliation", help="university, company, ...")
@click.option("--remove", is_flag=True, help="remove the member with this e-mail address instead")
@click.pass_context
def member(ctx, team, name, email, affiliation, remove):
    """Add a member to TEAM (or update the one with this e-mail). Kept for the organizers only."""
    from . import organizer

    if remove:
        _run(ctx, organizer.remove_member, team, email)
        click.echo(f"removed {email} from team {team!r}", err=True)
        return
    if not name:
        raise click.UsageError("--name is required (or give --remove)")
    m = _run(ctx, organizer.add_member, team, name, email, affiliation)
    click.echo(f"team {team!r}: member {safe(m.name)} <{safe(m.email)}>" + (f", {safe(m.affiliation)}" if m.affiliation else ""),
               err=True)


@click.command()
@click.argument("team", required=False)
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@click.pass_context
def members(ctx, team, as_json):
    """List team members (of TEAM, or of every team)."""
    from . import organizer

    rows = [{"team": m.team.name, "name": m.name, "email": m.email, "affiliation": m.affiliation}
            for m in _run(ctx, organizer.members, team)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{safe(r['team'])[:30]:<30} {safe(r['name'])[:30]:<30} {safe(r['email']):<32} {safe(r['affiliation'])}")


@click.command()
@click.argument("submission_id", type=ID)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="where to write the file")
@click.option("--force", is_flag=True, help="replace OUT if it is an existing regular file (never a link or a device)")
@click.pass_context
def fetch(ctx, submission_id, out, force):
    """Write the file submitted as ID to OUT, checked against the hash taken at upload."""
    from . import organizer

    settings, sessions = open_db(ctx)
    with sessions() as s:
        sub = user_error(lambda: organizer.get_any_submission(s, submission_id))
        stored, sha256, team = settings.storage_dir / sub.stored_as, sub.sha256, sub.team.name
    from .outfiles import output_file, refuse_unless_replaceable

    out = Path(out)
    refuse_unless_replaceable(out, force)  # before anything is read
    if not stored.is_file():
        raise C2SegError(f"the stored file of submission {submission_id} is missing ({stored}); check --data-dir")
    digest = hashlib.sha256()
    with output_file(out, force=force) as dst, open(stored, "rb") as src:
        while block := src.read(1 << 20):
            digest.update(block)
            dst.write(block)
        if digest.hexdigest() != sha256:
            raise C2SegError(f"the stored file of submission {submission_id} does not match its upload hash")
    click.echo(f"wrote submission {submission_id} of team {team!r} to {out}", err=True)


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

    groups = _run(ctx, organizer.duplicates, track)
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


@click.command("split-seed")
@click.pass_context
def split_seed(ctx):
    """Show the seed of the public/private split, alone on stdout (on stderr: how each kind of
    track is split, and the seed's origin). A scene track's labelled pixels are split by blocks
    of the recorded size; a tile track's by whole tiles (the block size does not apply). Keep
    the seed secret: with it and the labels' shape or tile ids, anyone can compute which
    labelled pixels are private. Made with `secrets` when the database was first served;
    rescoring keeps it; `rescore --new-split-seed` replaces it."""
    from . import stored

    _, sessions = open_db(ctx)
    with sessions() as s:
        split = stored.read_split(s)
        layouts = {t: layout for t, (_, layout) in stored.recorded_labels(s).items()}
    if split is None:
        raise C2SegError("no split is recorded in this database yet: `c2seg serve` records one when it first starts")
    kinds = [("scene", f"blocks of {split.block} x {split.block} pixels, {split.fraction:g} of them public "
                       "(drawn per track)"),
             ("tiles", f"whole tiles, each public when a seeded hash of its id falls below {split.fraction:g} "
                       "(about that share of the tiles; the block size does not apply)")]
    described = "; ".join(
        f"{'scene' if kind == 'scene' else 'tile'} tracks "
        f"({', '.join(sorted(t for t, k in layouts.items() if k == kind)) or 'none served yet'}): {how}"
        for kind, how in kinds)
    click.echo(f"split: {described}; the seed was {stored.ORIGINS.get(split.origin, split.origin)}; keep it secret",
               err=True)
    click.echo(split.seed)


#: The verbs of this module, in the order cli.py adds them to `c2seg admin`.
VERBS = (hide, unhide, disqualify, reinstate, rotate_token, member, members, fetch, duplicates, split_seed)
