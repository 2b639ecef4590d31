"""Every cap on uploads is decided before the work,
against a real `c2seg serve`.

- Refused uploads are counted before they are read (an upload in progress counts), so a burst
  of junk from one team is never all processed: exactly the daily cap of them is.
- A used-up quota, a closed track and a used-up allowance of refused uploads are answered
  before a byte of the body is sent (the head alone gets the answer).
- One team has at most 2 uploads in progress; the next gets 429 at once; others are unaffected;
  the slots come back when the uploads end (also when the client goes away).
- All uploads in progress share a spool budget: past it, 503 with Retry-After, and the spool on
  disk stays within it.
- A byte-identical re-upload gets 409 "identical to submission N", free of charge; `c2seg submit`
  says so in one line.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import (  # noqa: E402
    VARIANT,
    Variants,
    auth,
    connect,
    live_server_fixtures,
    noisy_prediction,
    post_head,
    read_response,
    upload,
)

from c2seg_kit.submission.writers import write_submission  # noqa: E402

CAP = 1 << 20  # largest upload
QUOTA = 3
FAILED = 6  # refused uploads per team and day
SPOOL_MB = 3  # three uploads declaring 1 MiB each fit, a fourth does not
PART = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\n"

target, server, client = live_server_fixtures(shape=(96, 64), client_timeout=30, env={
    "C2SEG_QUOTA_PER_DAY": str(QUOTA), "C2SEG_FAILED_PER_DAY": str(FAILED), "C2SEG_MAX_UPLOAD_BYTES": str(CAP),
    "C2SEG_SPOOL_BUDGET_MB": str(SPOOL_MB), "C2SEG_UPLOAD_TIMEOUT_S": "30", "C2SEG_HEADER_TIMEOUT_S": "30"})


@pytest.fixture(scope="module")
def copies(tmp_path_factory, target):
    path = write_submission(tmp_path_factory.mktemp("p") / "p.h5", noisy_prediction(target.label, 1), "AB",
                            team=VARIANT)
    return Variants(path.read_bytes())


def slots(server, team: str | None = None) -> list:
    """The upload slots held now (of one team), straight from the database."""
    from sqlalchemy import select

    from c2seg_server.models import Team, UploadSlot

    with server.session() as s:
        q = select(UploadSlot)
        if team is not None:
            q = q.join(Team, Team.id == UploadSlot.team_id).where(Team.name == team)
        return list(s.scalars(q))


def wait_for(predicate, timeout_s: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stall(server, token: str, length: int, body_bytes: int = 1000, target: str = "/api/v1/submissions"):
    """An upload that sends its head and the first `body_bytes` of its body, then nothing."""
    s = connect(server, timeout=10)
    s.sendall(post_head(token, length, target=target) + PART + b"\0" * body_bytes)
    return s


def head_only(server, token: str, length: int = 500_000, target: str = "/api/v1/submissions"):
    """(status, response) for an upload's head alone: any answer came before the body was sent."""
    with connect(server, timeout=8) as s:
        s.sendall(post_head(token, length, target=target))
        return read_response(s)


def me(client, token) -> dict:
    return client.get("/api/v1/me", headers=auth(token)).json()


def test_a_burst_of_junk_processes_no_more_than_the_cap_of_refused_uploads(server, client):
    """40 junk uploads at once from one team: before, all 40 were read by a scoring child (the cap
    was checked before and counted after); now exactly FAILED are, over the burst and after it."""
    token = server.add_team("junk")

    def one(_):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            return upload(c, token, b"not an HDF5 file" * 100)

    with ThreadPoolExecutor(40) as ex:
        answers = list(ex.map(one, range(40)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {422, 429} and codes.count(422) <= FAILED, codes
    assert all("in progress" in r.json()["detail"] or "refused uploads" in r.json()["detail"]
               for r in answers if r.status_code == 429)
    refused = codes.count(422)
    assert me(client, token)["failed_today"] == refused  # each read one recorded, nothing else
    while True:  # one at a time until the cap answers
        r = upload(client, token, b"still not HDF5")
        if r.status_code == 429:
            break
        assert r.status_code == 422
        refused += 1
    assert refused == FAILED and "refused uploads is used up (6 of 6 today" in r.json()["detail"], r.text
    assert me(client, token)["failed_today"] == FAILED
    assert slots(server, "junk") == []


def test_quota_closed_track_and_refused_cap_are_answered_before_the_body(server, client, copies):
    full = server.add_team("full")
    for _ in range(QUOTA):
        assert upload(client, full, copies.next()).status_code == 201
    status, data = head_only(server, full)
    assert status == 429 and b"daily quota for track AB is used up (3 of 3 today)" in data, data[:400]
    assert b"retry-after:" in data.lower()

    junk = server.add_team("junk-2")
    for _ in range(FAILED):
        assert upload(client, junk, b"junk").status_code == 422
    status, data = head_only(server, junk)
    assert status == 429 and b"refused uploads is used up (6 of 6 today" in data, data[:400]

    fresh = server.add_team("fresh")
    status, data = head_only(server, fresh, target="/api/v1/submissions?track=BW")
    assert status == 404 and b"track BW is not served here" in data, data[:400]
    server.set_phase("AB", "closed")
    try:
        for where in ("/api/v1/submissions", "/api/v1/submissions?track=AB"):
            status, data = head_only(server, fresh, target=where)
            assert status == 403 and b"track AB is closed" in data, (where, data[:400])
    finally:
        server.set_phase("AB", "open")
    assert slots(server) == [] and me(client, fresh)["quota"][0]["used_today"] == 0
    assert me(client, fresh)["failed_today"] == 0  # decided before the work: nothing to charge


def test_one_team_has_at_most_two_uploads_in_progress(server, client, copies):
    busy, other = server.add_team("busy"), server.add_team("other")
    held = [stall(server, busy, 500_000) for _ in range(2)]
    try:
        wait_for(lambda: len(slots(server, "busy")) == 2, what="two upload slots")
        status, data = head_only(server, busy)
        assert status == 429 and b"2 uploads of your team are in progress (at most 2 at once)" in data, data[:400]
        assert b"retry-after: 5" in data.lower()
        assert upload(client, other, copies.next()).status_code == 201  # another team is not held up
    finally:
        for s in held:
            s.close()
    # The client went away: the server notices, and the slots are freed (nothing charged).
    wait_for(lambda: slots(server, "busy") == [], what="the slots to be freed")
    assert upload(client, busy, copies.next()).status_code == 201
    assert me(client, busy)["failed_today"] == 0


def test_the_spool_has_a_budget(server, client, copies):
    """Three uploads declaring 1 MiB each fill the 3 MiB budget: a fourth (of another team, or
    chunked with no length at all) gets 503 with Retry-After, and the spool on disk stays within it."""
    a, b, c = server.add_team("spool-a"), server.add_team("spool-b"), server.add_team("spool-c")
    held = [stall(server, a, CAP, body_bytes=900_000), stall(server, a, CAP, body_bytes=900_000),
            stall(server, b, CAP, body_bytes=900_000)]
    try:
        wait_for(lambda: len(slots(server)) == 3, what="three upload slots")
        status, data = head_only(server, c, length=50_000)
        assert status == 503 and b"spool is full" in data and b"retry-after: 30" in data.lower(), data[:400]
        spool = server.data_dir / "spool"
        wait_for(lambda: sum(f.stat().st_size for f in spool.glob("upload-*")) >= 3 * 800_000, what="spooled bytes")
        assert sum(f.stat().st_size for f in spool.glob("upload-*")) <= SPOOL_MB * 2**20
    finally:
        for s in held:
            s.close()
    wait_for(lambda: slots(server) == [], what="the slots to be freed")
    assert upload(client, c, copies.next()).status_code == 201  # room again
    with connect(server, timeout=8) as s:  # chunked: it reserves the whole upload cap
        held = [stall(server, a, CAP, body_bytes=10), stall(server, b, CAP, body_bytes=10)]
        try:
            wait_for(lambda: len(slots(server)) == 2, what="two upload slots")
            s.sendall(post_head(c, None))
            status, data = read_response(s)
            assert status == 503, data[:400]
        finally:
            for h in held:
                h.close()
    wait_for(lambda: slots(server) == [], what="the slots to be freed")


def test_an_identical_re_upload_is_a_409_free_of_charge(server, client, copies, tmp_path, capsys):
    token = server.add_team("again")
    data = copies.next()
    first = upload(client, token, data)
    assert first.status_code == 201
    before = me(client, token)
    r = upload(client, token, data, name="renamed.h5")
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == (f"identical to submission {first.json()['id']} (the same file, byte for byte); "
                                  "not scored again and not charged")
    after = me(client, token)
    assert after["quota"][0]["used_today"] == before["quota"][0]["used_today"] == 1
    assert after["failed_today"] == before["failed_today"] == 0
    assert upload(client, server.add_team("someone-else"), data).status_code == 201  # per team
    # `c2seg submit` says so in one line, exit 1
    from c2seg_kit.cli import main

    path = tmp_path / "same.h5"
    path.write_bytes(data)
    with pytest.raises(SystemExit) as exit_info:
        main(["submit", str(path), "--server", server.url, "--token", token])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1 and out == ""
    assert err == (f"error: already submitted (409): identical to submission {first.json()['id']} (the same file, "
                   "byte for byte); not scored again and not charged\n")
    assert len(json.loads(client.get("/api/v1/submissions", headers=auth(token)).text)) == 1
