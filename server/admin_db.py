"""Which database and data folder `c2seg serve` and `c2seg admin` use, and opening them.

One setting finds both: `--db URL` (or `--data-dir DIR`, whose `c2seg.db` is the default
database). `c2seg serve` records its data folder in the database, so `c2seg admin --db URL`
finds the stored submissions without being told again. Every admin verb says on stderr which
database and data folder it uses. Only `c2seg serve` and `c2seg admin add-team` may create a
database: any other verb pointed at a missing (or empty) one says so and exits 1, instead of
making an empty database and reporting success on it.

Database failures (unreachable, not a URL, read-only, permission denied) are one line, never a
traceback.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import click

from c2seg_kit.errors import C2SegError

#: serve's defaults of the settings it takes as options (and `admin rescore` its scoring workers);
#: they are config.Settings' own (and edge.py's), repeated here only so that --help can show them
#: (tests/test_help_audit.py checks that they agree).
SERVE_DEFAULTS = {"data_dir": "c2seg-data", "scoring_workers": 2, "quota_per_day": 5, "max_upload_mb": 256,
                  "max_connections_per_client": 64}
#: A submission id as the admin verbs take it.
ID = click.IntRange(1, 2**31 - 1)


def settings_from(db: str | None, data_dir: str | None, **more):
    """Settings from the options given (None: not given) and the C2SEG_* environment; one line
    for a bad value."""
    from pydantic import ValidationError

    from .config import Settings

    given = {k: v for k, v in dict(database_url=db, data_dir=data_dir, **more).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as e:  # e.g. a bad C2SEG_* variable
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise C2SegError(f"invalid server setting {where}: {first['msg']}") from None


def safe_url(url: str) -> str:
    """The URL with its password masked (for messages)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: show nothing that might be a password
        return "(unparsable URL)"


def sqlite_file(url: str) -> Path | None:
    """The file of an SQLite URL (None for another database or an in-memory one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    if parsed.database.startswith("file:"):  # an SQLite URI (?uri=true): file:/path?mode=ro
        return Path(parsed.database[5:].partition("?")[0])
    return Path(parsed.database)


def _first_line(e: Exception, empty: str | None = None) -> str:
    """The first line of the driver's message (the wrapped DBAPI error's, when there is one);
    `empty` (default: the error's type) when it has none."""
    return (str(getattr(e, "orig", None) or e).strip().splitlines() or [empty or type(e).__name__])[0]


def database_error(url: str, e: Exception) -> C2SegError:
    """One line for a database failure: the driver's first line, the URL without its password."""
    return C2SegError(f"the database {safe_url(url)} failed: {_first_line(e)}")


def open_engine(settings, *, create: bool):
    """An engine on the settings' database, upgraded to this release's schema. Without `create`,
    a database that does not exist (or holds no c2seg tables) is refused in one line."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .db import init_db, make_engine

    url = settings.db_url
    file = sqlite_file(url)
    if not create and file is not None and not file.is_file():
        raise C2SegError(f"no database at {file}: give --db URL or --data-dir DIR of an existing one "
                         "(only `c2seg serve` and `c2seg admin add-team` create a database)")
    try:
        engine = make_engine(url, busy_timeout_s=settings.sqlite_busy_timeout_s)
        if not create:
            with engine.connect() as conn:
                tables = set(inspect(conn).get_table_names())
            if "teams" not in tables:
                engine.dispose()
                raise C2SegError(f"the database {safe_url(url)} holds no c2seg tables: is it the right one? "
                                 "(only `c2seg serve` and `c2seg admin add-team` create a database)")
        init_db(engine, attempts=2)
    except ArgumentError:
        raise C2SegError(f"not a database URL: {url!r} (e.g. sqlite:///c2seg.db, "
                         "postgresql+psycopg://user@host/db)") from None
    except (SQLAlchemyError, ModuleNotFoundError) as e:
        raise C2SegError(f"cannot open the database {safe_url(url)}: {_first_line(e, '?')}") from None
    except OSError as e:  # the SQLite file's folder cannot be made
        raise C2SegError(f"cannot open the database {safe_url(url)}: {e.strerror or e}") from None
    return engine


@dataclass
class AdminContext:
    """What `c2seg admin` was given (the options of the group)."""

    db: str | None
    data_dir: str | None
    _opened: tuple | None = None
    #: "database URL; data folder DIR (how it was found)", once opened: printed on stderr when the
    #: verb has finished (an error stays one line: it gets the database's URL appended instead).
    where: str | None = None

    def open(self, *, create: bool = False):
        """(settings, sessionmaker) on the database, with the data folder resolved: the one given,
        else the one `c2seg serve` recorded, else the default."""
        if self._opened is not None:
            return self._opened
        from . import stored
        from .db import make_sessionmaker

        settings = settings_from(self.db, self.data_dir)
        sessions = make_sessionmaker(open_engine(settings, create=create))
        with sessions() as s:
            recorded = stored.recorded_data_dir(s)
        if self.data_dir is None and recorded is not None:
            settings = settings.model_copy(update={"data_dir": recorded})
            where = "recorded by c2seg serve"
        elif self.data_dir is not None:
            where = "given" + (f"; c2seg serve recorded {recorded}" if recorded and recorded != Path(
                self.data_dir).resolve() else "")
        else:
            where = "the default; no c2seg serve has recorded one"
        self.where = f"database {safe_url(settings.db_url)}; data folder {Path(settings.data_dir).resolve()} ({where})"
        self._opened = (settings, sessions)
        return self._opened


@contextlib.contextmanager
def database_errors(url_of):
    """SQLAlchemy errors inside the block become one line (e.g. a read-only database)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as e:
        raise database_error(url_of(), e) from None


def open_db(ctx, *, create: bool = False):
    """(settings, sessionmaker) for an admin verb from its click context (see AdminContext.open)."""
    return ctx.obj.open(create=create)


def user_error(fn, *args):
    """fn(*args), a ValueError (a wrong name, id or value given by the user) becoming one line."""
    try:
        return fn(*args)
    except ValueError as e:
        raise C2SegError(str(e)) from None


def run_verb(ctx, fn, *args, **kwargs):
    """fn(session, *args) on the admin database; ValueError becomes a one-line user error."""
    _, sessions = open_db(ctx)
    with sessions() as s:
        return user_error(lambda: fn(s, *args, **kwargs))
