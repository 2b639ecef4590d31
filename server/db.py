"""Engine and sessions: SQLite (a file in WAL mode) by default, PostgreSQL by URL; the schema
is built and upgraded by the Alembic migrations in migrations/ (see its README.md)."""

from __future__ import annotations

import datetime as dt
import functools
import time
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from c2seg_kit import __version__
from c2seg_kit.errors import C2SegError

MIGRATIONS = Path(__file__).parent / "migrations"
#: The revision whose schema is c2seg-kit 0.1's (a database from before migrations is stamped with it).
LEGACY_REVISION = "0001"
#: Any fixed number: the PostgreSQL advisory lock that serialises upgrades by several workers.
_PG_LOCK_KEY = 0x6332_7365_67


def make_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # (a file: URI is used as given)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            pool_size=16,
            max_overflow=16,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            # WAL: readers never wait for the writer; FULL: an acknowledged commit survives a crash.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is what the extra installs
    return create_engine(parsed, pool_size=16, max_overflow=16, pool_pre_ping=True)


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.lru_cache(maxsize=1)
def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None for an empty database or one from before migrations."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


#: The `server_settings` row naming the release that last upgraded the schema: a release that
#: finds a revision it does not know says which release to use instead.
SCHEMA_RELEASE_KEY = "schema_release"


class DatabaseTooNew(C2SegError):
    """The database's schema revision is newer than this release's migrations."""


@functools.lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    return frozenset(r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions())


def check_not_newer(conn: Connection, revision: str | None) -> None:
    """DatabaseTooNew, in one line, when `revision` (the database's) is not one of this release's."""
    if revision is None or revision in known_revisions():
        return
    by = None
    if inspect(conn).has_table("server_settings"):
        by = conn.execute(text("SELECT value FROM server_settings WHERE key = :k"), {"k": SCHEMA_RELEASE_KEY}).scalar()
    need = f"c2seg-kit {by} or later" if by else "a newer c2seg-kit"
    raise DatabaseTooNew(f"this database was written by a newer c2seg-kit (schema revision {revision}"
                         + (f", c2seg-kit {by}" if by else "")
                         + f"; this c2seg-kit {__version__} reads revisions up to {head_revision()}): "
                         f"open it with {need}")


def _record_release(conn: Connection) -> None:
    conn.execute(text("DELETE FROM server_settings WHERE key = :k"), {"k": SCHEMA_RELEASE_KEY})
    conn.execute(text("INSERT INTO server_settings (key, value, updated) VALUES (:k, :v, :t)"),
                 {"k": SCHEMA_RELEASE_KEY, "v": __version__,
                  "t": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)})


def _upgrade_locked(conn: Connection, revision: str) -> None:
    """Within one transaction that holds the database's write lock: stamp a 0.1 database, upgrade,
    and record this release as the one that did."""
    from alembic import command

    cfg = alembic_config(conn)
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables and "teams" in tables:
        command.stamp(cfg, LEGACY_REVISION)  # made by 0.1's create_all: its schema is 0001's
    command.upgrade(cfg, revision)
    if inspect(conn).has_table("server_settings"):
        _record_release(conn)


def upgrade_db(engine: Engine, revision: str = "head", attempts: int = 5) -> None:
    """Bring the database to `revision` (default: the newest), creating it if empty.

    Several server processes may open the database at once: the upgrade runs in one
    transaction under a lock (PostgreSQL: an advisory lock; SQLite: BEGIN IMMEDIATE), so one
    process upgrades and the others then find it done. DDL is transactional on both, so an
    interrupted upgrade leaves the database as it was.
    """
    want = head_revision() if revision == "head" else revision
    for i in range(attempts):
        try:
            with engine.connect() as conn:
                found = current_revision(conn)
                if found == want:
                    return
                check_not_newer(conn, found)
                conn.rollback()
                if conn.dialect.name == "sqlite":
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                elif conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
                found = current_revision(conn)
                if found != want:
                    check_not_newer(conn, found)
                    _upgrade_locked(conn, revision)
                conn.commit()
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if i == attempts - 1:
                raise
            time.sleep(0.2 * (i + 1))


#: The name callers use: open a database ready for this release.
init_db = upgrade_db


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
