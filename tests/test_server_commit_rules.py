"""What is decided when an upload completes or commits, not only when its head arrives:

- the deadline: an upload counts in the phase in which its last byte arrived, so a body that
  arrives after a scheduled close (or the switch to final) is refused, however early its head;
- the team's standing: a token rotated or revoked, or a team disqualified, while its upload was
  in flight, and the upload is refused at the commit (same transaction), charged nothing;
- a team's byte-identical re-upload is refused by a unique index of the database, so the same
  bytes sent at once (to one server, or to two sharing PostgreSQL) are accepted exactly once;
  databases that already hold such pairs upgrade without losing a row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest_plugins = ["server_support"]  # its fixtures: labels_file, pool (of the label_array and SPLIT here)
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, inspect, select, text  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402
from c2seg_server import crud, organizer, phases, submit_service  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.db import make_engine, make_sessionmaker, upgrade_db  # noqa: E402
from c2seg_server.main import create_app  # noqa: E402
from c2seg_server.models import FailedAttempt, QuotaReservation, Score, Submission, Team, UploadSlot, utcnow  # noqa: E402

SHAPE = (48, 40)
SPLIT = dict(split_block=8, split_seed=7, public_fraction=0.5)


@pytest.fixture(scope="module")
def label_array():
    return np.random.default_rng(3).integers(1, 14, SHAPE).astype(np.uint8)


@pytest.fixture
def client(tmp_path, labels_file, pool):
    settings = Settings(labels=[labels_file], data_dir=tmp_path / "data", **SPLIT)
    with TestClient(create_app(settings, pool=pool)) as c:
        yield c


@pytest.fixture
def pred(tmp_path, label_array):
    """Factory: a fresh submission file (its own bytes) each call."""
    counter = iter(range(10**6))

    def make() -> bytes:
        i = next(counter)
        path = tmp_path / f"pred{i}.h5"
        write_submission(path, label_array, "AB", team=f"t{i:04d}")
        return path.read_bytes()

    return make


def add_team(client, name="alpha") -> dict:
    with client.app.state.services.sessions() as s:
        _, token = crud.add_team(s, name)
    return {"Authorization": f"Bearer {token}"}


def post(client, headers, data: bytes):
    return client.post("/api/v1/submissions", headers=headers, files={"file": ("p.h5", data, "application/x-hdf5")})


def counts(client) -> dict:
    """Rows an upload may leave behind, and the stored files."""
    with client.app.state.services.sessions() as s:
        rows = {model.__tablename__: s.scalar(select(func.count()).select_from(model))
                for model in (Submission, QuotaReservation, UploadSlot, FailedAttempt)}
    storage = client.app.state.services.settings.storage_dir
    rows["stored files"] = len(list(storage.glob("*"))) if storage.is_dir() else 0
    return rows


NOTHING = {"submissions": 0, "quota_reservations": 0, "upload_slots": 0, "failed_attempts": 0, "stored files": 0}


# --- the deadline ---------------------------------------------------------------------------

def clock(*times):
    """A clock that tells these times, one per call, then the last one again."""
    told = list(times)
    return lambda: told.pop(0) if len(told) > 1 else told[0]


@pytest.mark.parametrize("new_phase", ["closed", "final"])
def test_an_upload_completed_after_the_close_is_refused_and_one_completed_before_counts(
        client, pred, monkeypatch, new_phase):
    """The head arrives while the track is open (the admission sees it open); the upload service's clock
    says when the last byte arrived: one second after the scheduled change, refused (403, nothing
    charged); one millisecond before it, scored and counted."""
    h = add_team(client)
    close = utcnow() + dt.timedelta(hours=1)
    with client.app.state.services.sessions() as s:
        phases.schedule(s, "AB", new_phase, at=close)
    second = dt.timedelta(seconds=1)
    # the upload service's clock: when the body began to arrive, then when its last byte did
    monkeypatch.setattr(submit_service, "utcnow", clock(close - second, close + second))
    r = post(client, h, pred())
    assert r.status_code == 403, r.text
    assert f"is {new_phase}" in r.json()["detail"] and "before the upload had fully arrived" in r.json()["detail"]
    assert counts(client) == NOTHING
    monkeypatch.setattr(submit_service, "utcnow", clock(close - second, close - dt.timedelta(milliseconds=1)))
    r = post(client, h, pred())
    assert r.status_code == 201, r.text
    assert counts(client)["submissions"] == 1


# --- the team's standing at the commit ------------------------------------------------------

def _rotate(s):
    organizer.rotate_token(s, "alpha")


def _revoke(s):
    crud.revoke_team(s, "alpha")


def _disqualify(s):
    organizer.disqualify(s, "alpha", "shared predictions")


@pytest.mark.parametrize("action,status,words", [
    (_rotate, 401, "token was replaced while the upload was in progress"),
    (_revoke, 401, "token was revoked while the upload was in progress"),
    (_disqualify, 403, "disqualified while the upload was in progress: shared predictions"),
], ids=["rotate-token", "revoke", "disqualify"])
def test_an_upload_in_flight_does_not_survive_a_change_of_standing(client, pool, pred, monkeypatch,
                                                                   action, status, words):
    """The organizer acts while the upload is being scored (after every check at its head)."""
    h = add_team(client)
    real = pool.call
    sessions = client.app.state.services.sessions

    def call(verb, *args, **kwargs):
        out = real(verb, *args, **kwargs)
        if verb == "score":
            with sessions() as s:
                action(s)
        return out

    monkeypatch.setattr(pool, "call", call)
    r = post(client, h, pred())
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert counts(client) == NOTHING  # nothing written, nothing charged, the file not kept


# --- identical re-uploads: a database constraint -------------------------------------------

def test_the_same_bytes_committed_meanwhile_get_409_and_cost_nothing(client, pool, pred, monkeypatch):
    """The twin upload wins the race: it commits while this one is being scored (both passed
    the early identical-file check). This one gets 409 naming the twin, and is charged nothing."""
    h = add_team(client)
    data = pred()
    real = pool.call
    sessions = client.app.state.services.sessions
    twin = {}

    def call(verb, *args, **kwargs):
        out = real(verb, *args, **kwargs)
        if verb == "score" and not twin:
            with sessions() as s:
                team_id = crud.get_team(s, "alpha").id
                res = crud.reserve_slot(s, team_id, "AB", 100, 60)
                twin["id"] = crud.commit_submission(
                    s, res, filename="twin.h5", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                    stored_as="twin.h5", method=None, scores=out).id
        return out

    monkeypatch.setattr(pool, "call", call)
    r = post(client, h, data)
    assert r.status_code == 409, r.text
    assert r.json()["detail"].startswith(f"identical to submission {twin['id']} ") and "not charged" in r.json()["detail"]
    assert counts(client) == {**NOTHING, "submissions": 1}  # the twin only; no file kept for this one
    me = client.get("/api/v1/me", headers=h)
    assert me.status_code == 200


def _db_with_team(url: str) -> tuple:
    engine = make_engine(url)
    upgrade_db(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        team, _ = crud.add_team(s, "alpha")
    return engine, sessions, team.id


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'c2seg.db'}"
    return request.getfixturevalue("postgres_url")


SCORES = {split: {"oa": 0.5, "miou": 0.25, "f1": 0.3, "kappa": 0.2, "per_class_iou": {}, "n_pixels": 10}
          for split in ("public", "private")}


def test_identical_commits_at_once_are_accepted_exactly_once(db_url):
    """Eight threads commit the same bytes for one team at once (each holding its own quota
    reservation, as eight concurrent uploads would): one row, seven DuplicateSubmission naming
    it; another team's identical bytes are its own business."""
    engine, sessions, team_id = _db_with_team(db_url)
    try:
        barrier = threading.Barrier(8)
        results = []

        def commit(i):
            with sessions() as s:
                res = crud.reserve_slot(s, team_id, "AB", 100, 60)
                barrier.wait()
                try:
                    results.append(crud.commit_submission(s, res, filename="p.h5", size=1, sha256="ab" * 32,
                                                          stored_as=f"{i}.h5", method=None, scores=SCORES).id)
                except crud.DuplicateSubmission as e:
                    results.append(("dup", e.earlier))

        threads = [threading.Thread(target=commit, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        ids = [r for r in results if not isinstance(r, tuple)]
        assert len(results) == 8 and len(ids) == 1, results
        assert sorted(results, key=str)[:7] == [("dup", ids[0])] * 7
        with sessions() as s:
            assert s.scalar(select(func.count()).select_from(Submission)) == 1
            assert s.scalar(select(func.count()).select_from(QuotaReservation)) == 7  # freed by the route's finish
            other, _ = crud.add_team(s, "beta")
            res = crud.reserve_slot(s, other.id, "AB", 100, 60)
            crud.commit_submission(s, res, filename="p.h5", size=1, sha256="ab" * 32, stored_as="b.h5",
                                   method=None, scores=SCORES)
    finally:
        engine.dispose()


def test_an_older_database_holding_identical_uploads_upgrades_and_keeps_them(db_url):
    """A database of the previous schema with a team's same bytes three times (the old race):
    the upgrade keeps every row, marks the later copies, and from then on refuses a fourth."""
    engine = make_engine(db_url)
    try:
        upgrade_db(engine, "0003")
        now = utcnow().replace(tzinfo=None)
        with engine.begin() as c:
            c.execute(text("INSERT INTO teams (id, name, token_hash, is_baseline, created) "
                           "VALUES (1, 'alpha', :h, false, :t)"), {"h": "0" * 64, "t": now})
            for sid, sha in ((1, "aa"), (2, "bb"), (3, "aa"), (4, "aa")):
                c.execute(text("INSERT INTO submissions (id, team_id, track, created, scored, filename, size, sha256, "
                               "stored_as, final_pick) VALUES (:i, 1, 'AB', :t, :t, 'p.h5', 1, :s, :f, false)"),
                          {"i": sid, "t": now, "s": sha * 32, "f": f"{sid}.h5"})
        upgrade_db(engine)
        with engine.connect() as c:
            rows = c.execute(text("SELECT id, duplicate_of FROM submissions ORDER BY id")).all()
            assert [tuple(r) for r in rows] == [(1, None), (2, None), (3, 1), (4, 1)]
            assert "uq_submissions_team_sha256" in {ix["name"] for ix in inspect(c).get_indexes("submissions")}
        sessions = make_sessionmaker(engine)
        with sessions() as s:
            s.execute(text("UPDATE teams SET token_hash = :h"), {"h": "1" * 64})
            s.commit()
            res = crud.reserve_slot(s, 1, "AB", 100, 60)
            with pytest.raises(crud.DuplicateSubmission) as info:
                crud.commit_submission(s, res, filename="p.h5", size=1, sha256="aa" * 32, stored_as="5.h5",
                                       method=None, scores=SCORES)
            assert info.value.earlier == 1
            assert s.scalar(select(func.count()).select_from(Submission)) == 4
            assert s.scalar(select(func.count()).select_from(Score)) == 0 and s.get(Team, 1) is not None
    finally:
        engine.dispose()


def test_the_same_bytes_sent_at_once_over_http_are_accepted_once(db_url, tmp_path):
    """The issue as a team would hit it: one file sent four times at once to a live server (two
    scoring children); exactly one 201, three 409s naming it, one submission charged."""
    import httpx
    from live_server import VARIANT, LiveServer, auth, make_target, noisy_prediction

    target = make_target(tmp_path, shape=(96, 64))
    (tmp_path / "srv").mkdir()
    server = LiveServer(tmp_path / "srv", [target.path], db_url=None if db_url.startswith("sqlite") else db_url,
                        env={"C2SEG_SPLIT_BLOCK": "16", "C2SEG_UPLOADS_PER_TEAM": "4"}).start()
    try:
        token = server.add_team("alpha")
        data = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 1), "AB", team=VARIANT).read_bytes()
        barrier = threading.Barrier(4)
        answers = []

        def send():
            barrier.wait()
            r = httpx.post(server.url + "/api/v1/submissions", headers=auth(token), timeout=60,
                           files={"file": ("p.h5", data, "application/x-hdf5")})
            answers.append((r.status_code, r.json()))

        threads = [threading.Thread(target=send) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        codes = sorted(code for code, _ in answers)
        assert codes == [201, 409, 409, 409], answers
        first = next(body["id"] for code, body in answers if code == 201)
        assert all(body["detail"].startswith(f"identical to submission {first} ") for code, body in answers if code == 409)
        with server.session() as s:
            assert s.scalar(select(func.count()).select_from(Submission)) == 1
            assert s.scalar(select(func.count()).select_from(QuotaReservation)) == 0
    finally:
        server.stop()
