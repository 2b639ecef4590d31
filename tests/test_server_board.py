"""The leaderboard features through the API (TestClient): submission metadata, final picks and the private
ranking, scheduled phases and per-phase caps, hidden submissions and disqualified teams,
unranked baselines, sorting, the combined view, duplicates.

Predictions are built against the public/private block mask, so which submission wins where
is known in advance: a prediction perfect on the public blocks and wrong on the private ones
(and the reverse) makes the final-pick rule visible in the numbers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_server import crud, organizer, phases  # noqa: E402
from c2seg_server.config import Settings  # noqa: E402
from c2seg_server.main import create_app, make_pool, served_tracks  # noqa: E402
from c2seg_server.models import Submission  # noqa: E402
from c2seg_server.ranking import sort_board  # noqa: E402
from c2seg_server.scoring import public_mask  # noqa: E402

SHAPES = {"AB": (64, 48), "BW": (48, 40)}
BLOCK = 16
SPLIT = dict(split_block=BLOCK, split_seed=5, public_fraction=0.5)


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    out = {}
    for i, (track, shape) in enumerate(SHAPES.items()):
        lab = np.random.default_rng(i).integers(1, 14, shape).astype(np.uint8)
        path = folder / f"labels_{track}.h5"
        write_labels(path, lab, track)
        out[track] = (path, lab)
    return out


@pytest.fixture(scope="module")
def pool(labels):
    settings = Settings(labels=[p for p, _ in labels.values()], scoring_workers=1, **SPLIT)
    with make_pool(settings, served_tracks(settings.labels)) as p:
        yield p


class CountingPool:
    """The module's pool, counting the scoring calls (to show a refusal cost no scoring)."""

    def __init__(self, inner):
        self.inner, self.size, self.calls = inner, inner.size, 0

    def call(self, *args, **kwargs):
        self.calls += 1
        return self.inner.call(*args, **kwargs)


@pytest.fixture
def make_client(tmp_path, labels, pool):
    clients = []

    def make(tracks=("AB", "BW"), **overrides) -> TestClient:
        settings = Settings(labels=[labels[t][0] for t in tracks], data_dir=tmp_path / f"data{len(clients)}",
                            leaderboard_cache_s=0, **{**SPLIT, **overrides})
        client = TestClient(create_app(settings, pool=CountingPool(pool)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def add_team(client, name, baseline=False) -> dict:
    with client.app.state.services.sessions() as s:
        _, token = crud.add_team(s, name, baseline=baseline)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def pred(tmp_path, labels):
    """Factory: a submission file for `track` whose pixels are right where `right` says (a mask,
    "public", "private", "all" or a fraction of random pixels) and wrong elsewhere."""
    counter = iter(range(10**6))

    def make(track="AB", right="all", seed=0, **kw):
        lab = labels[track][1]
        mask = public_mask(lab.shape, track, seed=SPLIT["split_seed"], block=BLOCK, fraction=0.5)
        if isinstance(right, str):
            right = {"all": np.ones_like(mask), "public": mask, "private": ~mask, "none": np.zeros_like(mask)}[right]
        elif isinstance(right, float):
            right = np.random.default_rng(seed).random(lab.shape) < right
        wrong = (lab % 13) + 1  # always another class
        n = next(counter)
        path = tmp_path / f"pred{n}.h5"
        kw.setdefault("team", f"file {n}")  # every file its own bytes: a team's identical re-upload is a 409
        write_submission(path, np.where(right, lab, wrong).astype(np.uint8), track, **kw)
        return path

    return make


def post(client, headers, path, **fields):
    with open(path, "rb") as f:
        return client.post("/api/v1/submissions", headers=headers, data=fields,
                           files={"file": ("predictions.h5", f, "application/x-hdf5")})


def board(client, track="AB", **params):
    r = client.get("/api/v1/leaderboard", params={"track": track, **params})
    assert r.status_code == 200, r.text
    return r.json()


def set_phase(client, track, phase, **kw):
    with client.app.state.services.sessions() as s:
        phases.schedule(s, track, phase, **kw)


def me(client, h, track="AB"):
    return next(q for q in client.get("/api/v1/me", headers=h).json()["quota"] if q["track"] == track)


# --- 1. metadata ------------------------------------------------------------------------------------

def test_metadata_at_submit_is_shown_on_the_board_the_api_and_the_page(client, pred):
    h = add_team(client, "alpha")
    r = post(client, h, pred(), method=" HighDAN+ ", description="Two stages.\nThen pseudo-labels.",
             url="https://example.org/paper?id=1&v=2")
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["method"], body["description"], body["url"]) == (
        "HighDAN+", "Two stages.\nThen pseudo-labels.", "https://example.org/paper?id=1&v=2")
    entry = board(client)["entries"][0]
    assert (entry["method"], entry["description"], entry["url"]) == (body["method"], body["description"], body["url"])
    assert client.get(f"/api/v1/submissions/{body['id']}", headers=h).json()["url"] == body["url"]
    page = client.get("/?track=AB").text
    assert ('<a href="https://example.org/paper?id=1&amp;v=2" rel="nofollow ugc noopener noreferrer">HighDAN+</a>'
            in page)
    assert "<details><summary>about</summary><p>Two stages.\nThen pseudo-labels.</p></details>" in page


def test_the_files_method_attribute_is_the_fallback(client, pred):
    h = add_team(client, "alpha")
    assert post(client, h, pred(method="from-the-file")).json()["method"] == "from-the-file"
    assert post(client, h, pred(method="from-the-file"), method="typed").json()["method"] == "typed"
    assert post(client, h, pred()).json()["method"] is None


@pytest.mark.parametrize("fields, status, words", [
    ({"method": "High\u202eNAD"}, 422, "control character (U+202E)"),
    ({"method": "two\nlines"}, 422, "line break"),
    ({"method": "x" * 101}, 422, "at most 100"),
    ({"description": "d" * 1001}, 422, "at most 1000"),
    ({"description": "bell\x07"}, 422, "U+0007"),
    ({"url": "javascript:alert(1)"}, 422, "http:// or https://"),
    ({"url": 'https://x.org/"onclick=alert(1)'}, 422, "http:// or https://"),
    ({"method": "m" * 2000}, 422, "longer than this server accepts"),
])
def test_hostile_metadata_is_refused_before_scoring_and_costs_nothing(client, pred, fields, status, words):
    h = add_team(client, "alpha")
    r = post(client, h, pred(), **fields)
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert "\n" not in r.json()["detail"]
    assert client.app.state.services.pool.calls == 0  # not even the header was read
    q = client.get("/api/v1/me", headers=h).json()
    assert q["quota"][0]["used_today"] == 0 and q["failed_today"] == 0


def test_metadata_that_is_not_utf8_or_given_twice_is_refused(client, pred):
    h = add_team(client, "alpha")
    data = pred().read_bytes()
    r = client.post("/api/v1/submissions", headers=h, files=[
        ("method", (None, b"\xff\xfe bad", "text/plain")), ("file", ("p.h5", data, "application/x-hdf5"))])
    assert r.status_code == 422 and "UTF-8" in r.json()["detail"]
    r = client.post("/api/v1/submissions", headers=h, files=[
        ("url", (None, b"https://a.org")), ("url", (None, b"https://b.org")), ("file", ("p.h5", data))])
    assert r.status_code == 400 and "twice" in r.json()["detail"]


def test_a_team_edits_its_own_metadata_and_nobody_elses(client, pred):
    ha, hb = add_team(client, "alpha"), add_team(client, "beta")
    sid = post(client, ha, pred(), method="first", url="https://a.org").json()["id"]
    r = client.patch(f"/api/v1/submissions/{sid}", headers=ha, json={"method": "second", "description": "new"})
    assert r.status_code == 200 and (r.json()["method"], r.json()["description"], r.json()["url"]) == (
        "second", "new", "https://a.org")  # a field left out stays
    assert board(client)["entries"][0]["method"] == "second"  # the board shows the edit at once
    r = client.patch(f"/api/v1/submissions/{sid}", headers=ha, json={"url": None, "description": ""})
    assert (r.json()["url"], r.json()["description"]) == (None, None)
    # Another team's id is a 404 worded exactly like a missing one: existence is not revealed.
    theirs = client.patch(f"/api/v1/submissions/{sid}", headers=hb, json={"method": "mine now"})
    missing = client.patch("/api/v1/submissions/999999", headers=hb, json={"method": "mine now"})
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(str(sid), "N") == missing.json()["detail"].replace("999999", "N")
    assert client.get(f"/api/v1/submissions/{sid}", headers=ha).json()["method"] == "second"
    for bad in ({"method": "a\u2066b"}, {"url": "ftp://x.org"}, {"team": "beta"}, {"method": "x" * 101}):
        r = client.patch(f"/api/v1/submissions/{sid}", headers=ha, json=bad)
        assert r.status_code == 422 and isinstance(r.json()["detail"], str), (bad, r.text)
    assert client.patch(f"/api/v1/submissions/{sid}", json={"method": "x"}).status_code == 401


# --- 2. final picks -----------------------------------------------------------------------------------

def test_final_picks_decide_the_private_ranking_and_default_to_the_best_public(client, pred):
    ha, hb = add_team(client, "alpha"), add_team(client, "beta")
    public_only = post(client, ha, pred(right="public")).json()  # public mIoU 1, private 0
    private_only = post(client, ha, pred(right="private")).json()  # public 0, private 1
    middling = post(client, hb, pred(right=0.6, seed=3)).json()
    assert public_only["scores"]["miou"] == 1.0 and private_only["scores"]["miou"] == 0.0
    own = {s["id"]: s for s in client.get("/api/v1/submissions", headers=ha).json()}
    assert own[public_only["id"]]["best_public"] and own[public_only["id"]]["private_candidate"]
    assert not own[private_only["id"]]["private_candidate"]

    # No picks: alpha is represented by its best public submission, whose private score is 0.
    set_phase(client, "AB", "final")
    b = board(client)
    assert b["ranked_by"] == "private"
    assert [(e["rank"], e["team"], e["selected"], e["private"]["miou"]) for e in b["entries"]] == [
        (1, "beta", False, b["entries"][0]["private"]["miou"]), (2, "alpha", False, 0.0)]
    assert "best public" in client.get("/?track=AB").text

    # Picking is refused once the track is no longer open.
    r = client.put("/api/v1/final-picks/AB", headers=ha, json={"ids": [private_only["id"]]})
    assert r.status_code == 403 and "closed with the open phase" in r.json()["detail"]

    # While open, alpha picks both: the best of its picks by private score counts.
    set_phase(client, "AB", "open")
    r = client.put("/api/v1/final-picks/AB", headers=ha, json={"ids": [public_only["id"], private_only["id"]]})
    assert r.status_code == 200 and r.json()["ids"] == sorted([public_only["id"], private_only["id"]])
    assert me(client, ha)["final_picks"] == sorted([public_only["id"], private_only["id"]])
    set_phase(client, "AB", "final")
    b = board(client)
    assert [(e["rank"], e["team"], e["selected"]) for e in b["entries"]] == [(1, "alpha", True), (2, "beta", False)]
    assert b["entries"][0]["private"]["miou"] == 1.0 and b["entries"][0]["public"]["miou"] == 0.0
    assert middling["id"] not in me(client, ha)["final_picks"]


def test_final_pick_requests_are_checked(client, pred):
    ha, hb = add_team(client, "alpha"), add_team(client, "beta")
    a = [post(client, ha, pred(seed=i, right=0.5)).json()["id"] for i in range(3)]
    a_bw = post(client, ha, pred("BW")).json()["id"]
    b = post(client, hb, pred()).json()["id"]
    cases = [
        ({"ids": a}, 422, "at most 2"),
        ({"ids": [a[0], a_bw]}, 422, "on track BW"),
        ({"ids": [a[0], a[0]]}, 422, "twice"),
        ({"ids": [b]}, 404, f"you have no submission {b}"),
        ({"ids": [999999]}, 404, "you have no submission 999999"),
        ({"ids": [0]}, 422, ""),
        ({"picks": [a[0]]}, 422, ""),
    ]
    for body, status, words in cases:
        r = client.put("/api/v1/final-picks/AB", headers=ha, json=body)
        assert r.status_code == status and words in r.json()["detail"], (body, r.text)
    assert me(client, ha)["final_picks"] == []  # nothing half-applied
    assert client.put("/api/v1/final-picks/AB", headers=ha, json={"ids": [a[1]]}).status_code == 200
    assert client.put("/api/v1/final-picks/BW", headers=ha, json={"ids": [a_bw]}).status_code == 200
    assert me(client, ha)["final_picks"] == [a[1]] and me(client, ha, "BW")["final_picks"] == [a_bw]
    assert client.put("/api/v1/final-picks/AB", headers=ha, json={"ids": []}).json()["ids"] == []
    assert me(client, ha)["final_picks"] == [] and me(client, ha, "BW")["final_picks"] == [a_bw]


def test_the_number_of_picks_is_a_setting(make_client, pred):
    client = make_client(final_picks=3)
    h = add_team(client, "alpha")
    ids = [post(client, h, pred(seed=i, right=0.5)).json()["id"] for i in range(3)]
    assert client.put("/api/v1/final-picks/AB", headers=h, json={"ids": ids}).json()["max"] == 3
    assert client.get("/openapi.json").json()["components"]["schemas"]["FinalPicksIn"]["properties"]["ids"][
        "maxItems"] == 3


# --- 3. scheduled phases and the per-phase cap ----------------------------------------------------

def test_a_scheduled_change_applies_on_time_without_a_restart(client, pred):
    h = add_team(client, "alpha")
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1.5)
    set_phase(client, "AB", "closed", at=at)
    q = me(client, h)
    assert (q["phase"], q["next_phase"]) == ("open", "closed")
    assert abs(dt.datetime.fromisoformat(q["phase_ends"]) - at) < dt.timedelta(milliseconds=1)
    assert post(client, h, pred()).status_code == 201
    time.sleep(max(0.0, (at - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.1)
    r = post(client, h, pred())
    assert r.status_code == 403 and "track AB is closed" in r.json()["detail"]
    assert me(client, h)["phase"] == "closed" and me(client, h)["phase_ends"] is None
    assert client.get("/healthz").json()["tracks"][0]["phase"] == "closed"


def test_the_per_phase_cap_and_what_the_429_says(make_client, pred):
    client = make_client(quota_per_day=3)
    h = add_team(client, "alpha")
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(microsecond=0)
    set_phase(client, "AB", "open", cap=2)
    set_phase(client, "AB", "closed", at=ends)
    assert [post(client, h, pred()).status_code for _ in range(2)] == [201, 201]
    r = post(client, h, pred())
    detail = r.json()["detail"]
    assert r.status_code == 429 and "quota for this phase of track AB is used up (2 of 2 in this phase)" in detail
    assert "does not reset before the phase ends" in detail and f"the phase ends at {phases.iso(ends)}" in detail
    assert "retry-after" not in r.headers
    q = me(client, h)
    assert (q["phase_cap"], q["used_phase"], q["left_phase"], q["used_today"], q["left_today"]) == (2, 2, 0, 2, 1)
    assert post(client, h, pred("BW")).status_code == 201  # the cap is per track
    # A new open phase starts a new count (the daily quota still holds: 1 left today).
    set_phase(client, "AB", "closed")
    set_phase(client, "AB", "open", cap=5)
    assert me(client, h)["used_phase"] == 0
    assert post(client, h, pred()).status_code == 201
    r = post(client, h, pred())
    midnight = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert r.status_code == 429 and f"it resets at {midnight}" in r.json()["detail"]
    assert f"the phase ends at {phases.iso(ends)}" in r.json()["detail"]
    assert 0 < int(r.headers["retry-after"]) <= 86400


def test_phase_times_must_be_utc_and_ahead(client):
    with client.app.state.services.sessions() as s:
        with pytest.raises(ValueError, match="in the past"):
            phases.schedule(s, "AB", "closed", at=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
        with pytest.raises(ValueError, match="phase must be one of"):
            phases.schedule(s, "AB", "paused")
    assert phases.parse_utc("2026-12-01T00:00Z") == dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    for bad in ("2026-12-01T00:00", "2026-12-01T01:00+01:00", "tomorrow", ""):
        with pytest.raises(ValueError):
            phases.parse_utc(bad)


# --- 5. organizer tools seen from the API -------------------------------------------------------------

def test_hidden_submissions_and_disqualified_teams_are_off_the_board_but_kept(client, pred):
    ha, hb, hc = add_team(client, "alpha"), add_team(client, "beta"), add_team(client, "gamma")
    best = post(client, ha, pred()).json()["id"]
    post(client, ha, pred(right=0.5, seed=1))
    post(client, hb, pred(right=0.7, seed=2))
    post(client, hc, pred(right=0.3, seed=3))
    with client.app.state.services.sessions() as s:
        organizer.set_hidden(s, best, True)
        organizer.disqualify(s, "beta", "identical predictions to another team")
    entries = board(client)["entries"]
    assert [(e["rank"], e["team"], e["submissions"]) for e in entries] == [(1, "alpha", 1), (2, "gamma", 1)]
    assert entries[0]["public"]["miou"] < 1.0  # alpha's visible submission, not the hidden perfect one
    own = {s["id"]: s for s in client.get("/api/v1/submissions", headers=ha).json()}
    assert own[best]["status"] == "hidden" and not own[best]["best_public"]
    assert "beta" not in client.get("/?track=AB").text
    assert "beta" not in [e["team"] for e in client.get("/api/v1/leaderboard/combined").json()["entries"]]
    r = post(client, hb, pred())
    assert r.status_code == 403 and "disqualified: identical predictions to another team" in r.json()["detail"]
    assert client.get("/api/v1/me", headers=hb).json()["disqualified"] == "identical predictions to another team"
    assert client.put("/api/v1/final-picks/AB", headers=hb, json={"ids": []}).status_code == 403
    with client.app.state.services.sessions() as s:
        assert s.query(Submission).count() == 4  # nothing deleted
        organizer.set_hidden(s, best, False)
        organizer.reinstate(s, "beta")
    assert [e["team"] for e in board(client)["entries"]] == ["alpha", "beta", "gamma"]
    assert client.get("/api/v1/me", headers=hb).json()["disqualified"] is None


def test_duplicates_by_file_and_by_content(client, pred, tmp_path, labels):
    ha, hb, hc = add_team(client, "alpha"), add_team(client, "beta"), add_team(client, "gamma")
    same = pred(right=0.5, seed=9)
    a = post(client, ha, same).json()["id"]
    b = post(client, hb, same).json()["id"]  # the very same bytes
    # gamma: the same prediction stored differently (int16, gzip, other chunks): other bytes
    with h5py.File(same, "r") as f:
        array = f["prediction"][...]
    other = tmp_path / "restored.h5"
    with h5py.File(other, "w") as f:
        f.attrs["c2seg_format"], f.attrs["track"] = "submission/1", "AB"
        f.create_dataset("prediction", data=array.astype(np.int16), compression="gzip", chunks=(16, 48))
    c = post(client, hc, other).json()["id"]
    post(client, ha, pred(right=0.8, seed=1))  # unrelated
    post(client, hb, pred(right=0.8, seed=1, method="other bytes"))  # same content as alpha's, one team each
    with client.app.state.services.sessions() as s:
        groups = organizer.duplicates(s)
        subs = {x.id: x for x in s.query(Submission)}
    assert subs[a].sha256 == subs[b].sha256 != subs[c].sha256
    assert subs[a].content_sha256 == subs[c].content_sha256
    # the oracle: sha256 of the whole raster as uint8, row-major
    assert subs[a].content_sha256 == hashlib.sha256(np.ascontiguousarray(array, np.uint8).tobytes()).hexdigest()
    got = {(g["kind"], frozenset(x["id"] for x in g["submissions"])) for g in groups}
    assert got == {("file", frozenset((a, b))), ("content", frozenset((a, b, c))), ("content", frozenset((4, 5)))}


# --- 6. the board: baselines, sorting, the combined view -------------------------------------------

def test_sorting_reorders_rows_and_keeps_ranks(client, pred):
    heads = {n: add_team(client, n, baseline=n == "HighDAN") for n in ("delta", "alpha", "HighDAN", "charlie")}
    for i, h in enumerate(heads.values()):
        post(client, h, pred(right=0.2 + 0.2 * i, seed=i))
    post(client, heads["delta"], pred(right=0.3, seed=7))  # delta has 2 submissions
    ranked = board(client)["entries"]
    assert [e["rank"] for e in ranked] == [1, None, 2, 3]  # baseline in place, not ranked
    rank_of = {e["team"]: e["rank"] for e in ranked}
    for sort, direction, key in [
        ("team", "asc", lambda e: e["team"].lower()), ("team", "desc", lambda e: e["team"].lower()),
        ("oa", "desc", lambda e: e["public"]["oa"]), ("kappa", "asc", lambda e: e["public"]["kappa"]),
        ("iou_forests", "desc", lambda e: e["public"]["per_class_iou"]["forests"]),
        ("submissions", "desc", lambda e: e["submissions"]), ("created", "asc", lambda e: e["created"]),
    ]:
        b = board(client, sort=sort, dir=direction)
        assert (b["sort"], b["dir"]) == (sort, direction)
        want = sorted(ranked, key=lambda e: e["created"])
        want = sorted(want, key=key, reverse=direction == "desc")
        assert [e["team"] for e in b["entries"]] == [e["team"] for e in want], sort
        assert {e["team"]: e["rank"] for e in b["entries"]} == rank_of
    assert [e["team"] for e in board(client, sort="rank", dir="desc")["entries"]] == [e["team"] for e in ranked[::-1]]
    assert board(client, sort="oa")["dir"] == "desc"  # each column has its natural direction
    for bad in ({"sort": "password"}, {"sort": "miou", "dir": "up"}):
        r = client.get("/api/v1/leaderboard", params={"track": "AB", **bad})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    csv_rows = client.get("/api/v1/leaderboard.csv", params={"track": "AB", "sort": "team"}).text.splitlines()[1:]
    assert [r.split(",")[1] for r in csv_rows] == ["alpha", "charlie", "delta", "HighDAN"]


def test_ties_go_to_the_earlier_submission_in_every_order(client, pred):
    path = pred(right=0.6, seed=4)
    late, early = add_team(client, "zulu"), add_team(client, "able")
    first = post(client, late, path).json()
    second = post(client, early, path).json()
    assert first["scores"] == second["scores"]
    for sort in ("rank", "miou", "oa", "iou_street"):
        for direction in ("asc", "desc"):
            if sort == "rank" and direction == "desc":
                continue
            assert [e["team"] for e in board(client, sort=sort, dir=direction)["entries"]] == ["zulu", "able"]


def test_missing_values_sort_last_in_both_directions():
    from c2seg_server.schemas import Leaderboard, LeaderboardEntry, Scores

    def entry(team, forests, minute):
        sc = Scores(oa=0.5, miou=0.5, f1=0.5, kappa=0.5, per_class_iou={"forests": forests}, n_pixels=10)
        return LeaderboardEntry(rank=1, team=team, baseline=False, submissions=1, public=sc,
                                created=dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc))

    b = Leaderboard(track="AB", phase="open", ranked_by="public",
                    entries=[entry("a", None, 0), entry("b", 0.2, 1), entry("c", 0.9, 2), entry("d", None, 3)])
    assert [e.team for e in sort_board(b, "iou_forests", "desc").entries] == ["c", "b", "a", "d"]
    assert [e.team for e in sort_board(b, "iou_forests", "asc").entries] == ["b", "c", "a", "d"]


def test_combined_view_is_the_mean_of_per_track_ranks(client, pred):
    h = {n: add_team(client, n, baseline=n == "HighDAN") for n in ("alpha", "beta", "gamma", "HighDAN")}
    post(client, h["alpha"], pred("AB", right=0.9, seed=1))  # AB: alpha 1, beta 2, HighDAN between them
    post(client, h["HighDAN"], pred("AB", right=0.7, seed=2))
    post(client, h["beta"], pred("AB", right=0.5, seed=3))
    post(client, h["gamma"], pred("BW", right=0.9, seed=4))  # BW: gamma 1, alpha 2; beta has no BW entry
    post(client, h["alpha"], pred("BW", right=0.6, seed=5))
    cb = client.get("/api/v1/leaderboard/combined").json()
    got = {e["team"]: (e["rank"], e["mean_rank"], e["tracks"]["AB"]["placed"], e["tracks"]["BW"]["placed"])
           for e in cb["entries"]}
    # alpha (1+2)/2; gamma: AB missing, placed one past AB's 2 ranked teams: (3+1)/2; beta: BW missing (3): (2+3)/2;
    # HighDAN: AB place among the ranked = 2 (one ranked team ahead), BW missing = 3: 2.5, shown unranked
    assert got == {"alpha": (1, 1.5, 1, 2), "gamma": (2, 2.0, 3, 1), "beta": (3, 2.5, 2, 3),
                   "HighDAN": (None, 2.5, 2, 3)}
    # HighDAN and beta tie at 2.5: HighDAN's shown submission is the earlier one
    assert [e["team"] for e in cb["entries"]] == ["alpha", "gamma", "HighDAN", "beta"]
    assert cb["entries"][0]["tracks"]["AB"]["rank"] == 1 and cb["entries"][1]["tracks"]["AB"]["rank"] is None
    assert cb["entries"][3]["rank"] == 3  # ranks count participants only
    assert "one past the last ranked team" in cb["rule"]
    by_bw = client.get("/api/v1/leaderboard/combined", params={"sort": "rank_BW"}).json()["entries"]
    assert [e["team"] for e in by_bw] == ["gamma", "alpha", "HighDAN", "beta"]  # the tie keeps the combined order
    page = client.get("/?view=combined").text
    assert "Mean rank" in page and "1.50" in page and 'aria-current="page">Combined' in page
    assert client.get("/api/v1/leaderboard/combined", params={"sort": "nope"}).status_code == 422


def test_page_sort_links_and_fallbacks(client, pred):
    for name, q in (("bravo", 0.4), ("alpha", 0.8)):
        post(client, add_team(client, name), pred(right=q, seed=int(q * 10)))
    page = client.get("/?track=AB&sort=team&dir=desc").text
    assert page.index(">bravo<") < page.index(">alpha<")
    assert 'id="col-team" aria-sort="descending"><a href="?track=AB&amp;sort=team&amp;dir=asc">' in page
    assert 'id="col-oa" aria-sort="none"><a href="?track=AB&amp;sort=oa&amp;dir=desc">' in page
    # Unknown values fall back to the defaults, and nothing of them is echoed.
    odd = client.get('/?track=<x>&sort="><script>&dir=sideways&view=<y>')
    assert odd.status_code == 200 and "<script>" not in odd.text and "<x>" not in odd.text
    assert odd.text.index(">alpha<") < odd.text.index(">bravo<")


def test_phase_boundaries_for_the_per_phase_count(client):
    """Which submissions a phase cap counts: from the change that began the phase; a change to
    the same phase (a new cap) does not restart it, and a track open from the start counts all."""
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

    def at(hours):
        return t0 + dt.timedelta(hours=hours)

    with client.app.state.services.sessions() as s:
        assert phases.state(s, "AB", now=at(0)) == phases.PhaseState("AB", "open", None, None, None, None)
        for hours, phase, cap in ((1, "open", 5), (2, "closed", None), (3, "open", 3), (4, "open", 9), (6, "final", None)):
            phases.schedule(s, "AB", phase, at=at(hours), cap=cap, now=at(0))
        got = [phases.state(s, "AB", now=at(h), default_cap=99) for h in (0.5, 1.5, 2.5, 3.5, 4.5, 7)]
    assert [(g.phase, g.since, g.cap, g.ends, g.next_phase) for g in got] == [
        ("open", None, 99, at(2), "closed"),  # open from the start; the cap change at 1 h is not an end
        ("open", None, 5, at(2), "closed"),  # still the first open phase, now capped at 5
        ("closed", at(2), 99, at(3), "open"),
        ("open", at(3), 3, at(6), "final"),  # a new open phase: counted from 3 h
        ("open", at(3), 9, at(6), "final"),  # a new cap, the same phase
        ("final", at(6), 99, None, None),
    ]


def test_rescoring_fills_the_content_hash_of_older_rows(client, pred):
    """Rows from before the content hash (NULL) get it from a rescore (`c2seg admin rescore`)."""
    h = add_team(client, "alpha")
    path = pred(right=0.5, seed=2)
    sid = post(client, h, path).json()["id"]
    with client.app.state.services.sessions() as s:
        sub = s.get(Submission, sid)
        want, sub.content_sha256 = sub.content_sha256, None
        s.commit()
        crud.set_scores(s, sub, client.app.state.services.pool.call("score", str(path), "AB"))
        s.commit()
        assert len(want) == 64 and s.get(Submission, sid).content_sha256 == want
