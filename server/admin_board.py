"""`c2seg admin` verbs about the board: hide and unhide a submission, a track's phase, rescoring
after a label fix, and the split seed. Like every admin verb they talk to the database directly
(and upgrade it first), and import the server's libraries inside the commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from c2seg_kit.cli.options import TRACK_CHOICE, progress_option
from c2seg_kit.errors import C2SegError

from .admin_db import ID, SERVE_DEFAULTS, open_db, run_verb, user_error


@click.command()
@click.argument("submission_id", type=ID)
@click.pass_context
def hide(ctx, submission_id):
    """Take submission ID off the board (kept in the database; the team still sees it, marked hidden)."""
    from . import organizer

    sub = run_verb(ctx, organizer.set_hidden, submission_id, True)
    click.echo(f"hid submission {sub.id} of team {sub.team.name!r} (track {sub.track})", err=True)


@click.command()
@click.argument("submission_id", type=ID)
@click.pass_context
def unhide(ctx, submission_id):
    """Put a hidden submission back on the board."""
    from . import organizer

    sub = run_verb(ctx, organizer.set_hidden, submission_id, False)
    click.echo(f"submission {sub.id} of team {sub.team.name!r} is visible again", err=True)


@click.command()
@click.argument("track", type=TRACK_CHOICE)
@click.argument("phase", required=False, type=click.Choice(["open", "closed", "final"]))
@click.option("--at", "at", metavar="ISO-8601-UTC",
              show_default="now", help="When the change happens, e.g. 2026-12-01T00:00Z; applied on time, no restart.")
@click.option("--cap", type=click.IntRange(0), show_default="C2SEG_QUOTA_PER_PHASE, else no cap",
              help="Submissions per team in this phase, beside the daily quota.")
@click.option("--unschedule", is_flag=True, help="drop TRACK's changes that have not happened yet")
@click.pass_context
def phase(ctx, track, phase, at, cap, unschedule):
    """Show or change TRACK's phase: open (accepting), closed (not accepting), final (private
    scores shown, ranked by them). With --at the change is scheduled; the server applies it on
    time. Final picks close when the open phase ends. Prints the phase now and what is scheduled."""
    from . import phases

    settings, sessions = open_db(ctx)
    with sessions() as s:
        if unschedule:
            n = phases.unschedule(s, track)
            click.echo(f"dropped {n} scheduled change(s) of {track}", err=True)
        if phase:
            when = user_error(phases.parse_utc, at) if at else None
            user_error(lambda: phases.schedule(s, track, phase, at=when, cap=cap))
        elif at or cap is not None:
            raise click.UsageError("--at and --cap go with a PHASE (open, closed or final)")
        st = phases.state(s, track, default_cap=settings.quota_per_phase)
        click.echo(f"{track} {st.phase}")
        if st.cap is not None:
            click.echo(f"  cap: {st.cap} submissions per team in this phase", err=True)
        now = phases.utcnow()
        for change in phases.changes(s, track):
            if change.at > now:
                click.echo(f"  scheduled: {change.phase} at {phases.iso(change.at)}"
                           + (f" (cap {change.cap})" if change.cap is not None else ""), err=True)


@click.command()
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="the corrected labels.h5; repeat for both tracks")
@click.option("--scoring-workers", default=SERVE_DEFAULTS["scoring_workers"], show_default=True, type=click.IntRange(1, 64),
              help="Scoring child processes.")
@click.option("--new-split-seed", is_flag=True,
              help="also move the public/private split to a fresh secret seed (all or nothing: the scores and "
                   "the seed change together)")
@progress_option
@click.pass_context
def rescore(ctx, labels, scoring_workers, new_split_seed, progress):
    """Rescore every stored submission of the given tracks against LABELS (after a label fix),
    on the split recorded in the database (the same public and private pixels as before).

    With labels other than the recorded ones (or --new-split-seed), all or nothing: the new
    scores, the labels' sha256 and the split are committed together once every submission is
    rescored, and a running `c2seg serve` then refuses uploads (503) until it is restarted with
    these labels: the board never mixes two label versions or two splits."""
    from .main import served_tracks
    from .rescoring import rescore_all

    settings, sessions = open_db(ctx)
    settings = settings.model_copy(update={"labels": [Path(p) for p in labels], "scoring_workers": scoring_workers})
    tracks = served_tracks(settings.labels)
    out = rescore_all(settings, sessions, tracks, new_split_seed=new_split_seed, progress=progress,
                      say=lambda line: click.echo(line, err=True))
    click.echo(f"rescored {out.done} submission(s) on track(s) {', '.join(sorted(tracks))}"
               + (f" against new labels of {', '.join(out.new_labels)}" if out.new_labels else "")
               + (" on a new secret split seed" if new_split_seed else "")
               + (f"; {out.failed} failed" if out.failed else ""), err=True)
    if out.new_labels or new_split_seed:
        click.echo("a c2seg serve still running on the old labels or split now refuses uploads (503) until it "
                   "is restarted with these labels", err=True)
    if out.failed:
        sys.exit(1)


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


#: The verbs of this module, added to `c2seg admin` by cli.py.
VERBS = (hide, unhide, phase, rescore, split_seed)
