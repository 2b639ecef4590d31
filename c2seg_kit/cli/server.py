"""Leaderboard verbs: `serve` and `admin` (organizers), `submit` and `leaderboard` (participants).

fastapi, sqlalchemy and uvicorn are imported inside the organizer verbs only, so `submit` and
`leaderboard` work on the light install.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.errors import C2SegError

TRACK_CHOICE = click.Choice(["AB", "BW"], case_sensitive=False)
DB_HELP = "SQLAlchemy database URL (default: SQLite in DATA_DIR; env C2SEG_DATABASE_URL). PostgreSQL: postgresql+psycopg://user@host/db"
DATA_HELP = "folder for the SQLite database and the stored submissions (env C2SEG_DATA_DIR; default ./c2seg-data)"


def _settings(db: str | None, data_dir: str | None, **more):
    from c2seg_server.config import Settings

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

    from c2seg_server.main import served_tracks

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
    click.echo(f"serving track(s) {', '.join(sorted(tracks))} on http://{host}:{port}/ "
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
    """Organizer tools: teams, tokens, phases, export and rescoring (talks to the database directly)."""
    ctx.obj = {"db": db, "data_dir": data_dir}


def _engine(settings):
    """An engine with the tables in place; a bad or unreachable database is one line, not a traceback."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from c2seg_server.db import init_db, make_engine

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
    from c2seg_server.db import make_sessionmaker

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
    from c2seg_server import crud

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
    from c2seg_server import crud

    _, sessions = _open(ctx)
    with sessions() as s:
        rows = [{"name": t.name, "baseline": t.is_baseline, "created": t.created.isoformat(),
                 "revoked": t.revoked.isoformat() if t.revoked else None,
                 "submissions": len(t.submissions)} for t in crud.list_teams(s)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'team':<30} {'baseline':>8} {'subs':>5}  {'created':<20} revoked")
    for r in rows:
        click.echo(f"{r['name'][:30]:<30} {'yes' if r['baseline'] else '':>8} {r['submissions']:>5}  "
                   f"{r['created'][:19]:<20} {(r['revoked'] or '')[:19]}")


@admin.command()
@click.argument("team")
@click.pass_context
def revoke(ctx, team):
    """Revoke TEAM's token: it is refused from now on (its submissions stay on the board)."""
    from c2seg_server import crud

    _, sessions = _open(ctx)
    with sessions() as s:
        _user_error(crud.revoke_team, s, team)
    click.echo(f"revoked the token of team {team!r}", err=True)


@admin.command()
@click.argument("track", type=TRACK_CHOICE)
@click.argument("phase", required=False, type=click.Choice(["open", "closed", "final"]))
@click.pass_context
def phase(ctx, track, phase):
    """Show or set TRACK's phase: open (accepting), closed (not accepting), final (private scores shown)."""
    from c2seg_server import crud

    _, sessions = _open(ctx)
    with sessions() as s:
        if phase:
            crud.set_phase(s, track.upper(), phase)
        click.echo(f"{track.upper()} {crud.get_phase(s, track.upper())}")


EXPORT_SCORES = ("miou", "oa", "f1", "kappa")


@admin.command()
@click.option("--out", type=click.Path(dir_okay=False), help="CSV file to write (default: stdout)")
@click.option("--track", type=TRACK_CHOICE)
@click.pass_context
def export(ctx, out, track):
    """Export every scored submission (public and private scores, per-class IoU) as CSV."""
    import csv

    from c2seg_server import crud

    _, sessions = _open(ctx)
    head = ["id", "team", "baseline", "track", "created", "filename", "method", "sha256", "size"]
    for split in ("public", "private"):
        head += [f"{split}_{k}" for k in EXPORT_SCORES] + [f"{split}_iou_{n}" for n in CLASS_NAMES]
    with sessions() as s:
        rows = []
        for sub in crud.all_submissions(s, track.upper() if track else None):
            row = [sub.id, sub.team.name, int(sub.team.is_baseline), sub.track, sub.created.isoformat(),
                   sub.filename, sub.method or "", sub.sha256, sub.size]
            for split in ("public", "private"):
                sc = sub.score(split)
                row += [getattr(sc, k) for k in EXPORT_SCORES] + [sc.per_class_iou.get(n) for n in CLASS_NAMES]
            rows.append(["" if v is None else v for v in row])
    f = open(out, "w", newline="") if out else sys.stdout
    try:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(head)
        w.writerows(rows)
    finally:
        if out:
            f.close()
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

    from c2seg_server import crud
    from c2seg_server.main import make_pool, served_tracks
    from c2seg_server.workers import InvalidUpload, ScoringFailed

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


# -------------------------------------------------------------------------------------------
# participants: submit, leaderboard
# -------------------------------------------------------------------------------------------

def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def print_scores(result: dict) -> None:
    sc = result["scores"]
    click.echo(f"submission {result['id']} (track {result['track']}, team {result['team']}) scored; public split:")
    for key, label in (("miou", "mIoU"), ("oa", "OA"), ("f1", "F1 (macro)"), ("kappa", "Kappa")):
        click.echo(f"  {label:<36} {_fmt(sc[key])}")
    click.echo("  per-class IoU:")
    from c2seg_kit.classes import EVAL_CLASSES

    for c in EVAL_CLASSES:
        click.echo(f"    {c.display:<36} {_fmt(sc['per_class_iou'].get(c.name))}")


@click.command()
@click.argument("predictions", type=click.Path(dir_okay=False))
@click.option("--server", envvar="C2SEG_SERVER", help="server URL (env C2SEG_SERVER; default http://127.0.0.1:8000)")
@click.option("--token", envvar="C2SEG_TOKEN", help="your team's token (env C2SEG_TOKEN)")
@click.option("--json", "as_json", is_flag=True, help="print the server's answer as one JSON object")
def submit(predictions, server, token, as_json):
    """Validate PREDICTIONS locally, upload them and print the public scores.

    The file is checked with the same reader the server uses before a byte is sent, so a
    broken file costs neither quota nor a failed attempt.
    """
    from tqdm import tqdm

    from c2seg_kit import client
    from c2seg_kit.submission import open_submission

    path = Path(predictions)
    if not path.is_file():
        raise C2SegError(f"no such file: {path}")
    url = client.server_url(server)
    token = client.server_token(token)
    size = path.stat().st_size
    with open_submission(path) as sub:
        track = sub.track
    # Ask the server what it scores first: an unreachable server, an unserved track, a wrong
    # shape or an oversized file are all explained before a byte is uploaded.
    info = client.health(url)
    shapes = {t["track"]: tuple(t["shape"]) for t in info.get("tracks", [])}
    if track not in shapes:
        raise C2SegError(f"the server at {url} does not score track {track} (it serves: {', '.join(shapes) or 'none'})")
    cap = info.get("max_upload_bytes")
    if cap and size > cap:
        raise C2SegError(f"{path.name} is {size / 2**20:.1f} MiB, larger than the server accepts "
                         f"({cap / 2**20:g} MiB; it would answer 413)")
    with open_submission(path, track=track, expected_shape=shapes[track]) as sub:
        sub.check_values()
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"uploading ({track})", file=sys.stderr,
              disable=None, leave=False) as bar:
        result = client.submit(path, server=url, token=token, progress=bar.update)
    if as_json:
        click.echo(json.dumps(result))
    else:
        print_scores(result)


@click.command()
@click.option("--server", envvar="C2SEG_SERVER", help="server URL (env C2SEG_SERVER; default http://127.0.0.1:8000)")
@click.option("--track", required=True, type=TRACK_CHOICE)
@click.option("--json", "as_json", is_flag=True, help="print the server's JSON")
def leaderboard(server, track, as_json):
    """Print a track's leaderboard: each team's best public mIoU."""
    from c2seg_kit import client

    board = client.leaderboard(track, server=server)
    if as_json:
        click.echo(json.dumps(board))
        return
    final = board["phase"] == "final"
    click.echo(f"track {board['track']} ({board['phase']}), ranked by {board['ranked_by']} mIoU")
    if not board["entries"]:
        click.echo("no submissions yet")
        return
    head = f"{'#':>3}  {'team':<28} " + (f"{'priv.mIoU':>9} " if final else "") + \
        f"{'mIoU':>7} {'OA':>7} {'F1':>7} {'kappa':>7} {'subs':>5}"
    click.echo(head)
    for e in board["entries"]:
        name = e["team"][:28] + (" *" if e["baseline"] else "")
        priv = f"{_fmt(e['private']['miou']):>9} " if final and e.get("private") else ""
        p = e["public"]
        click.echo(f"{e['rank']:>3}  {name:<28} {priv}{_fmt(p['miou']):>7} {_fmt(p['oa']):>7} "
                   f"{_fmt(p['f1']):>7} {_fmt(p['kappa']):>7} {e['submissions']:>5}")
    if any(e["baseline"] for e in board["entries"]):
        click.echo("* baseline")
