"""The scoring server through FastAPI's TestClient: scores, splits, auth, quotas, phases, board, page.

Factories make tiny label/prediction files; one scoring pool (real child processes) serves the
whole module, and every test gets a fresh database and data folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest_plugins = ["server_support"]  # its fixtures: labels_file, pool (of the label_array and SPLIT here)
from fastapi.testclient import TestClient  # noqa: E402
from sklearn.metrics import jaccard_score  # noqa: E402
from split_scores import as_served, scores_by_part, served_part  # noqa: E402

from c2seg_kit.classes import CLASS_NAMES, EVAL_CLASSES  # noqa: E402
from c2seg_kit.submission.score_files import score_files  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_server import crud  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.deps import current_team  # noqa: E402
from c2seg_server.main import create_app, make_pool, served_tracks  # noqa: E402
from c2seg_server.scoring import Header, public_mask, split_labels  # noqa: E402
from c2seg_server.workers import InvalidUpload, ScoringFailed  # noqa: E402

SHAPE = (90, 70)
BLOCK = 16
SPLIT = dict(split_block=BLOCK, split_seed=7, public_fraction=0.5)
NO_TOKEN = "missing, invalid or revoked token: send 'Authorization: Bearer <token>'"


@pytest.fixture(scope="module")
def label_array():
    rng = np.random.default_rng(3)
    lab = rng.integers(1, 14, SHAPE).astype(np.uint8)
    lab[rng.random(SHAPE) < 0.2] = 0  # unlabelled pixels, ignored everywhere
    return lab


@pytest.fixture
def make_client(tmp_path, labels_file, pool):
    """Factory: a TestClient on a fresh app (own SQLite file) sharing the module's scoring pool."""
    clients = []

    def make(**overrides) -> TestClient:
        settings = Settings(labels=[labels_file], data_dir=tmp_path / f"data{len(clients)}", **{**SPLIT, **overrides})
        client = TestClient(create_app(settings, pool=pool))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def add_team(client, name="alpha", baseline=False) -> dict:
    """Factory: a team in the client's database; returns its auth header."""
    with client.app.state.services.sessions() as s:
        _, token = crud.add_team(s, name, baseline=baseline)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pred_file(tmp_path):
    """Factory: write a prediction array as a submission file."""
    counter = iter(range(10**6))

    def make(array, track="AB", **kw):
        path = tmp_path / f"pred{next(counter)}.h5"
        write_submission(path, array, track, **kw)
        return path

    return make


def post(client, headers, path, name="predictions.h5"):
    with open(path, "rb") as f:
        return client.post("/api/v1/submissions", headers=headers, files={"file": (name, f, "application/x-hdf5")})


def shuffled(label_array, seed=0):
    rng = np.random.default_rng(seed)
    pred = label_array.copy()
    pred[pred == 0] = rng.integers(0, 14, int((pred == 0).sum()))
    noisy = rng.random(SHAPE) < 0.4
    pred[noisy] = rng.integers(0, 14, int(noisy.sum()))
    return pred.astype(np.uint8)


# --- scoring ---------------------------------------------------------------------------------

def test_perfect_prediction_scores_one(client, label_array, pred_file):
    h = add_team(client)
    r = post(client, h, pred_file(label_array))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["track"] == "AB" and body["team"] == "alpha"
    assert body["scores"]["miou"] == 1.0 and body["scores"]["oa"] == 1.0
    assert body["private_scores"] is None  # phase open
    assert "confusion_matrix" not in body["scores"]
    got = client.get(f"/api/v1/submissions/{body['id']}", headers=h)
    assert got.status_code == 200 and got.json()["scores"] == body["scores"]


def test_public_and_private_scores_match_score_files_on_the_same_split(client, label_array, pred_file, tmp_path):
    h = add_team(client)
    pred = shuffled(label_array)
    path = pred_file(pred)
    body = post(client, h, path).json()
    # The oracle: `c2seg score` (score_files) against label files holding only one part each.
    mask = public_mask(SHAPE, "AB", seed=SPLIT["split_seed"], block=BLOCK, fraction=0.5)
    public, private = split_labels(label_array, mask)
    for part, arr in (("public", public), ("private", private)):
        write_labels(tmp_path / f"{part}.h5", arr, "AB")
    want = score_files(path, tmp_path / "public.h5")
    got = body["scores"]
    for key in ("oa", "miou", "f1", "kappa"):
        assert got[key] == round(want[key], 4)
    assert got["per_class_iou"] == {k: (None if v is None else round(v, 4)) for k, v in want["per_class_iou"].items()}
    assert got["n_pixels"] == want["n_pixels"] == int(((label_array > 0) & mask).sum())
    # Private scores are stored, and shown once the track is final.
    with client.app.state.services.sessions() as s:
        crud.set_phase(s, "AB", "final")
    private_got = client.get(f"/api/v1/submissions/{body['id']}", headers=h).json()["private_scores"]
    want_private = score_files(path, tmp_path / "private.h5")
    assert private_got["miou"] == round(want_private["miou"], 4)
    assert private_got["n_pixels"] + got["n_pixels"] == int((label_array > 0).sum())
    # scikit-learn agrees on the public mIoU (classes present in either array, 0 never a class)
    evaluated = mask & (label_array > 0)
    y, q = label_array[evaluated], pred[evaluated]
    present = sorted((set(y.tolist()) | set(q.tolist())) - {0})
    assert got["miou"] == pytest.approx(jaccard_score(y, q, labels=present, average="macro"), abs=5e-5)


def test_public_mask_is_seeded_blocks_of_about_half():
    a = public_mask((300, 200), "AB", seed=1, block=32, fraction=0.5)
    b = public_mask((300, 200), "AB", seed=1, block=32, fraction=0.5)
    c = public_mask((300, 200), "BW", seed=1, block=32, fraction=0.5)
    assert a.shape == (300, 200) and a.dtype == bool
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # constant within every block
    for r in range(0, 300, 32):
        for col in range(0, 200, 32):
            blk = a[r : r + 32, col : col + 32]
            assert blk.all() or not blk.any()
    blocks = a[::32, ::32]
    assert blocks.sum() == round(0.5 * blocks.size)


# --- auth and isolation --------------------------------------------------------------------------

def test_a_team_never_sees_another_teams_submissions(client, label_array, pred_file):
    ha, hb = add_team(client, "alpha"), add_team(client, "beta")
    sid = post(client, ha, pred_file(label_array)).json()["id"]
    other = client.get(f"/api/v1/submissions/{sid}", headers=hb)
    missing = client.get("/api/v1/submissions/999999", headers=hb)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(str(sid), "N") == missing.json()["detail"].replace("999999", "N")
    assert client.get("/api/v1/submissions", headers=hb).json() == []
    assert [s["id"] for s in client.get("/api/v1/submissions", headers=ha).json()] == [sid]
    assert client.get(f"/api/v1/submissions/{sid}").status_code == 401


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nope", "Basic abc", "Bearer " + "x" * 300])
def test_bad_or_missing_token_is_401(client, pred_file, label_array, header):
    headers = {"Authorization": header} if header else {}
    r = post(client, headers, pred_file(label_array))
    assert r.status_code == 401 and r.json()["detail"] == NO_TOKEN
    assert r.headers["www-authenticate"] == "Bearer"


def test_revoked_token_is_refused_and_only_hashes_are_stored(client, label_array, pred_file):
    h = add_team(client)
    token = h["Authorization"].split()[1]
    with client.app.state.services.sessions() as s:
        team = crud.get_team(s, "alpha")
        assert token not in (team.token_hash, team.name)
        assert team.token_hash == hashlib.sha256(token.encode()).hexdigest()
        crud.revoke_team(s, "alpha")
    assert post(client, h, pred_file(label_array)).status_code == 401
    assert client.get("/api/v1/me", headers=h).status_code == 401


def _raw_post(app, headers: dict, body_chunks: list[bytes]):
    """Drive the ASGI app directly; report the status and whether the body was ever read."""
    read = []
    sent = []

    async def receive():
        if body_chunks:
            read.append(1)
            return {"type": "http.request", "body": body_chunks.pop(0), "more_body": bool(body_chunks)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/v1/submissions", "raw_path": b"/api/v1/submissions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, bool(read)


def test_unauthenticated_or_oversized_bodies_are_refused_before_being_read(client):
    app = client.app
    ctype = {"content-type": "multipart/form-data; boundary=xyz"}
    status, read = _raw_post(app, {**ctype, "content-length": "10"}, [b"0123456789"])
    assert (status, read) == (401, False)
    h = add_team(client)
    huge = str(app.state.services.settings.max_upload_bytes + 10**6)
    status, read = _raw_post(app, {**ctype, **h, "content-length": huge}, [b"x" * 100])
    assert (status, read) == (413, False)


def test_dependency_override_of_the_team(client, label_array, pred_file):
    """TeamDep is a plain dependency: tests (and alternative auth) can swap it."""
    add_team(client, "alpha")
    with client.app.state.services.sessions() as s:
        alpha = crud.get_team(s, "alpha")
    client.app.dependency_overrides[current_team] = lambda: alpha
    try:
        r = post(client, {}, pred_file(label_array))
        assert r.status_code == 201 and r.json()["team"] == "alpha"
    finally:
        client.app.dependency_overrides.clear()


# --- bad uploads -------------------------------------------------------------------------------

def test_bad_uploads_get_precise_4xx_and_cost_no_quota(make_client, label_array, pred_file, tmp_path):
    client = make_client(quota_per_day=1)
    h = add_team(client)
    cases = []
    r = client.post("/api/v1/submissions", headers=h, files={"file": ("p.h5", b"not an hdf5 file")})
    cases.append((r, 422, "HDF5"))
    r = client.post("/api/v1/submissions", headers=h, files={"file": ("p.h5", b"")})
    cases.append((r, 422, "is empty (0 bytes)"))
    r = client.post("/api/v1/submissions", headers=h, files={"other": ("p.h5", b"abc")})
    cases.append((r, 400, "field named 'file'"))
    r = client.post("/api/v1/submissions", headers=h, content=b"abc")
    cases.append((r, 400, "multipart/form-data"))
    r = post(client, h, pred_file(label_array[:-1]))
    cases.append((r, 422, "shape"))
    r = post(client, h, pred_file(np.zeros((90, 70), np.uint8), track="BW"))
    cases.append((r, 422, "track"))
    bad = label_array.copy()
    bad[5, 5] = 200
    path = tmp_path / "bad_values.h5"
    import h5py

    with h5py.File(path, "w") as f:  # written by hand: the kit's writer refuses such values
        f.attrs["c2seg_format"] = "submission/1"
        f.attrs["track"] = "AB"
        f.create_dataset("prediction", data=bad)
    r = post(client, h, path)
    cases.append((r, 422, "outside 0..13"))
    for resp, status, words in cases:
        assert resp.status_code == status, (resp.status_code, resp.text)
        detail = resp.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and words in detail
    # None of that used the quota of 1: a good file is still accepted.
    assert post(client, h, pred_file(label_array)).status_code == 201
    assert client.get("/api/v1/me", headers=h).json()["failed_today"] == 5  # the 422s; 400s are not scored


def test_upload_cap_is_enforced_while_streaming(make_client, label_array, pred_file):
    client = make_client(max_upload_bytes=2000)
    h = add_team(client)

    def chunks():  # no Content-Length: the cap must hold while the body streams
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\n"
        for _ in range(100):
            yield b"x" * 1000
        yield b"\r\n--b--\r\n"

    r = client.post("/api/v1/submissions", headers={**h, "content-type": "multipart/form-data; boundary=b"},
                    content=chunks())
    assert r.status_code == 413
    assert r.json()["detail"] == f"the upload is larger than this server accepts ({2000 / 2**20:g} MiB)"
    r = post(client, h, pred_file(label_array))  # a real file is larger than 2000 bytes too
    assert r.status_code == 413


def test_a_crashing_or_hanging_reader_gives_422_and_frees_the_slot(make_client, label_array, pred_file):
    class FlakyPool:
        size = 1

        def __init__(self):
            self.calls = []

        def call(self, verb, *args, timeout_s=None):
            self.calls.append(verb)
            if verb == "peek":
                return Header(track="AB", layout="scene")
            raise ScoringFailed("the file crashed the reader (exit status -11)")

    client = make_client(quota_per_day=1)
    flaky = FlakyPool()
    client.app.state.services.pool = flaky
    h = add_team(client)
    r = post(client, h, pred_file(label_array))
    assert r.status_code == 422 and "crashed" in r.json()["detail"]
    assert flaky.calls == ["peek", "score"]
    me = client.get("/api/v1/me", headers=h).json()
    assert me["quota"][0]["used_today"] == 0 and me["failed_today"] == 1


def test_pool_replaces_a_child_that_hangs_or_dies(pool, label_array, pred_file):
    import os
    import signal

    path = str(pred_file(label_array))
    pool.call("peek", path)  # the child is up
    os.kill(pool._children[0].proc.pid, signal.SIGSTOP)  # a hang, as a stuck HDF5 call would be
    with pytest.raises(ScoringFailed, match="longer than"):
        pool.call("score", path, "AB", timeout_s=0.5)
    assert pool.call("score", path, "AB")["public"]["miou"] == 1.0  # a fresh child took over
    pool._children[0].proc.kill()
    pool._children[0].proc.wait()
    assert pool.call("peek", path).track == "AB"
    with pytest.raises(InvalidUpload, match="HDF5"):
        pool.call("peek", __file__)


class InProcessPool:
    """The scoring pool's interface, answered by a Scorer in this process (so its opens can be counted)."""

    size = 1

    def __init__(self, scorer):
        self.scorer = scorer

    def call(self, verb, *args, timeout_s=None):
        from c2seg_kit.errors import C2SegError

        try:
            return getattr(self.scorer, verb)(*args)
        except C2SegError as e:
            raise InvalidUpload(str(e)) from None


@pytest.mark.parametrize("declared", [None, "AB"], ids=["track-from-the-file", "declared-track"])
def test_an_upload_is_parsed_once_from_admission_to_its_scores(make_client, pool, label_array, pred_file,
                                                               monkeypatch, declared):
    """The admission decides the track and reads the header in one open of the file; the scorer
    reads the pixels from that same open (no second parse for the track, none for the scores)."""
    from c2seg_kit import h5safe
    from c2seg_server.scoring import Scorer

    scorer = Scorer(**pool._children[0].scorer_kwargs)
    scorer.warm()  # the labels are read before the count starts
    client = make_client()
    client.app.state.services.pool = InProcessPool(scorer)
    spool = client.app.state.services.settings.spool_dir
    opened = []
    real = h5safe._open_raw_and_hdf5

    def counting(source, ctx):
        if spool in Path(source).parents:
            opened.append(Path(source).name)
        return real(source, ctx)

    monkeypatch.setattr(h5safe, "_open_raw_and_hdf5", counting)
    h = add_team(client)
    with open(pred_file(label_array), "rb") as f:
        r = client.post("/api/v1/submissions", headers=h, params={"track": declared} if declared else None,
                        files={"file": ("p.h5", f, "application/x-hdf5")})
    assert r.status_code == 201 and r.json()["scores"]["miou"] == 1.0, r.text
    assert len(opened) == 1, opened
    assert not scorer.holding()  # scoring closed the file


def test_a_score_without_its_admitted_file_opens_it_for_the_headers_track(pool, label_array, pred_file,
                                                                          monkeypatch):
    """A child that did not admit the file (the admitting one was busy or died) opens it again,
    for the track the admission decided: the track is not detected a second time."""
    from c2seg_kit import h5safe
    from c2seg_server.scoring import Scorer

    scorer = Scorer(**pool._children[0].scorer_kwargs)
    path = str(pred_file(label_array))
    header = scorer.peek(path, "AB")
    assert (header.track, header.layout) == ("AB", "scene") and header.ticket
    other = Scorer(**pool._children[0].scorer_kwargs)
    other.warm()
    monkeypatch.setattr(h5safe, "read_root", lambda *a, **k: pytest.fail("the track was detected again"))
    assert other.score(path, "AB", header) == scorer.score(path, "AB", header)
    with pytest.raises(InvalidUpload, match="the file is for track AB, but it was sent for track BW"):
        InProcessPool(scorer).call("peek", path, "BW")
    assert not scorer.holding()  # a refused file is not kept


def test_the_pool_sends_a_score_to_the_child_that_admitted_its_file(labels_file, label_array, pred_file):
    """Two uploads admitted one after the other land on two children (the second goes to the one
    keeping no file); each score goes back to the child that keeps its file open."""
    settings = Settings(labels=[labels_file], scoring_workers=2, **SPLIT)
    with make_pool(settings, served_tracks(settings.labels)) as two:
        served = []

        def recording(child, real):
            def call(msg, timeout):
                served.append((msg[0], two._children.index(child)))
                return real(msg, timeout)
            return call

        for child in two._children:
            child.call = recording(child, child.call)
        first, second = str(pred_file(label_array)), str(pred_file(label_array, team="other"))
        h1, h2 = two.call("peek", first), two.call("peek", second, "AB")
        s2, s1 = two.call("score", second, "AB", h2), two.call("score", first, "AB", h1)
    assert s1["public"]["miou"] == s2["public"]["miou"] == 1.0
    (_, a), (_, b) = served[:2]
    assert a != b and served[2:] == [("score", b), ("score", a)]


# --- quotas ----------------------------------------------------------------------------------------

def test_quota_429_says_when_it_resets(make_client, label_array, pred_file):
    client = make_client(quota_per_day=2)
    h = add_team(client)
    # three different files (an identical one would get 409, free of charge: see test_server_limits.py)
    paths = [pred_file(label_array, team=f"copy {i}") for i in range(3)]
    path = paths[0]
    assert [post(client, h, p).status_code for p in paths[:2]] == [201, 201]
    r = post(client, h, paths[2])
    assert r.status_code == 429
    midnight = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert midnight in r.json()["detail"] and "quota" in r.json()["detail"]
    # another team has its own quota
    assert post(client, add_team(client, "beta"), path).status_code == 201


def test_failed_attempts_have_their_own_daily_cap(make_client, label_array, pred_file):
    client = make_client(failed_per_day=2)
    h = add_team(client)
    junk = {"file": ("p.h5", b"junk")}
    codes = [client.post("/api/v1/submissions", headers=h, files=junk).status_code for _ in range(3)]
    assert codes == [422, 422, 429]
    r = post(client, h, pred_file(label_array))
    assert r.status_code == 429 and "refused uploads" in r.json()["detail"]


def test_reservations_are_atomic_across_threads(make_client):
    """Many threads reserving slots for one team at once: exactly `quota` succeed."""
    from concurrent.futures import ThreadPoolExecutor

    client = make_client()
    add_team(client)
    sessions = client.app.state.services.sessions
    with sessions() as s:
        team_id = crud.get_team(s, "alpha").id

    def attempt(_):
        with sessions() as s:
            try:
                crud.reserve_slot(s, team_id, "AB", 3, 60)
                return True
            except crud.QuotaExceeded:
                return False

    with ThreadPoolExecutor(12) as ex:
        results = list(ex.map(attempt, range(24)))
    assert sum(results) == 3


# --- phases and the board ----------------------------------------------------------------------

def test_closed_track_refuses_and_final_shows_private(client, label_array, pred_file, tmp_path):
    h = add_team(client)
    noisy = pred_file(shuffled(label_array))
    sid = post(client, h, noisy).json()["id"]
    for phase, code in (("closed", 403), ("final", 403), ("open", 201)):
        with client.app.state.services.sessions() as s:
            crud.set_phase(s, "AB", phase)
        client.app.state.services.boards.invalidate()
        assert post(client, h, pred_file(label_array)).status_code == code
    board = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    assert board["ranked_by"] == "public" and board["entries"][0]["private"] is None
    with client.app.state.services.sessions() as s:
        crud.set_phase(s, "AB", "final")
    client.app.state.services.boards.invalidate()
    board = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    assert board["phase"] == "final" and board["ranked_by"] == "private"
    assert board["entries"][0]["private"]["miou"] == 1.0
    private = client.get(f"/api/v1/submissions/{sid}", headers=h).json()["private_scores"]
    mask = public_mask(SHAPE, "AB", seed=SPLIT["split_seed"], block=BLOCK, fraction=0.5)
    assert served_part(private) == as_served(scores_by_part(noisy, label_array, mask, tmp_path)["private"])
    assert "Private mIoU" in client.get("/").text
    assert "private_miou" in client.get("/api/v1/leaderboard.csv", params={"track": "AB"}).text


def test_leaderboard_best_per_team_ties_and_baseline(client, label_array, pred_file):
    ha, hb, hbase = add_team(client, "alpha"), add_team(client, "beta"), add_team(client, "HighDAN", baseline=True)
    worse, better = shuffled(label_array, 1), label_array
    post(client, ha, pred_file(worse))
    post(client, ha, pred_file(better))  # alpha's best is perfect
    post(client, hb, pred_file(better))  # beta ties alpha on mIoU and OA, but later
    post(client, hbase, pred_file(worse))
    board = client.get("/api/v1/leaderboard", params={"track": "AB"}).json()
    # Baselines are shown in place but not ranked (rank null).
    assert [(e["rank"], e["team"], e["baseline"], e["submissions"]) for e in board["entries"]] == [
        (1, "alpha", False, 2), (2, "beta", False, 1), (None, "HighDAN", True, 1)]
    assert board["entries"][0]["public"]["miou"] == 1.0
    text = client.get("/api/v1/leaderboard.csv", params={"track": "AB"}).text.splitlines()
    assert text[0].startswith("rank,team,baseline") and len(text) == 4
    head = text[0].split(",")
    assert [c for c in head if c.startswith("public_iou_")] == [f"public_iou_{n}" for n in CLASS_NAMES]
    assert text[3].startswith(",HighDAN,1,1,")  # no rank: a baseline


def test_csv_cells_cannot_become_spreadsheet_formulas(client, label_array, pred_file):
    post(client, add_team(client, "=HYPERLINK(\"http://x\")"), pred_file(label_array))
    line = client.get("/api/v1/leaderboard.csv", params={"track": "AB"}).text.splitlines()[1]
    assert "'=HYPERLINK" in line


def test_unknown_or_unserved_track(client):
    r = client.get("/api/v1/leaderboard", params={"track": "BW"})
    assert r.status_code == 404 and "not served" in r.json()["detail"]
    r = client.get("/api/v1/leaderboard", params={"track": "XY"})
    assert r.status_code == 422 and r.json()["detail"] == "query.track: Input should be 'AB' or 'BW'"
    assert client.get("/api/v1/leaderboard").status_code == 422


def test_page_escapes_names_sends_security_headers_and_class_colours(client, label_array, pred_file):
    evil = "<script>alert(1)</script>"
    post(client, add_team(client, evil), pred_file(label_array))
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert evil not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in r.headers
    pre = client.options("/api/v1/leaderboard", headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers
    assert 'name="viewport"' in r.text
    for c in EVAL_CLASSES:  # one header per class, coloured by the class table
        assert f'class="cls c{c.id}"' in r.text
    css = client.get("/classes.css").text
    for c in EVAL_CLASSES:
        assert re.search(rf"th\.cls\.c{c.id}\{{background:{c.colour};", css)
    assert client.get("/static/style.css").status_code == 200


@pytest.mark.parametrize("name", ["", " ", "x" * 101, "two\nlines", "tab\there"])
def test_team_names_are_one_printable_line(client, name):
    with client.app.state.services.sessions() as s, pytest.raises(ValueError):
        crud.add_team(s, name)


def test_health_tracks_and_me(client):
    h = add_team(client)
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["tracks"][0]["shape"] == list(SHAPE)
    me = client.get("/api/v1/me", headers=h).json()
    assert me["team"] == "alpha" and me["quota"][0]["left_today"] == 5


def test_board_cache_builds_once_per_burst_and_reads_your_writes(monkeypatch):
    import threading
    import time as _time

    from c2seg_server import board as board_mod

    builds = []

    def slow_build(s, track):
        builds.append(track)
        _time.sleep(0.2)
        return board_mod.Leaderboard(track=track, phase="open", ranked_by="public", entries=[])

    class NoSession:
        def __enter__(self):
            return None

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(board_mod, "build_board", slow_build)
    cache = board_mod.BoardCache(ttl_s=60)
    threads = [threading.Thread(target=cache.get, args=(NoSession, "AB")) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == ["AB"]  # eight readers, one query
    assert cache.fresh("AB") is not None
    cache.invalidate("AB")  # a write: the cached board is no longer current
    assert cache.fresh("AB") is None
    cache.get(NoSession, "AB")
    assert builds == ["AB", "AB"]
    # A write landing while a build runs: that build is not cached as current.
    t = threading.Thread(target=cache.get, args=(NoSession, "AB"))
    cache.invalidate("AB")
    t.start()
    _time.sleep(0.05)
    cache.invalidate("AB")
    t.join()
    assert cache.fresh("AB") is None
