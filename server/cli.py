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
from c2seg_kit.cli.options import TRACK_CHOICE, track_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.text import csv_cell

DB_HELP = "SQLAlchemy database URL (default: SQLite in DATA_DIR; env C2SEG_DATABASE_URL). PostgreSQL: postgresql+psycopg://user@host/db"
DATA_HELP = "folder for the SQLite database and the stored submissions (env C2SEG_DATA_DIR; default ./c2seg-data)"


def _settings(db: str | None, data_dir: str | None, **more):
    from .config import Settings

    given = {k: v for k, v in dict(database_url=db, data_dir=data_dir, **more).items() if v is not None}
    from pydantic import ValidationError

    try:
        return Settings(**given)
    except ValidationError as e:  # e.g. a bad C2SEG_* variable
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise C2SegError(f"invalid server setting {where}: {first['msg']}") from None


# -------------------------------------------------------------------------------------------
# serve
# -------------------------------------------------------------------------------------------

@click.command()
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="hidden labels.h5 of a track; repeat to serve both tracks")
@click.option("--db", envvar="C2SEG_DATABASE_URL", help=DB_HELP)
@click.option("--data-dir", envvar="C2SEG_DATA_DIR", type=click.Path(file_okay=False), help=DATA_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0 for all)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="server processes")
@click.option("--scoring-workers", type=click.IntRange(1, 64), help="scoring child processes per server process (default 2)")
@click.option("--quota", type=click.IntRange(0), help="submissions per team, track and UTC day (default 5)")
@click.option("--max-upload-mb", type=click.IntRange(1), help="largest upload accepted (default 256)")
@click.option("--limit-concurrency", default=256, show_default=True, type=click.IntRange(1),
              help="connections served at once; more get 503 at once instead of queueing")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve(labels, db, data_dir, host, port, workers, scoring_workers, quota, max_upload_mb, limit_concurrency, log_level):
    """Run the scoring server and leaderboard (FastAPI on uvicorn).

    Scores uploads against the hidden LABELS (one file per track), keeps a team's best
    submission on the board at `/`, and serves the JSON API under /api/v1. Add teams with
    `c2seg admin add-team NAME`. Every option can also come from a C2SEG_* variable.
    """
    import uvicorn

    from .main import served_tracks

    where = _check_can_listen(host, port)
    env = {"C2SEG_LABELS": json.dumps([str(Path(p).resolve()) for p in labels])}
    for key, value in (("DATABASE_URL", db), ("DATA_DIR", data_dir), ("SCORING_WORKERS", scoring_workers),
                       ("QUOTA_PER_DAY", quota),
                       ("MAX_UPLOAD_BYTES", max_upload_mb and max_upload_mb * 1024 * 1024)):
        if value is not None:
            env[f"C2SEG_{key}"] = str(Path(value).resolve()) if key == "DATA_DIR" else str(value)
    os.environ.update(env)  # every worker process builds its app from these (main.app_from_env)
    settings = _settings(None, None)
    tracks = served_tracks(settings.labels)  # fail now, in one line, if a labels file is wrong
    _engine(settings).dispose()
    served = ", ".join(f"{t} ({f'{s.n_tiles} tiles' if s.tiles is not None else 'scene'})"
                       for t, (s, _) in sorted(tracks.items()))
    click.echo(f"serving track(s) {served} on http://{where}/ "
               f"(database: {_safe_url(settings.db_url)})", err=True)
    uvicorn.run(
        "c2seg_server.main:app_from_env", factory=True, host=host, port=port, workers=workers,
        log_level=log_level, server_header=False,
        # Bounded edge: request head size and time, per-client connections (c2seg_server.edge),
        # idle keep-alive, concurrent connections.
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


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: show nothing that might be a password
        return "(unparsable URL)"


# -------------------------------------------------------------------------------------------
# admin
# -------------------------------------------------------------------------------------------

@click.group()
@click.option("--db", envvar="C2SEG_DATABASE_URL", help=DB_HELP)
@click.option("--data-dir", envvar="C2SEG_DATA_DIR", type=click.Path(file_okay=False), help=DATA_HELP)
@click.pass_context
def admin(ctx, db, data_dir):
    """Organizer tools: teams, tokens, members, phases, hiding and disqualifying, duplicates,
    export and rescoring. Talks to the database directly, and first upgrades it to this
    release's schema (Alembic migrations; a database of an older release keeps every row)."""
    ctx.obj = {"db": db, "data_dir": data_dir}


def _engine(settings):
    """An engine on a database upgraded to this release's schema (migrations run here); a bad or
    unreachable database is one line, not a traceback."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .db import init_db, make_engine

    try:
        engine = make_engine(settings.db_url, busy_timeout_s=settings.sqlite_busy_timeout_s)
        init_db(engine, attempts=2)
    except ArgumentError:
        raise C2SegError(f"not a database URL: {settings.db_url!r} (e.g. sqlite:///c2seg.db, "
                         "postgresql+psycopg://user@host/db)") from None
    except (SQLAlchemyError, ModuleNotFoundError) as e:
        first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise C2SegError(f"cannot open the database {_safe_url(settings.db_url)}: {first}") from None
    return engine


def _open(ctx):
    from .db import make_sessionmaker

    settings = _settings(ctx.obj["db"], ctx.obj["data_dir"])
    return settings, make_sessionmaker(_engine(settings))


def _user_error(fn, *args):
    try:
        return fn(*args)
    except ValueError as e:
        raise C2SegError(str(e)) from None


@admin.command("add-team")
@click.argument("name")
@click.option("--baseline", is_flag=True, help="mark the team's rows as baseline results on the board")
@click.pass_context
def add_team(ctx, name, baseline):
    """Add a team; prints its token, alone, on stdout (shown once: only a hash is stored)."""
    from . import crud

    _, sessions = _open(ctx)
    with sessions() as s:
        team, token = _user_error(lambda: crud.add_team(s, name, baseline=baseline))
    click.echo(f"added team {team.name!r}{' (baseline)' if baseline else ''}; its token follows, shown once", err=True)
    click.echo(token)


@admin.command("list-teams")
@click.option("--json", "as_json", is_flag=True, help="one JSON array")
@click.pass_context
def list_teams(ctx, as_json):
    """List teams: name, baseline flag, created, revoked, submissions."""
    from . import crud

    _, sessions = _open(ctx)
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
        click.echo(f"{r['name'][:30]:<30} {'yes' if r['baseline'] else '':>8} {r['submissions']:>5}  "
                   f"{r['created'][:19]:<20} {(r['revoked'] or '')[:19]:<20} {r['disqualified'] or ''}")


@admin.command()
@click.argument("team")
@click.pass_context
def revoke(ctx, team):
    """Revoke TEAM's token: it is refused from now on (its submissions stay on the board)."""
    from . import crud

    _, sessions = _open(ctx)
    with sessions() as s:
        _user_error(crud.revoke_team, s, team)
    click.echo(f"revoked the token of team {team!r}", err=True)


@admin.command()
@click.argument("track", type=TRACK_CHOICE)
@click.argument("phase", required=False, type=click.Choice(["open", "closed", "final"]))
@click.option("--at", "at", metavar="ISO-8601-UTC",
              help="when the change happens, e.g. 2026-12-01T00:00Z (default: now); applied on time, no restart")
@click.option("--cap", type=click.IntRange(0),
              help="submissions per team in this phase, beside the daily quota (default: C2SEG_QUOTA_PER_PHASE)")
@click.option("--unschedule", is_flag=True, help="drop TRACK's changes that have not happened yet")
@click.pass_context
def phase(ctx, track, phase, at, cap, unschedule):
    """Show or change TRACK's phase: open (accepting), closed (not accepting), final (private
    scores shown, ranked by them). With --at the change is scheduled; the server applies it on
    time. Final picks close when the open phase ends. Prints the phase now and what is scheduled."""
    from . import phases

    settings, sessions = _open(ctx)
    with sessions() as s:
        if unschedule:
            n = phases.unschedule(s, track)
            click.echo(f"dropped {n} scheduled change(s) of {track}", err=True)
        if phase:
            when = _user_error(phases.parse_utc, at) if at else None
            _user_error(lambda: phases.schedule(s, track, phase, at=when, cap=cap))
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
@click.option("--out", type=click.Path(dir_okay=False), help="CSV file to write (default: stdout)")
@track_option(required=False, help="Only this track.")
@click.pass_context
def export(ctx, out, track):
    """Export every scored submission (public and private scores, per-class IoU) as CSV."""
    import csv

    from . import crud

    _, sessions = _open(ctx)
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
    with open(out, "w", newline="") if out else contextlib.nullcontext(sys.stdout) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(head)
        w.writerows(rows)
    if out:
        click.echo(f"wrote {len(rows)} submissions to {out}", err=True)


@admin.command()
@click.option("--labels", "labels", multiple=True, required=True, type=click.Path(dir_okay=False),
              help="the corrected labels.h5; repeat for both tracks")
@click.option("--scoring-workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.pass_context
def rescore(ctx, labels, scoring_workers):
    """Rescore every stored submission of the given tracks against LABELS (after a label fix)."""
    from tqdm import tqdm

    from . import crud
    from .main import make_pool, served_tracks
    from .workers import InvalidUpload, ScoringFailed

    settings, sessions = _open(ctx)
    settings = settings.model_copy(update={"labels": [Path(p) for p in labels], "scoring_workers": scoring_workers})
    tracks = served_tracks(settings.labels)
    done = failed = 0
    with make_pool(settings, tracks) as pool, sessions() as s:
        subs = [x for x in crud.all_submissions(s) if x.track in tracks]
        for sub in tqdm(subs, desc="rescoring", unit="sub", disable=None):
            path = settings.storage_dir / sub.stored_as
            try:
                if not path.is_file():
                    raise ScoringFailed("stored file missing")
                scores = pool.call("score", str(path), sub.track)
            except (InvalidUpload, ScoringFailed) as e:
                failed += 1
                click.echo(f"submission {sub.id}: not rescored: {e}", err=True)
                continue
            crud.set_scores(s, sub, scores)
            s.commit()
            done += 1
    click.echo(f"rescored {done} submission(s) on track(s) {', '.join(sorted(tracks))}"
               + (f"; {failed} failed" if failed else ""), err=True)
    if failed:
        sys.exit(1)


# The verbs of issue 14 (hide, disqualify, rotate-token, member, fetch, duplicates, ...) live in
# their own module and join the group on import.
from . import admin_verbs  # noqa: E402,F401
