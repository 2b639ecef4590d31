"""Organizer verbs: `c2seg serve` and `c2seg admin ...` (registered with the core CLI through the
``c2seg.commands`` entry points in pyproject.toml).

fastapi, sqlalchemy and uvicorn are imported inside the commands, not at module level: `c2seg --help`
loads this module to show the verbs' one-line help, also on the light install.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import click

from c2seg_kit.errors import C2SegError

from . import admin_board, admin_evidence, admin_teams, admin_verify
from .admin_db import (  # light: sqlalchemy is imported inside its functions
    SERVE_DEFAULTS,
    AdminContext,
    database_error,
    database_errors,
    open_engine,
    safe_url,
    settings_from,
)

#: The database, as `serve` and `admin` both take it.
DB_OPTION = dict(envvar="C2SEG_DATABASE_URL", show_envvar=True, show_default="SQLite in the data folder",
                 help="SQLAlchemy database URL; PostgreSQL: postgresql+psycopg://user@host/db")
DATA_HELP = "Folder for the SQLite database and the stored submissions."
SERVE_DATA_HELP = (DATA_HELP + " With --db, the folder the database records (the last serve's) is used unless "
                   "this is given; another one is taken only when the stored submissions are in it (move them first).")


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
@click.option("--public-scores", "public_scores", multiple=True, metavar="[TRACK=]exact|ladder|ladder-auto",
              show_default="the recorded mode, else exact",
              help="What a submission's answer and the board show of the public part: exact scores, or the Ladder: "
                   "a team sees one public mIoU, which moves only when a submission beats it by more than "
                   "--ladder-step (ladder) or by more than the standard error of the submission's difference from "
                   "the team's best, estimated on the public part (ladder-auto, the parameter-free Ladder); the "
                   "other public figures are withheld. TRACK=MODE sets one track; repeat for both. Recorded in "
                   "the database.")
@click.option("--ladder-step", "ladder_step", multiple=True, metavar="[TRACK=]STEP",
              show_default="the recorded step, else 0.01",
              help="The fixed Ladder's step (mIoU, above 0, at most 0.5); in ladder-auto, the threshold for "
                   "submissions scored before the server kept what the standard error needs.")
@click.option("--leak-cap-bits", "leak_cap", multiple=True, metavar="[TRACK=]BITS|none",
              show_default="the recorded cap, else none",
              help="Refuse a team's uploads (429) once the public answers it got in the track's current phase can "
                   "reveal this many bits (`c2seg admin list-teams` shows each team's count). Recorded.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="How much uvicorn logs.")
def serve(labels, db, data_dir, rescore, host, port, workers, scoring_workers, quota, max_upload_mb, limit_concurrency,
          max_connections_per_client, public_scores, ladder_step, leak_cap, log_level):
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

    from . import admission, ladder, stored
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
    policies = _public_policies(tracks, public_scores, ladder_step, leak_cap)
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
        for track, given in policies.items():
            ladder.record(s, track, **given)
        shown = {t: ladder.read_policy(s, t) for t in sorted(tracks)}
        uncounted = {t: ladder.without_counts(s, t) for t, p in shown.items() if p.auto}
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
    for track, policy in shown.items():
        if policy.ladder or policy.leak_cap_bits is not None:
            click.echo(f"track {track}: public scores {policy.mode}"
                       + (f" (step {policy.step:g})" if policy.ladder and not policy.auto else "")
                       + (f", leak cap {policy.leak_cap_bits:g} bits per team and phase"
                          if policy.leak_cap_bits is not None else ""), err=True)
        if uncounted.get(track):
            click.echo(f"track {track}: {uncounted[track]} submission(s) were scored before per-unit counts were "
                       f"kept: ladder-auto compares them with the fixed step ({policy.step:g}) until `c2seg admin "
                       "rescore` computes their counts", err=True)
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


def _public_policies(tracks, modes, steps, caps) -> dict[str, dict]:
    """serve's --public-scores, --ladder-step and --leak-cap-bits -> {track: what to record}
    (only what was given); a wrong value is one line."""
    from . import ladder

    try:
        given = {"mode": ladder.parse_per_track(modes, tracks, ladder.check_mode, "--public-scores"),
                 "step": ladder.parse_per_track(steps, tracks, lambda v: ladder.check_step(float(v)), "--ladder-step"),
                 "cap": ladder.parse_per_track(caps, tracks, ladder.check_cap, "--leak-cap-bits")}
    except ValueError as e:
        raise C2SegError(str(e)) from None
    return {t: {k: v[t] for k, v in given.items() if t in v} for t in tracks if any(t in v for v in given.values())}


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
    export, rescoring, the split seed, re-running attached models (verify). Talks to the database
    directly, and first upgrades it to this release's schema (Alembic migrations; a database of
    an older release keeps every row).

    Each verb says on stderr which database and data folder it uses; the data folder is the one
    `c2seg serve` recorded in the database unless --data-dir is given. Only `add-team` creates a
    database: the others refuse a missing one.
    """
    ctx.obj = AdminContext(db=db, data_dir=data_dir)


# The verbs, by topic: teams, the board, evidence, re-running attached models.
for _verb in (*admin_teams.VERBS, *admin_board.VERBS, *admin_evidence.VERBS, *admin_verify.VERBS):
    admin.add_command(_verb)
