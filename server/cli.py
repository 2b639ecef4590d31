"""Organizer verbs: `c2seg serve` and `c2seg admin ...` (registered with the core CLI through the
``c2seg.commands`` entry points in pyproject.toml).

fastapi, sqlalchemy and uvicorn are imported inside the commands, not at module level: `c2seg --help`
loads this module to show the verbs' one-line help, also on the light install.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from pathlib import Path

import click

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.cli.options import TRACK_CHOICE, progress_option, track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import csv_cell
from c2seg_kit.text import for_terminal as safe

from . import admin_verbs
from .admin_db import (  # light: sqlalchemy is imported inside its functions
    AdminContext,
    database_error,
    database_errors,
    open_db,
    open_engine,
    safe_url,
    settings_from,
    user_error,
)

#: The database, as `serve` and `admin` both take it.
DB_OPTION = dict(envvar="C2SEG_DATABASE_URL", show_envvar=True, show_default="SQLite in the data folder",
                 help="SQLAlchemy database URL; PostgreSQL: postgresql+psycopg://user@host/db")
DATA_HELP = "Folder for the SQLite database and the stored submissions."
SERVE_DATA_HELP = (DATA_HELP + " With --db, the folder the database records (the last serve's) is used unless "
                   "this is given; another one is taken only when the stored submissions are in it (move them first).")
#: serve's defaults of the settings it takes as options; they are config.Settings' own (and edge.py's),
#: repeated here only so that --help can show them (tests/test_help_audit.py checks that they agree).
SERVE_DEFAULTS = {"data_dir": "c2seg-data", "scoring_workers": 2, "quota_per_day": 5, "max_upload_mb": 256,
                  "max_connections_per_client": 64}


# -------------------------------------------------------------------------------------------
# serve
# -------------------------------------------------------------------------------------------

@click.command()
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="Hidden labels.h5 of a track; repeat to serve both tracks.")
@click.option("--db", **DB_OPTION)
@click.option("--data-dir", envvar="C2SEG_DATA_DIR", show_envvar=True, type=click.Path(file_okay=False),
              show_default=f"the folder recorded in the database, else {SERVE_DEFAULTS['data_dir']}",
              help=SERVE_DATA_HELP)
@click.option("--rescore", is_flag=True,
              help="When LABELS differ from those the stored submissions were scored on (a label fix), rescore "
                   "them all before serving; without it such labels are refused.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Server processes.")
@click.option("--scoring-workers", type=click.IntRange(1, 64), envvar="C2SEG_SCORING_WORKERS", show_envvar=True,
              default=SERVE_DEFAULTS["scoring_workers"], show_default=True,
              help="Scoring child processes per server process.")
@click.option("--quota", type=click.IntRange(0), envvar="C2SEG_QUOTA_PER_DAY", show_envvar=True,
              default=SERVE_DEFAULTS["quota_per_day"], show_default=True, help="Submissions per team, track and UTC day.")
# not from an environment variable: C2SEG_MAX_UPLOAD_BYTES (bytes) is the setting, read when this is not given
@click.option("--max-upload-mb", type=click.IntRange(1), show_default=f"{SERVE_DEFAULTS['max_upload_mb']}, or "
              "C2SEG_MAX_UPLOAD_BYTES / 2**20", help="Largest upload accepted, in MiB.")
@click.option("--limit-concurrency", default=256, show_default=True, type=click.IntRange(1),
              help="Connections served at once; more get 503 at once instead of queueing.")
@click.option("--max-connections-per-client", type=click.IntRange(0), envvar="C2SEG_MAX_CONNECTIONS_PER_CLIENT",
              show_envvar=True, default=SERVE_DEFAULTS["max_connections_per_client"], show_default=True,
              help="Connections one client address may hold; 0 = no cap: behind a reverse proxy, where every "
                   "connection comes from the proxy.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="How much uvicorn logs.")
def serve(labels, db, data_dir, rescore, host, port, workers, scoring_workers, quota, max_upload_mb, limit_concurrency,
          max_connections_per_client, log_level):
    """Run the scoring server and leaderboard (FastAPI on uvicorn).

    Scores uploads against the hidden LABELS (one file per track), keeps a team's best
    submission on the board at `/`, and serves the JSON API under /api/v1. Add teams with
    `c2seg admin add-team NAME`. An option marked [env var: ...] can also come from that
    variable; every other server setting has its own C2SEG_* variable (server/config.py).
    The database records the data folder, the labels' sha256 and the public/private split (a
    secret seed made on first start): `c2seg admin --db URL` finds them, a later serve keeps
    the data folder unless --data-dir names another, and refuses other labels unless --rescore.
    """
    import uvicorn

    from . import admission, stored
    from .db import make_sessionmaker
    from .folders import data_folder_problem
    from .main import served_tracks
    from .rescoring import rescore_all
    from .scoring import block_grid

    where = _check_can_listen(host, port)
    os.environ["C2SEG_LABELS"] = json.dumps([str(Path(p).resolve()) for p in labels])
    for key, value in (("DATABASE_URL", db), ("SCORING_WORKERS", scoring_workers),
                       ("QUOTA_PER_DAY", quota), ("MAX_CONNECTIONS_PER_CLIENT", max_connections_per_client),
                       ("MAX_UPLOAD_BYTES", max_upload_mb and max_upload_mb * 1024 * 1024)):
        if value is not None:
            os.environ[f"C2SEG_{key}"] = str(value)
    settings = settings_from(None, data_dir)
    tracks = served_tracks(settings.labels)  # fail now, in one line, if a labels file is wrong
    # The data folder: the one given; else, with the database in it (no --db), the default; else
    # the one the database records (a restart with only --db keeps the stored submissions).
    settled = data_dir is not None or settings.database_url is None
    if settled and (problem := data_folder_problem(settings)) is not None:
        raise C2SegError(f"the data folder is not writable: {problem} (uploads would all fail)")
    engine = open_engine(settings, create=True)
    sessions = make_sessionmaker(engine)
    with database_errors(lambda: settings.db_url), sessions() as s:
        recorded = stored.recorded_data_dir(s)
    if not settled:
        settings = settings.model_copy(update={"data_dir": recorded or settings.data_dir})
        if (problem := data_folder_problem(settings)) is not None:
            raise C2SegError(f"the data folder is not writable: {problem} (uploads would all fail)")
    os.environ["C2SEG_DATA_DIR"] = str(Path(settings.data_dir).resolve())  # every worker builds its app from these
    with database_errors(lambda: settings.db_url), sessions() as s:
        moved_from = stored.settle_data_dir(s, settings.data_dir)
        split = stored.record_split(s, settings)  # here, in one process, before the workers start
    for track, (served, _) in sorted(tracks.items()):
        # one part of the split would be empty (every score of it undefined): a tile track's split
        # takes whole tiles, a scene track's whole blocks
        if served.tiles is not None:
            if len(served.tiles) < 2:
                raise C2SegError(f"the labels of track {track} hold a single tile: the public/private split "
                                 "assigns whole tiles and needs at least two")
            continue
        shape = served.shape
        rows, cols = block_grid(shape, split.block)
        if rows * cols < 2:
            raise C2SegError(f"the labels of track {track} ({shape[0]} x {shape[1]}) hold a single block of the "
                             f"public/private split ({split.block} px): the database's split needs larger labels")
    if moved_from is not None:
        click.echo(f"data folder changed to {Path(settings.data_dir).resolve()} (the database recorded "
                   f"{moved_from}; no stored submission is left there)", err=True)
    digests = {t: stored.file_sha256(p) for t, (_, p) in tracks.items()}
    with database_errors(lambda: settings.db_url), sessions() as s:
        relabel = rescore and stored.changed_labels(s, digests)
    if relabel:  # all or nothing: the new scores and the labels' sha256 are committed together
        done = rescore_all(settings, sessions, tracks, say=lambda line: click.echo(line, err=True))
        click.echo(f"rescored {done.done} submission(s) against the new labels of track(s) "
                   f"{', '.join(done.new_labels)}", err=True)
    with database_errors(lambda: settings.db_url), sessions() as s:
        stored.check_labels(s, digests, {t: served.layout for t, (served, _) in tracks.items()},
                            {t: p for t, (_, p) in tracks.items()})
        admission.forget_all(s)  # no upload is in flight yet: slots left by a killed server go
    engine.dispose()
    described = ", ".join(f"{t} ({f'{s.n_tiles} tiles' if s.tiles is not None else 'scene'})"
                          for t, (s, _) in sorted(tracks.items()))
    click.echo(f"serving track(s) {described} on http://{where}/ "
               f"(database {safe_url(settings.db_url)}; data folder {Path(settings.data_dir).resolve()})", err=True)
    if split.origin == "legacy":
        click.echo("warning: this database's public/private split uses the public default seed of older releases "
                   "(anyone can compute the private mask): `c2seg admin rescore --new-split-seed` moves it to a "
                   "secret one", err=True)
    uvicorn.run(
        "c2seg_server.main:app_from_env", factory=True, host=host, port=port, workers=workers,
        log_level=log_level, server_header=False,
        # Bounded edge: request head size and time, per-client connections and waiting heads
        # (c2seg_server.edge), idle keep-alive, concurrent connections.
        http="c2seg_server.edge:GuardedH11Protocol",
        h11_max_incomplete_event_size=16 * 1024, timeout_keep_alive=5, limit_concurrency=limit_concurrency,
        timeout_graceful_shutdown=10,
    )


def _check_can_listen(host: str, port: int) -> str:
    """Bind HOST:PORT the way uvicorn will (SO_REUSEADDR, IPv6 when the host has a colon), then
    let it go: a port in use is one line and exit 1, before anything claims to be serving.
    Returns the address as a URL writes it ([::1]:8000 for IPv6)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:  # in use, not an address of this machine, a privileged port, ...
            raise C2SegError(f"cannot listen on {where}: {e.strerror or e}") from None
    return where


# -------------------------------------------------------------------------------------------
# admin
# -------------------------------------------------------------------------------------------

class AdminGroup(click.Group):
    """`c2seg admin`: every verb says which database and data folder it used (on stderr, once it
    has finished; an error names the database in its one line instead), and a database failure
    inside any verb (read-only, permission denied, gone) is one line and exit 1, never a traceback."""

    def invoke(self, ctx):
        from sqlalchemy.exc import SQLAlchemyError

        def opened():  # the group's callback makes ctx.obj, inside super().invoke
            return ctx.obj if isinstance(ctx.obj, AdminContext) and ctx.obj._opened else None

        try:
            rv = super().invoke(ctx)
        except SQLAlchemyError as e:
            url = opened()._opened[0].db_url if opened() else getattr(ctx.obj, "db", None)
            raise database_error(url or "(the database)", e) from None
        except C2SegError as e:
            if opened() is None:
                raise
            raise C2SegError(f"{e} (database {safe_url(opened()._opened[0].db_url)})") from None
        except SystemExit:
            self._say_where(opened())
            raise
        self._say_where(opened())
        return rv

    @staticmethod
    def _say_where(opened) -> None:
        if opened is not None and opened.where:
            click.echo(opened.where, err=True)


@click.group(cls=AdminGroup)
@click.option("--db", **DB_OPTION)
@click.option("--data-dir", envvar="C2SEG_DATA_DIR", show_envvar=True, type=click.Path(file_okay=False),
              show_default=f"the folder `c2seg serve` recorded in the database, else {SERVE_DEFAULTS['data_dir']}",
              help=DATA_HELP)
@click.pass_context
def admin(ctx, db, data_dir):
    """Organizer tools: teams, tokens, members, phases, hiding and disqualifying, duplicates,
    export, rescoring and the split seed. Talks to the database directly, and first upgrades it
    to this release's schema (Alembic migrations; a database of an older release keeps every row).

    Each verb says on stderr which database and data folder it uses; the data folder is the one
    `c2seg serve` recorded in the database unless --data-dir is given. Only `add-team` creates a
    database: the others refuse a missing one.
    """
    ctx.obj = AdminContext(db=db, data_dir=data_dir)


@admin.command("add-team")
@click.argument("name")
@click.option("--baseline", is_flag=True, help="mark the team's rows as baseline results on the board")
@click.pass_context
def add_team(ctx, name, baseline):
    """Add a team; prints its token, alone, on stdout (shown once: only a hash is stored)."""
    from . import crud

    name = user_error(crud.check_team_name, name)  # before the database is opened (or made)
    _, sessions = open_db(ctx, create=True)
    with sessions() as s:
        team, token = user_error(lambda: crud.add_team(s, name, baseline=baseline))
    click.echo(f"added team {team.name!r}{' (baseline)' if baseline else ''}; its token follows, shown once", err=True)
    click.echo(token)


@admin.command("list-teams")
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@click.pass_context
def list_teams(ctx, as_json):
    """List teams: name, baseline flag, created, revoked, submissions."""
    from . import crud

    _, sessions = open_db(ctx)
    with sessions() as s:
        rows = [{"name": t.name, "baseline": t.is_baseline, "created": t.created.isoformat(),
                 "revoked": t.revoked.isoformat() if t.revoked else None,
                 "disqualified": t.disqualified_reason if t.disqualified else None,
                 "members": len(t.members), "submissions": len(t.submissions)} for t in crud.list_teams(s)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'team':<30} {'baseline':>8} {'subs':>5}  {'created':<20} {'revoked':<20} disqualified")
    for r in rows:
        click.echo(f"{safe(r['name'])[:30]:<30} {'yes' if r['baseline'] else '':>8} {r['submissions']:>5}  "
                   f"{r['created'][:19]:<20} {(r['revoked'] or '')[:19]:<20} {safe(r['disqualified'])}")


@admin.command()
@click.argument("team")
@click.pass_context
def revoke(ctx, team):
    """Revoke TEAM's token: it is refused from now on (its submissions stay on the board)."""
    from . import crud

    _, sessions = open_db(ctx)
    with sessions() as s:
        user_error(crud.revoke_team, s, team)
    click.echo(f"revoked the token of team {team!r}", err=True)


@admin.command()
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


EXPORT_SCORES = ("miou", "oa", "f1", "kappa")


@admin.command()
@click.option("--out", type=click.Path(dir_okay=False), show_default="stdout", help="CSV file to write.")
@click.option("--force", is_flag=True, help="replace OUT if it is an existing regular file (never a link or a device)")
@track_option(required=False, help="Only this track.")
@click.pass_context
def export(ctx, out, force, track):
    """Export every scored submission (public and private scores, per-class IoU) as CSV."""
    import csv

    from . import crud
    from .outfiles import output_file, refuse_unless_replaceable

    if out:
        refuse_unless_replaceable(Path(out), force)  # before the database is read
    _, sessions = open_db(ctx)
    head = ["id", "team", "baseline", "track", "created", "filename", "method", "sha256", "size", "url",
            "content_sha256", "final_pick", "hidden", "team_disqualified"]
    for split in ("public", "private"):
        head += [f"{split}_{k}" for k in EXPORT_SCORES] + [f"{split}_iou_{n}" for n in CLASS_NAMES]
    with sessions() as s:
        rows = []
        for sub in crud.all_submissions(s, track):
            row = [sub.id, csv_cell(sub.team.name), int(sub.team.is_baseline), sub.track, sub.created.isoformat(),
                   csv_cell(sub.filename), csv_cell(sub.method), sub.sha256, sub.size, csv_cell(sub.url),
                   sub.content_sha256 or "",
                   int(sub.final_pick), int(sub.hidden is not None), int(sub.team.disqualified is not None)]
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


@admin.command()
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


# The leaderboard verbs (hide, disqualify, rotate-token, member, fetch, duplicates, ...) live in
# their own module.
for _verb in admin_verbs.VERBS:
    admin.add_command(_verb)
