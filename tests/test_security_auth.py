"""Promise 4: quotas and auth hold under pressure, against a real `c2seg serve`.

N uploads fired at once with K quota slots left: exactly K are accepted. Invalid and revoked
tokens, other teams' submission ids and private scores before the final phase are refused.
Tokens are stored only as their SHA-256 (the database file is searched for them byte by byte).
"""

from __future__ import annotations

import hashlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import auth, live_server_fixtures, noisy_prediction, upload  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

QUOTA = 5
SHAPE = (300, 200)


# Uploads per team at once raised past the 10 fired together, so that all of them race for the
# quota (the default cap of 2 at once is tested in test_server_limits.py).
target, server, client = live_server_fixtures(shape=SHAPE, env={"C2SEG_QUOTA_PER_DAY": str(QUOTA),
                                                                "C2SEG_UPLOADS_PER_TEAM": "16"})


@pytest.fixture(scope="module")
def files(tmp_path_factory, target):
    folder = tmp_path_factory.mktemp("preds")
    return [write_submission(folder / f"p{i}.h5", noisy_prediction(target.label, i), "AB") for i in range(12)]


def test_n_parallel_uploads_with_k_slots_left_accept_exactly_k(server, files):
    token = server.add_team("racer")
    accepted = []
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for f in files[:2]:
            r = upload(c, token, f)
            assert r.status_code == 201
            accepted.append(r.json()["id"])
    k, n = QUOTA - 2, 10

    def one(i):
        with httpx.Client(base_url=server.url, timeout=120) as c:
            return upload(c, token, files[2 + i])

    with ThreadPoolExecutor(n) as ex:
        answers = list(ex.map(one, range(n)))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * k + [429] * (n - k), codes
    assert all("resets at" in r.json()["detail"] for r in answers if r.status_code == 429)
    with httpx.Client(base_url=server.url) as c:
        me = c.get("/api/v1/me", headers=auth(token)).json()
        assert me["quota"][0]["used_today"] == QUOTA and me["quota"][0]["left_today"] == 0
        accepted += [r.json()["id"] for r in answers if r.status_code == 201]
        assert sorted(s["id"] for s in c.get("/api/v1/submissions", headers=auth(token)).json()) == sorted(accepted)
        assert len(accepted) == QUOTA


@pytest.mark.parametrize("header", [
    None, "Bearer", "Bearer c2s_a c2s_b", "Basic dXNlcjpwYXNz", "Bearer c2s_not-a-real-token",
    "Bearer " + "x" * 5000, "bearer\tc2s_tab", "Bearer c2s_\u00e9t\u00e9",
], ids=["missing", "empty", "two-words", "basic", "unknown", "huge", "tab", "non-ascii"])
def test_invalid_tokens_are_refused_everywhere(header, client, files):
    headers = {} if header is None else {"Authorization": header.encode("utf-8")}
    for method, url in (("GET", "/api/v1/me"), ("GET", "/api/v1/submissions"), ("GET", "/api/v1/submissions/1")):
        r = client.request(method, url, headers=headers)
        assert r.status_code == 401, (url, r.text)
    r = client.post("/api/v1/submissions", headers=headers, files={"file": ("p.h5", files[0].read_bytes())})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


def test_revoked_tokens_are_refused_at_once(server, client, files):
    token = server.add_team("leaver")
    assert upload(client, token, files[0]).status_code == 201
    server.revoke("leaver")
    assert upload(client, token, files[1]).status_code == 401
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401
    assert client.get("/api/v1/submissions", headers=auth(token)).status_code == 401


def test_other_teams_submissions_are_invisible(server, client, files):
    a, b = server.add_team("team-a"), server.add_team("team-b")
    sub_a = upload(client, a, files[3]).json()["id"]
    missing = client.get("/api/v1/submissions/999999", headers=auth(b))
    other = client.get(f"/api/v1/submissions/{sub_a}", headers=auth(b))
    # Same answer as for an id that does not exist: existence is not revealed.
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace(str(sub_a), "N") == missing.json()["detail"].replace("999999", "N")
    assert client.get("/api/v1/submissions", headers=auth(b)).json() == []  # team-b sent nothing
    assert client.get(f"/api/v1/submissions/{sub_a}", headers=auth(a)).status_code == 200
    # Ids that are no id at all are refused by validation, before any query runs.
    not_an_int = "Input should be a valid integer, unable to parse string as an integer"
    for bad, why in (("0", "Input should be greater than or equal to 1"),
                     ("-1", "Input should be greater than or equal to 1"),
                     ("abc", not_an_int), ("1e3", not_an_int), ("1;DROP TABLE teams", not_an_int),
                     (str(2**63), "Input should be less than or equal to 2147483647")):
        r = client.get(f"/api/v1/submissions/{bad}", headers=auth(a))
        assert (r.status_code, r.json()["detail"]) == (422, f"path.submission_id: {why}"), bad


def test_private_scores_stay_hidden_until_the_final_phase(server, client, files):
    token = server.add_team("curious")
    r = upload(client, token, files[4])
    sid = r.json()["id"]
    assert r.json()["private_scores"] is None
    hidden = [
        client.get(f"/api/v1/submissions/{sid}", headers=auth(token)).json()["private_scores"],
        *[s["private_scores"] for s in client.get("/api/v1/submissions", headers=auth(token)).json()],
        *[e["private"] for e in client.get("/api/v1/leaderboard", params={"track": "AB"}).json()["entries"]],
    ]
    assert hidden and all(h is None for h in hidden)
    csv_head = client.get("/api/v1/leaderboard.csv", params={"track": "AB"}).text.splitlines()[0]
    assert "private" not in csv_head and "Private mIoU" not in client.get("/").text
    for phase in ("closed", "final"):
        server.set_phase("AB", phase)
        shown = client.get(f"/api/v1/submissions/{sid}", headers=auth(token)).json()["private_scores"]
        assert (shown is None) == (phase == "closed")  # the positive control: final shows them
    assert "Private mIoU" in client.get("/").text
    assert upload(client, token, files[5]).status_code == 403  # not open: nothing is scored
    server.set_phase("AB", "open")


def test_tokens_are_stored_only_as_hashes(server):
    tokens = [server.add_team(f"hash-{i}") for i in range(3)]
    db = server.data_dir / "c2seg.db"
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(FULL)")
        rows = dict(con.execute("SELECT name, token_hash FROM teams WHERE name LIKE 'hash-%'").fetchall())
    assert sorted(rows.values()) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in tokens)
    raw = b"".join(p.read_bytes() for p in server.data_dir.glob("c2seg.db*"))
    for t in tokens:
        assert t.encode() not in raw and t[4:].encode() not in raw
    assert server.add_team("hash-x") not in server.log()
