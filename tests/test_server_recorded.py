"""What the database records about its board, and how `serve`, `admin rescore` and a running
server keep to it:

- the data folder: `serve` with only `--db` keeps the recorded one (not ./c2seg-data); another
  folder is taken only when given and when the stored submissions are in it, and said in one line;
- the labels: `serve` refuses labels other than those the stored scores were computed on unless
  `--rescore`; a rescore on other labels (or a new split seed) is all or nothing; a running server
  refuses to score (503) once the database records other labels or another split than its own,
  also when that happens while an upload is being scored;
- `admin split-seed` describes the split of each kind of track as it is made.

`serve` runs in-process here with uvicorn.run replaced: everything it decides happens before it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from cli_support import run_cli  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from live_server import free_port  # noqa: E402

from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_server import crud, stored  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app, make_pool, served_tracks  # noqa: E402
from c2seg_server.models import Submission  # noqa: E402

SHAPE = (64, 48)
SPLIT = dict(split_block=16, split_seed=7, public_fraction=0.5)


@pytest.fixture(scope="module")
def label_array():
    rng = np.random.default_rng(5)
    return rng.integers(1, 14, SHAPE).astype(np.uint8)


@pytest.fixture(scope="module")
def labels(tmp_path_factory, label_array):
    """(the labels the board was scored on, a fixed version of them): paths."""
    folder = tmp_path_factory.mktemp("labels")
    fixed = label_array.copy()
    fixed[(fixed == 3) | (fixed == 5)] = 4
    return (write_labels(folder / "labels.h5", label_array, "AB"),
            write_labels(folder / "labels-fixed.h5", fixed, "AB"))


@pytest.fixture(scope="module")
def pool(labels):
    settings = Settings(labels=[labels[0]], scoring_workers=1, **SPLIT)
    with make_pool(settings, served_tracks(settings.labels)) as p:
        yield p


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No C2SEG_* setting from outside; what `serve` puts in os.environ goes when the test ends;
    the working folder is an empty one (where a default ./c2seg-data would appear)."""
    saved = dict(os.environ)
    for key in [k for k in os.environ if k.startswith("C2SEG_")]:
        monkeypatch.delenv(key)
    for key, value in SPLIT.items():
        monkeypatch.setenv(f"C2SEG_{key.upper()}", str(value))
    monkeypatch.setenv("C2SEG_SCORING_WORKERS", "1")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def served(monkeypatch):
    """Replace uvicorn.run: records the data folder every worker would get."""
    import uvicorn

    runs = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: runs.append(os.environ["C2SEG_DATA_DIR"]))
    return runs


class Board:
    """A database with a data folder, served in-process (TestClient) on the module's pool."""

    def __init__(self, tmp_path: Path, labels: Path, pool, db: str | None = None):
        self.db = db or f"sqlite:///{tmp_path / 'db' / 'board.db'}"
        self.data_dir = tmp_path / "d1"
        self.labels, self.pool, self.tmp = labels, pool, tmp_path
        self.n = 0

    def app(self, **kw):
        settings = Settings(labels=[self.labels], data_dir=self.data_dir, database_url=self.db, **SPLIT, **kw)
        return TestClient(create_app(settings, pool=self.pool))

    def prediction(self, label_array) -> Path:
        self.n += 1
        rng = np.random.default_rng(self.n)
        pred = label_array.copy()
        flip = rng.random(SHAPE) < 0.3
        pred[flip] = rng.integers(1, 14, int(flip.sum()))
        return write_submission(self.tmp / f"pred{self.n}.h5", pred, "AB")

    def upload(self, client, label_array):
        if not hasattr(self, "token"):
            with client.app.state.services.sessions() as s:
                self.token = crud.add_team(s, "alpha")[1]
        path = self.prediction(label_array)
        with open(path, "rb") as f:
            return client.post("/api/v1/submissions", headers={"Authorization": f"Bearer {self.token}"},
                               files={"file": ("p.h5", f, "application/x-hdf5")})

    def sessions(self):
        from c2seg_server.db import make_engine, make_sessionmaker

        return make_sessionmaker(make_engine(self.db))

    def scores(self) -> dict[int, float]:
        with self.sessions()() as s:
            return {sub.id: sub.score("public").miou for sub in crud.all_submissions(s)}


@pytest.fixture
def db_url(request):
    """SQLite by default; tests parametrized indirectly also run on PostgreSQL."""
    return request.getfixturevalue("postgres_url") if getattr(request, "param", "sqlite") == "postgres" else None


BOTH_DATABASES = pytest.mark.parametrize("db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                                         indirect=True)


@pytest.fixture
def board(tmp_path, labels, pool, label_array, db_url):
    """A board with one scored submission (on labels[0]), its server stopped."""
    b = Board(tmp_path, labels[0], pool, db_url)
    with b.app() as client:
        assert b.upload(client, label_array).status_code == 201
    return b


def one_line_error(code, out, err, *words):
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert all(w in err for w in words), err


def serve(capsys, board, *args, labels=None):
    return run_cli(capsys, "serve", "--labels", labels or board.labels, "--db", board.db, "--port", free_port(), *args)


# --- the data folder ------------------------------------------------------------------------------

def test_serve_with_only_db_keeps_the_recorded_data_folder(board, clean_env, served, capsys, tmp_path):
    code, out, err = serve(capsys, board)
    assert code is None or code == 0, err
    assert served == [str(board.data_dir.resolve())]
    assert f"data folder {board.data_dir.resolve()})" in err and "changed" not in err
    assert list(clean_env.iterdir()) == []  # no ./c2seg-data
    code, _, err = run_cli(capsys, "admin", "--db", board.db, "fetch", "1", "--out", tmp_path / "got.h5")
    assert code == 0, err
    with board.sessions()() as s:
        assert stored.recorded_data_dir(s) == board.data_dir.resolve()


def test_another_data_folder_only_when_the_stored_submissions_are_in_it(board, clean_env, served, capsys, tmp_path):
    other = tmp_path / "d2"
    code, out, err = serve(capsys, board, "--data-dir", other)
    one_line_error(code, out, err, "1 stored submission(s) are in the data folder", str(board.data_dir.resolve()),
                   f"not in {other}", "move")
    assert served == []
    with board.sessions()() as s:
        assert stored.recorded_data_dir(s) == board.data_dir.resolve()
    shutil.copytree(board.data_dir / "submissions", other / "submissions", dirs_exist_ok=True)  # moved
    code, out, err = serve(capsys, board, "--data-dir", other)
    assert code is None or code == 0, err
    assert served == [str(other.resolve())]
    changed = [line for line in err.splitlines() if "changed" in line]
    assert changed == [f"data folder changed to {other.resolve()} (the database recorded "
                       f"{board.data_dir.resolve()}; no stored submission is left there)"]
    with board.sessions()() as s:
        assert stored.recorded_data_dir(s) == other.resolve()


def test_serve_help_says_how_the_data_folder_is_chosen(capsys):
    code, out, _ = run_cli(capsys, "serve", "--help")
    text = " ".join(out.split())
    assert code == 0 and "the folder recorded in the database, else c2seg-data" in text
    assert "only when the stored submissions are in it" in text and "--rescore" in text


# --- the labels -----------------------------------------------------------------------------------

def test_serve_refuses_other_labels_unless_told_to_rescore(board, labels, clean_env, served, capsys):
    before = board.scores()
    code, out, err = serve(capsys, board, labels=labels[1])
    one_line_error(code, out, err, f"the labels {labels[1]} of track AB are not the ones", "--rescore")
    assert served == [] and board.scores() == before
    code, out, err = serve(capsys, board, "--rescore", labels=labels[1])
    assert code is None or code == 0, err
    assert "rescored 1 submission(s) against the new labels of track(s) AB" in err
    assert served and board.scores() != before
    with board.sessions()() as s:
        assert stored.recorded_labels(s) == {"AB": (stored.file_sha256(labels[1]), "scene")}
    code, out, err = serve(capsys, board, labels=labels[0])  # and back: refused the same way
    one_line_error(code, out, err, f"the labels {labels[0]} of track AB are not the ones")
    code, out, err = serve(capsys, board, labels=labels[1])  # the recorded ones: no flag needed
    assert code is None or code == 0, err


def test_a_rescore_on_other_labels_is_all_or_nothing(board, labels, label_array, capsys):
    with board.app() as client:
        assert board.upload(client, label_array).status_code == 201
    before = board.scores()
    with board.sessions()() as s:
        first = crud.all_submissions(s)[0].stored_as
        recorded = stored.recorded_labels(s)
    (board.data_dir / "submissions" / first).unlink()
    code, out, err = run_cli(capsys, "admin", "--db", board.db, "rescore", "--labels", labels[1],
                             "--scoring-workers", "1")
    assert code == 1 and "1 submission(s) could not be rescored: nothing was changed" in err, err
    with board.sessions()() as s:
        assert stored.recorded_labels(s) == recorded
    assert board.scores() == before


@BOTH_DATABASES
@pytest.mark.parametrize("change", ["labels", "split"])
def test_a_running_server_does_not_score_on_labels_or_a_split_the_board_no_longer_uses(
        board, labels, label_array, capsys, change):
    with board.app() as client:
        assert board.upload(client, label_array).status_code == 201
        args = ["--labels", labels[1]] if change == "labels" else ["--labels", labels[0], "--new-split-seed"]
        code, _, err = run_cli(capsys, "admin", "--db", board.db, "rescore", *args, "--scoring-workers", "1")
        assert code == 0 and "rescored 2 submission(s)" in err, err
        rescored = board.scores()
        r = board.upload(client, label_array)
        assert r.status_code == 503 and r.headers["retry-after"] == "300", r.text
        what = "the labels of track AB" if change == "labels" else "the public/private split"
        assert r.json()["detail"].startswith(f"{what} changed since this server started")
    assert board.scores() == rescored  # nothing scored on the old labels or split sits beside them
    assert len(list((board.data_dir / "submissions").iterdir())) == 2
    with board.sessions()() as s:
        assert s.query(Submission).count() == 2


@BOTH_DATABASES
def test_a_rescore_committed_while_an_upload_is_scored_is_seen_before_the_upload_is(board, label_array):
    with board.app() as client:
        services = client.app.state.services

        class RescoredMeanwhile:  # the pool, but a rescore commits a new split while it scores
            def __getattr__(self, name):
                return getattr(board.pool, name)

            def call(self, verb, *args, **kw):
                got = board.pool.call(verb, *args, **kw)
                if verb == "score":
                    with services.sessions() as s:
                        stored.put(s, "split_seed", "12345")
                return got

        services.pool = RescoredMeanwhile()
        try:
            r = board.upload(client, label_array)
        finally:
            services.pool = board.pool
        assert r.status_code == 503 and "the public/private split changed" in r.json()["detail"], r.text
    assert len(board.scores()) == 1
    assert len(list((board.data_dir / "submissions").iterdir())) == 1  # the scored file was not kept


@BOTH_DATABASES
def test_a_rescore_also_rescores_uploads_committed_while_it_runs(board, labels, label_array, monkeypatch, capsys):
    """An upload a running server commits during the rescore is rescored with the others."""
    import c2seg_server.main as main

    real = main.make_pool

    def make_pool_with_an_upload(*args, **kw):
        rescoring = real(*args, **kw)
        first = rescoring.call

        def call(verb, *a, **k):  # the server commits an upload (on the old labels) meanwhile
            if verb == "score" and not hasattr(call, "done"):
                call.done = True
                with board.app() as client:
                    assert board.upload(client, label_array).status_code == 201
            return first(verb, *a, **k)

        rescoring.call = call
        return rescoring

    monkeypatch.setattr(main, "make_pool", make_pool_with_an_upload)
    code, _, err = run_cli(capsys, "admin", "--db", board.db, "rescore", "--labels", labels[1],
                           "--scoring-workers", "1")
    assert code == 0 and "rescored 2 submission(s)" in err, err
    monkeypatch.setattr(main, "make_pool", real)
    # both on the fixed labels: what a fresh rescore on them gives again
    after = board.scores()
    code, _, err = run_cli(capsys, "admin", "--db", board.db, "rescore", "--labels", labels[1],
                           "--scoring-workers", "1")
    assert code == 0 and board.scores() == after and len(after) == 2


# --- the split's description -----------------------------------------------------------------------

def test_split_seed_says_how_each_kind_of_track_is_split(board, capsys):
    code, out, err = run_cli(capsys, "admin", "--db", board.db, "split-seed")
    assert code == 0 and out == "7\n"
    text = " ".join(err.split())
    assert "scene tracks (AB): blocks of 16 x 16 pixels, 0.5 of them public" in text
    assert "tile tracks (none served yet): whole tiles, each public when a seeded hash of its id" in text
    assert "64 x 64" not in text
