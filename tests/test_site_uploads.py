"""The participants' site's forms (/team) through FastAPI's TestClient, against real scoring
children: an upload answered as the API answers it (scored, 409, 413 before the body, 422 with
its advice, 429 with the reset time), plain forms (303 and a one-shot message) and the JSON
answers scripts ask for, metadata edits, final picks while the phase is open, the tiles page."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest_plugins = ["site_support"]  # its fixtures: site_targets, site_scoring, make_site_client
from hostile_files import honest_tile_file  # noqa: E402
from site_support import (  # noqa: E402
    FORGED,
    JSON,
    Elements,
    add_team,
    dashboard_csrf,
    raw_post,
    sign_in,
)

from c2seg_kit.submission.writers import write_submission  # noqa: E402
from c2seg_server import crud, organizer  # noqa: E402


@pytest.fixture
def signed_in(make_site_client):
    """Factory: a client signed in as a fresh team; returns (client, token, csrf)."""

    def make(name="alpha", **settings):
        client = make_site_client(**settings)
        token = add_team(client, name)
        assert sign_in(client, token).status_code == 303
        return client, token, dashboard_csrf(client)

    return make


@pytest.fixture
def files(tmp_path, site_targets):
    """Factory: a submission file: ("tiles", seed) for AB, ("scene", seed) for BW (or AB: wrong layout)."""
    tiles, bw, _ = site_targets
    counter = iter(range(10**6))

    def make(kind="tiles", seed=1, track="BW"):
        path = tmp_path / f"p{next(counter)}.h5"
        if kind == "tiles":
            return honest_tile_file(path, tiles, seed)
        pred = np.where(np.random.default_rng(seed).random(bw.shape) < 0.8, bw, bw % 13 + 1).astype(np.uint8)
        return write_submission(path, pred, track)

    return make


def upload(client, csrf, path, track="AB", headers=None, **fields):
    with open(path, "rb") as f:
        return client.post("/team/upload", data={"csrf": csrf, "track": track, **fields},
                           files={"file": ("predictions.h5", f, "application/x-hdf5")}, headers=headers or {})


def shown_message(client) -> tuple[str, str]:
    html = client.get("/team").text
    start = html.index('id="upload-result"')
    tag_end = html.index(">", start)
    return html[start:tag_end], html[tag_end + 1: html.index("</div>", tag_end)]


# --- uploads ----------------------------------------------------------------------------------------

def test_a_plain_form_upload_is_scored_and_the_page_says_so_once(signed_in, files):
    client, token, csrf = signed_in()
    r = upload(client, csrf, files("tiles"), method="HighDAN", description="two\nlines", url="https://example.org/x")
    assert r.status_code == 303 and r.headers["location"] == "/team"
    tag, message = shown_message(client)
    api = client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {token}"}).json()
    assert len(api) == 1 and (api[0]["method"], api[0]["description"], api[0]["url"]) == (
        "HighDAN", "two\nlines", "https://example.org/x")
    assert 'class="message ok"' in tag
    assert message == f"Submission {api[0]['id']} on track AB scored: public mIoU {api[0]['scores']['miou']:.4f}, " \
                      f"OA {api[0]['scores']['oa']:.4f}, F1 {api[0]['scores']['f1']:.4f}, kappa {api[0]['scores']['kappa']:.4f}."
    assert shown_message(client)[1] == ""  # one-shot
    page = Elements(client.get("/team").text)
    assert page.find("tr", **{"data-id": str(api[0]["id"])})
    assert page.find("form", **{"class": "metadata", "data-id": str(api[0]["id"])})


def test_a_script_gets_the_apis_submission_as_json(signed_in, files):
    client, token, csrf = signed_in()
    r = upload(client, csrf, files("scene", track="BW"), track="BW", headers=JSON)
    assert r.status_code == 201
    body = r.json()
    assert body["ok"] is True and body["status"] == 201 and body["message"].startswith(f"Submission {body['submission']['id']} ")
    api = client.get(f"/api/v1/submissions/{body['submission']['id']}", headers={"Authorization": f"Bearer {token}"})
    assert body["submission"] == api.json()
    assert shown_message(client)[1] == ""  # a script's answer leaves no message behind
    with open(files("scene", seed=2, track="BW"), "rb") as f:  # the token in a header instead of the form
        r = client.post("/team/upload?track=BW", files={"file": ("p.h5", f)}, headers={"X-CSRF-Token": csrf, **JSON})
    assert r.status_code == 201 and r.json()["ok"] is True


def test_the_track_chosen_in_the_form_must_be_the_files(signed_in, files):
    client, _, csrf = signed_in()
    r = upload(client, csrf, files("scene", track="BW"), track="AB", headers=JSON)
    assert r.status_code == 422 and "AB" in r.json()["message"] and r.json()["submission"] is None
    r = upload(client, csrf, files("scene", track="BW"), track="XY", headers=JSON)
    assert r.status_code == 404 and "not served here" in r.json()["message"]
    with open(files("scene", track="BW"), "rb") as f:  # a script may name the track in the address too
        r = client.post("/team/upload?track=AB", data={"csrf": csrf, "track": "BW"}, files={"file": ("p.h5", f)},
                        headers=JSON)
    assert r.status_code == 422 and r.json()["message"] == "the form chose track BW but the address names track AB"
    with open(files("scene", track="BW"), "rb") as f:
        r = client.post("/team/upload?track=BW", data={"csrf": csrf}, files={"file": ("p.h5", f)}, headers=JSON)
    assert r.status_code == 201 and r.json()["submission"]["track"] == "BW"


def test_a_wrong_layout_gets_the_422_with_its_advice(signed_in, files):
    client, _, csrf = signed_in()
    r = upload(client, csrf, files("scene", track="AB"), headers=JSON)
    assert r.status_code == 422 and r.json()["ok"] is False
    assert "`c2seg pack PRED_DIR --track AB --out predictions.h5` (tile layout)" in r.json()["message"]
    upload(client, csrf, files("scene", seed=2, track="AB"))
    tag, message = shown_message(client)
    assert 'class="message error"' in tag and "c2seg pack PRED_DIR --track AB" in message


def test_an_identical_file_gets_409_naming_the_earlier_submission(signed_in, files):
    client, _, csrf = signed_in()
    path = files("tiles")
    first = upload(client, csrf, path, headers=JSON).json()["submission"]["id"]
    r = upload(client, csrf, path, headers=JSON)
    assert r.status_code == 409 and r.json()["message"].startswith(f"identical to submission {first} ")


def test_the_quota_gets_429_with_its_reset_time(signed_in, files):
    client, _, csrf = signed_in(quota_per_day=1)
    assert upload(client, csrf, files("tiles", 1), headers=JSON).status_code == 201
    r = upload(client, csrf, files("tiles", 2), headers=JSON)
    _, resets = crud.utc_day()
    assert r.status_code == 429 and f"it resets at {resets:%Y-%m-%d}" in r.json()["message"]
    assert "1 of 1 today" in r.json()["message"]


def test_too_large_gets_413_before_the_body_and_no_session_gets_nothing_read(signed_in):
    client, _, csrf = signed_in(max_upload_bytes=4096)
    cookie = f"c2seg_session={client.cookies.get('c2seg_session')}"
    head = {"content-type": "multipart/form-data; boundary=b0", "accept": "application/json"}
    status, headers, body, pulled = raw_post(client.app, "/team/upload",
                                             {**head, "cookie": cookie, "content-length": str(10**9)}, [b"x" * 1024] * 4)
    assert (status, pulled, headers["connection"]) == (413, 0, "close")
    assert json.loads(body)["message"] == "the upload is larger than this server accepts (0.00390625 MiB)"
    # a script's CSRF header is checked before the body too
    status, _, body, pulled = raw_post(client.app, "/team/upload",
                                       {**head, "cookie": cookie, "content-length": "4000", "x-csrf-token": csrf[::-1]},
                                       [b"x" * 1000] * 4)
    assert (status, pulled, json.loads(body)["message"]) == (403, 0, FORGED)
    # no session: refused before the body, on the upload and on the small forms alike
    for path in ("/team/upload", "/team/picks/AB", "/team/submissions/1/metadata", "/team/sign-out"):
        status, _, body, pulled = raw_post(client.app, path, {**head, "content-length": "100"}, [b"x" * 100])
        assert (status, pulled) == (401, 0), path
        assert json.loads(body) == {"ok": False, "status": 401, "submission": None,
                                    "message": "not signed in (or the session ended): sign in again with your team token"}
        status, headers, _, pulled = raw_post(client.app, path, {"content-type": "application/x-www-form-urlencoded",
                                                                 "content-length": "100"}, [b"x" * 100])
        assert (status, headers["location"], pulled) == (303, "/team/sign-in", 0), path
    # a small form's body over its cap, with a session: 413 before it is read
    status, _, _, pulled = raw_post(client.app, "/team/picks/AB", {
        "content-type": "application/x-www-form-urlencoded", "cookie": cookie, "content-length": str(10**6)}, [b"x"])
    assert (status, pulled) == (413, 0)
    status, _, _, pulled = raw_post(client.app, "/team/sign-in", {
        "content-type": "application/x-www-form-urlencoded", "content-length": str(10**6)}, [b"x"])
    assert (status, pulled) == (413, 0)


# --- metadata, final picks, tiles ------------------------------------------------------------------

def test_metadata_is_edited_with_the_apis_rules(signed_in, files):
    client, token, csrf = signed_in()
    sub = upload(client, csrf, files("tiles"), headers=JSON).json()["submission"]["id"]
    r = client.post(f"/team/submissions/{sub}/metadata",
                    data={"csrf": csrf, "method": "New name", "description": "", "url": "https://example.org/p"})
    assert r.status_code == 303 and shown_message(client)[1] == f"Submission {sub}: method, description and URL saved."
    api = client.get(f"/api/v1/submissions/{sub}", headers={"Authorization": f"Bearer {token}"}).json()
    assert (api["method"], api["description"], api["url"]) == ("New name", None, "https://example.org/p")
    r = client.post(f"/team/submissions/{sub}/metadata", data={"csrf": csrf, "url": "javascript:alert(1)"},
                    headers=JSON)
    assert r.status_code == 422 and r.json()["message"].startswith("url: ")
    r = client.post(f"/team/submissions/{sub + 1}/metadata", data={"csrf": csrf, "method": "x"}, headers=JSON)
    assert r.status_code == 404 and r.json()["ok"] is False
    assert client.get(f"/api/v1/submissions/{sub}", headers={"Authorization": f"Bearer {token}"}).json()["method"] == "New name"


def test_final_picks_while_the_phase_is_open_only(signed_in, files):
    client, token, csrf = signed_in()
    ids = [upload(client, csrf, files("tiles", seed), headers=JSON).json()["submission"]["id"] for seed in (1, 2)]
    page = Elements(client.get("/team").text)
    assert [a["data-id"] for a in page.find("tr") if "data-id" in a] == [str(i) for i in ids[::-1]]  # newest first
    (form,) = page.find("form", **{"class": "picks", "data-track": "AB"})
    assert sorted(a["value"] for a in page.find("input", type="checkbox", name="ids")) == sorted(map(str, ids))
    r = client.post("/team/picks/AB", data={"csrf": csrf, "ids": [str(ids[1])]})
    assert r.status_code == 303 and shown_message(client)[1] == f"Final picks on track AB: {ids[1]} (at most 2)."
    auth = {"Authorization": f"Bearer {token}"}
    assert [s["id"] for s in client.get("/api/v1/submissions", headers=auth).json() if s["final_pick"]] == [ids[1]]
    r = client.post("/team/picks/AB", data={"csrf": csrf, "ids": [str(ids[0]), "999"]}, headers=JSON)
    assert r.status_code == 404 and r.json()["ok"] is False
    r = client.post("/team/picks/AB", data={"csrf": csrf, "ids": [str(ids[0]), str(ids[1]), "999"]}, headers=JSON)
    assert r.status_code == 422 and r.json()["ok"] is False
    with client.app.state.services.sessions() as s:
        crud.set_phase(s, "AB", "closed")
    r = client.post("/team/picks/AB", data={"csrf": csrf, "ids": []}, headers=JSON)
    assert r.status_code == 403 and "final picks closed" in r.json()["message"]
    page = Elements(client.get("/team").text)
    assert not page.find("form", **{"class": "picks", "data-track": "AB"})
    assert [s["id"] for s in client.get("/api/v1/submissions", headers=auth).json() if s["final_pick"]] == [ids[1]]


def test_the_tiles_page_lists_a_tile_tracks_test_tiles(signed_in, site_targets):
    client, _, _ = signed_in()
    html = client.get("/team/tiles/AB").text
    assert Elements(html).find("ol", id="tiles")
    for tid, tile in site_targets[0].tiles.items():
        assert f"<li><code>{tid}</code>: {tile.shape[0]} × {tile.shape[1]}</li>" in html
    r = client.get("/team/tiles/BW")
    assert r.status_code == 404 and "whole scene" in r.text


def test_my_submissions_show_hidden_private_scores_once_final_and_a_disqualified_team(signed_in, files):
    client, token, csrf = signed_in()
    ids = [upload(client, csrf, files("tiles", seed), headers=JSON).json()["submission"]["id"] for seed in (1, 2)]

    def row(sid):
        html = client.get("/team").text
        start = html.index(f'<tr data-id="{sid}"')
        return html[start: html.index("</tr>", start)]

    assert "<td class=\"status\">scored" in row(ids[0]) and row(ids[0]).count("–") == 2  # no private scores yet
    with client.app.state.services.sessions() as s:
        organizer.set_hidden(s, ids[0], True)
        crud.set_phase(s, "AB", "final")
    api = {x["id"]: x for x in client.get("/api/v1/submissions", headers={"Authorization": f"Bearer {token}"}).json()}
    assert '<td class="status">hidden' in row(ids[0])
    for sid in ids:
        private = api[sid]["private_scores"]
        assert private and f'<td class="num">{private["miou"]:.4f}</td>' in row(sid)
    with client.app.state.services.sessions() as s:
        organizer.disqualify(s, "alpha", "copied another team's file")
    page = client.get("/team").text
    assert "Your team is disqualified: copied another team&#39;s file." in page and "team disqualified" in row(ids[1])
    r = upload(client, csrf, files("tiles", 3), headers=JSON)
    assert r.status_code == 403 and r.json()["message"] == "your team is disqualified: copied another team's file"


def test_the_upload_alone_takes_a_large_body(signed_in):
    client, _, csrf = signed_in()
    cookie = f"c2seg_session={client.cookies.get('c2seg_session')}"
    boundary = "b0"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="csrf"\r\n\r\n{csrf}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="track"\r\n\r\nBW\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="p.h5"\r\n\r\n').encode() \
        + b"\0" * 200_000 + f"\r\n--{boundary}--\r\n".encode()
    chunks = [body[i: i + 65536] for i in range(0, len(body), 65536)]
    status, _, answer, pulled = raw_post(client.app, "/team/upload", {
        "content-type": f"multipart/form-data; boundary={boundary}", "cookie": cookie, "accept": "application/json",
        "content-length": str(len(body))}, chunks)
    assert pulled == len(chunks) and status == 422, answer  # read whole, then judged by the scorer (not HDF5)
