"""A database written by a newer release: `c2seg admin` and `c2seg serve` say so in one line
(its schema revision, and the release that wrote it when the database records one), exit 1,
and change nothing; every upgrade records the release that made it."""

from __future__ import annotations

import pytest

pytest.importorskip("alembic")
from cli_support import run_cli  # noqa: E402
from sqlalchemy import text  # noqa: E402

from c2seg_kit import __version__  # noqa: E402
from c2seg_kit.submission.writers import write_labels  # noqa: E402
from c2seg_server.db import SCHEMA_RELEASE_KEY, head_revision, make_engine, upgrade_db  # noqa: E402

NEWER = "0999"


def _db(tmp_path, release: str | None) -> str:
    """A database of this release, then made to look like one a newer release upgraded."""
    url = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    engine = make_engine(url)
    upgrade_db(engine)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT value FROM server_settings WHERE key = :k"),
                            {"k": SCHEMA_RELEASE_KEY}).scalar() == __version__
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": NEWER})
        if release is None:
            conn.execute(text("DELETE FROM server_settings WHERE key = :k"), {"k": SCHEMA_RELEASE_KEY})
        else:
            conn.execute(text("UPDATE server_settings SET value = :v WHERE key = :k"),
                         {"v": release, "k": SCHEMA_RELEASE_KEY})
    engine.dispose()
    return url


def _revision(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("release", ["9.9.0", None], ids=["recorded", "unrecorded"])
@pytest.mark.parametrize("verb", [["list-teams"], ["add-team", "newcomer"], ["phase", "AB"]])
def test_admin_says_the_database_is_newer_in_one_line(tmp_path, capsys, release, verb):
    url = _db(tmp_path, release)
    code, out, err = run_cli(capsys, "admin", "--db", url, *verb)
    assert code == 1 and out == "", err
    assert err.startswith("error: this database was written by a newer c2seg-kit") and err.count("\n") == 1, err
    assert f"schema revision {NEWER}" in err and f"up to {head_revision()}" in err
    assert ("open it with c2seg-kit 9.9.0 or later" if release else "open it with a newer c2seg-kit") in err
    assert "Traceback" not in err
    assert _revision(url) == NEWER  # nothing was changed


def test_serve_says_the_database_is_newer_in_one_line(tmp_path, capsys):
    import os

    import numpy as np

    url = _db(tmp_path, "9.9.0")
    labels = write_labels(tmp_path / "labels.h5", np.ones((64, 64), np.uint8), "AB")
    saved = os.environ.copy()  # `serve` hands its options on as C2SEG_* variables of this process
    try:
        code, out, err = run_cli(capsys, "serve", "--labels", labels, "--db", url, "--data-dir", tmp_path / "data",
                                 "--port", "0")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert code == 1 and err.count("\n") == 1 and "written by a newer c2seg-kit" in err and "9.9.0" in err, err
    assert _revision(url) == NEWER
