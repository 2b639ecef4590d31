"""Schema migrations (Alembic): a database written by c2seg-kit 0.1 opens with this release
without losing a row, on SQLite (the committed fixture tests/fixtures/c2seg-0.1.db, written by
tests/make_legacy_db.py from the frozen 0.1 schema) and on PostgreSQL (migration 0001, the 0.1
rows inserted, then the upgrade); the migrations' head is exactly the models.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("alembic")
from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402
from sqlalchemy import create_engine, inspect, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from c2seg_server import crud, phases  # noqa: E402
from c2seg_server.db import LEGACY_REVISION, alembic_config, head_revision, make_engine, upgrade_db  # noqa: E402
from c2seg_server.models import Base, Submission, Team  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import legacy_schema_v0 as v0  # noqa: E402
import make_legacy_db  # noqa: E402

FIXTURE = HERE / "fixtures" / "c2seg-0.1.db"
OLD_TABLES = ("teams", "submissions", "scores", "quota_reservations", "failed_attempts")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c2seg.db'}"
    return request.getfixturevalue("postgres_url")


def schema_diff(url: str, metadata) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def ddl(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as c:
        return sorted(r for r in c.execute("SELECT type, name, sql FROM sqlite_master")
                      if "alembic_version" not in r[1])


def old_columns(url: str) -> dict[str, list[tuple]]:
    """The 0.1 columns of every 0.1 table (new columns left out), all rows, in id order."""
    engine = create_engine(url)
    try:
        out = {}
        with engine.connect() as c:
            for table in OLD_TABLES:
                cols = ", ".join(col.name for col in v0.Base.metadata.tables[table].columns)
                out[table] = [tuple(r) for r in c.execute(text(f"SELECT {cols} FROM {table} ORDER BY id"))]
        return out
    finally:
        engine.dispose()


# --- the migrations themselves -------------------------------------------------------------------

def test_revisions_are_one_numbered_line():
    scripts = ScriptDirectory.from_config(alembic_config())
    revs = list(reversed(list(scripts.walk_revisions())))
    assert [r.revision for r in revs] == [f"{i:04d}" for i in range(1, len(revs) + 1)]
    assert revs[0].down_revision is None and all(r.down_revision == p.revision for p, r in zip(revs, revs[1:], strict=False))
    assert scripts.get_heads() == [head_revision()] and LEGACY_REVISION == "0001"
    for r in revs:  # the file name starts with the revision: the next one is easy to place
        assert Path(r.path).name.startswith(r.revision + "_")


def test_migration_0001_is_exactly_the_0_1_schema(tmp_path):
    """SQLite keeps each table's CREATE statement: 0001's must be the 0.1 create_all's, word for word."""
    upgrade_db(make_engine(f"sqlite:///{tmp_path / 'v1.db'}"), "0001")
    assert ddl(tmp_path / "v1.db") == ddl(FIXTURE)


def test_fixture_is_what_the_script_writes(tmp_path):
    """The committed fixture is reproducible from the frozen 0.1 schema (same statements, same rows)."""
    again = make_legacy_db.write(tmp_path / "again.db")
    assert ddl(again) == ddl(FIXTURE)
    assert old_columns(f"sqlite:///{again}") == old_columns(f"sqlite:///{FIXTURE}")


def test_0001_matches_the_0_1_models_and_head_matches_todays(empty_db):
    engine = make_engine(empty_db)
    upgrade_db(engine, "0001")
    engine.dispose()
    assert schema_diff(empty_db, v0.Base.metadata) == []
    engine = make_engine(empty_db)
    upgrade_db(engine)
    engine.dispose()
    assert schema_diff(empty_db, Base.metadata) == [], "models changed without a migration"


def test_downgrade_to_0001_gives_the_0_1_schema_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.db'}"
    engine = make_engine(url)
    upgrade_db(engine)
    from alembic import command

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    engine.dispose()
    assert schema_diff(url, v0.Base.metadata) == []


def test_workers_upgrading_at_once_upgrade_once(tmp_path):
    """Four server processes starting together on a new database: one upgrades, none fails."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    errors = []

    def open_it():
        engine = make_engine(url)
        try:
            upgrade_db(engine)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with sqlite3.connect(tmp_path / "race.db") as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchall() == [(head_revision(),)]


# --- a 0.1 database opens without losing a row ---------------------------------------------------

def check_upgraded(url: str, before: dict) -> None:
    """Every 0.1 row is there with its 0.1 values; new columns hold their defaults; the old
    phase row became a change; the app reads it all back."""
    assert old_columns(url) == before
    assert sum(len(rows) for rows in before.values()) == 3 + 5 + 10 + 1 + 2
    engine = make_engine(url)
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
        assert not inspect(c).has_table("phases")
    with Session(engine) as s:
        subs = s.query(Submission).order_by(Submission.id).all()
        assert [(x.final_pick, x.hidden, x.description, x.url, x.content_sha256) for x in subs] == [
            (False, None, None, None, None)] * 5
        assert [x.method for x in subs] == ["highdan-v1", None, "HighDAN", None, "bw-run"]
        teams = s.query(Team).order_by(Team.id).all()
        assert [(t.name, t.is_baseline, t.revoked is not None, t.disqualified, t.members) for t in teams] == [
            ("alpha", False, False, None, []), ("HighDAN", True, False, None, []), ("<b>gone & co</b>", False, True, None, [])]
        # phases (BW closed since 2026-11-05 09:30) moved over as a dated change
        changes = phases.changes(s, "BW")
        assert [(c.phase, c.at, c.cap) for c in changes] == [("closed", make_legacy_db.T0.replace(day=5), None)]
        assert crud.get_phase(s, "BW") == "closed" and crud.get_phase(s, "AB") == "open"
        # and the board builds from the old rows: alpha's best AB submission (id 2, 0.47) first, baseline unranked
        from c2seg_server.board import build_board

        board = build_board(s, "AB")
        assert [(e.rank, e.team, e.public.miou) for e in board.entries] == [
            (1, "alpha", 0.47), (None, "HighDAN", 0.39), (2, "<b>gone & co</b>", 0.35)]
    engine.dispose()


def test_the_0_1_sqlite_fixture_opens_with_this_release(tmp_path):
    db = tmp_path / "c2seg.db"
    shutil.copy(FIXTURE, db)  # never the committed file itself: opening it upgrades it
    url = f"sqlite:///{db}"
    before = old_columns(url)
    with sqlite3.connect(db) as c:
        assert "alembic_version" not in {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
    from c2seg_server.config import Settings
    from c2seg_server.main import create_app

    create_app(Settings(database_url=url, data_dir=tmp_path / "data", labels=[]))  # what `c2seg serve` does on start
    check_upgraded(url, before)
    before_again = old_columns(url)
    create_app(Settings(database_url=url, data_dir=tmp_path / "data", labels=[]))  # a second start changes nothing
    assert old_columns(url) == before_again


@pytest.mark.postgres
def test_a_0_1_postgresql_database_opens_with_this_release(postgres_url):
    engine = make_engine(postgres_url)
    upgrade_db(engine, "0001")
    with engine.begin() as c:  # a database as 0.1 left it: no alembic_version, its rows
        c.execute(text("DROP TABLE alembic_version"))
    with Session(engine) as s:
        make_legacy_db.insert(s)
    with engine.begin() as c:  # the fixture's rows carry their ids: move the sequences past them, as 0.1's inserts did
        for table in ("teams", "submissions", "scores", "quota_reservations", "failed_attempts"):
            c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    engine.dispose()
    before = old_columns(postgres_url)
    upgrade_db(make_engine(postgres_url))  # stamps 0001, then upgrades
    check_upgraded(postgres_url, before)
    # the sequences went on from the 0.1 rows: a new team gets a fresh id
    engine = make_engine(postgres_url)
    with Session(engine) as s:
        team, _ = crud.add_team(s, "newcomer")
        assert team.id > 3
    engine.dispose()


def test_admin_upgrades_a_0_1_database_on_open(tmp_path):
    from click.testing import CliRunner

    from c2seg_kit.cli import cli

    db = tmp_path / "c2seg.db"
    shutil.copy(FIXTURE, db)
    result = CliRunner().invoke(cli, ["admin", "--db", f"sqlite:///{db}", "list-teams", "--json"])
    assert result.exit_code == 0, result.output
    assert [t["name"] for t in __import__("json").loads(result.stdout)] == ["alpha", "HighDAN", "<b>gone & co</b>"]
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == (head_revision(),)
    assert re.match(r"^\d{4}$", head_revision())


def test_the_server_extra_brings_alembic():
    """An installed server must be able to migrate: the [server] extra installs alembic. (That the
    wheel holds every migration file is checked on a built wheel in tests/test_wheel_contents.py.)"""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert "alembic" in " ".join(tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["server"])
