"""The participants' site (/team), its sessions and their defences, through FastAPI's TestClient:
sign-in and sign-out, the cookie's flags, expiry, CSRF (forged posts, login CSRF, other origins),
a rotated or revoked token ending its sessions at once, the token kept out of URLs, pages and
the access log, and the pages' content security policy (no inline script or style)."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

pytest.importorskip("fastapi")
pytest_plugins = ["site_support"]  # its fixtures: site_targets, site_scoring, make_site_client
from site_support import (  # noqa: E402
    FORGED,
    JSON,
    Elements,
    add_team,
    csrf_of,
    dashboard_csrf,
    sign_in,
)

from c2seg_server import crud, organizer, phases  # noqa: E402
from c2seg_server.main import SITE_CSP  # noqa: E402
from c2seg_server.models import SiteSession  # noqa: E402


@pytest.fixture
def client(make_site_client):
    return make_site_client()


def session_rows(client) -> list[SiteSession]:
    with client.app.state.services.sessions() as s:
        return list(s.query(SiteSession))


def cookie_header(response, name: str) -> str:
    found = [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(name + "=")]
    assert len(found) == 1, response.headers
    return found[0]


def flags(set_cookie: str) -> set[str]:
    return {p.strip().lower() for p in set_cookie.split(";")[1:]}


# --- sign-in, the cookie, sign-out ------------------------------------------------------------------

def test_sign_in_opens_a_session_whose_cookie_is_httponly_strict_and_only_hashed_in_the_database(client):
    token = add_team(client, "alpha")
    assert client.get("/team").headers["location"] == "/team/sign-in"  # no session: to the sign-in page
    r = sign_in(client, token)
    assert r.status_code == 303 and r.headers["location"] == "/team"
    cookie = cookie_header(r, "c2seg_session")
    value = cookie.split(";")[0].split("=", 1)[1]
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= flags(cookie)
    assert "secure" not in flags(cookie)  # plain http (a test client): a Secure cookie would never come back
    (row,) = session_rows(client)
    assert row.id_hash == hashlib.sha256(value.encode()).hexdigest() and value not in repr(vars(row))
    page = client.get("/team")
    assert page.status_code == 200 and "<h1>Team alpha</h1>" in page.text
    assert client.get("/team/sign-in").headers["location"] == "/team"  # signed in already


def test_the_cookies_are_secure_over_https(make_site_client):
    client = make_site_client(base_url="https://testserver")
    token = add_team(client)
    page = client.get("/team/sign-in")
    assert "secure" in flags(cookie_header(page, "c2seg_signin"))
    r = client.post("/team/sign-in", data={"token": token, "csrf": csrf_of(page.text)})
    assert r.status_code == 303 and {"secure", "httponly", "samesite=strict"} <= flags(cookie_header(r, "c2seg_session"))
    assert client.get("/team").status_code == 200


def test_a_wrong_or_revoked_token_gets_one_plain_answer_and_no_session(client):
    add_team(client, "alpha")
    revoked = add_team(client, "beta")
    with client.app.state.services.sessions() as s:
        crud.revoke_team(s, "beta")
    answers = []
    for token in ("c2s_" + "x" * 43, revoked, ""):
        r = sign_in(client, token)
        assert r.status_code == 401 and "c2seg_session" not in r.headers.get("set-cookie", "")
        answers.append(re.search(r'role="alert">([^<]*)<', r.text).group(1))
    assert len(set(answers)) == 1 and "not accepted" in answers[0]
    assert session_rows(client) == []


def test_a_session_expires(make_site_client):
    client = make_site_client(site_session_hours=1.5)
    r = sign_in(client, add_team(client))
    assert "max-age=5400" in flags(cookie_header(r, "c2seg_session"))
    assert client.get("/team").status_code == 200
    with client.app.state.services.sessions() as s:
        row = s.query(SiteSession).one()
        assert dt.timedelta(hours=1.4) < row.expires - row.created <= dt.timedelta(hours=1.5)
        row.expires = crud.utcnow() - dt.timedelta(seconds=1)
        s.commit()
    assert client.get("/team").headers["location"] == "/team/sign-in"
    assert session_rows(client) == []  # the expired row is gone


def test_sign_out_deletes_the_session(client):
    sign_in(client, add_team(client))
    old = client.cookies.get("c2seg_session")
    r = client.post("/team/sign-out", data={"csrf": dashboard_csrf(client)})
    assert r.status_code == 303 and r.headers["location"] == "/team/sign-in"
    assert "max-age=0" in flags(cookie_header(r, "c2seg_session"))
    assert session_rows(client) == []
    client.cookies.set("c2seg_session", old)  # the old cookie, sent again, opens nothing
    assert client.get("/team").headers["location"] == "/team/sign-in"


@pytest.mark.parametrize("how", ["revoke", "rotate-token"])
def test_a_revoked_or_rotated_token_ends_its_sessions_at_once(client, how):
    sign_in(client, add_team(client, "alpha"))
    csrf = dashboard_csrf(client)
    with client.app.state.services.sessions() as s:
        (crud.revoke_team if how == "revoke" else organizer.rotate_token)(s, "alpha")
    assert client.get("/team").headers["location"] == "/team/sign-in"
    r = client.post("/team/picks/BW", data={"csrf": csrf}, headers=JSON)
    assert r.status_code == 401 and "sign in again" in r.json()["message"]
    assert session_rows(client) == []


# --- CSRF -------------------------------------------------------------------------------------------

def test_forged_posts_are_refused(make_site_client):
    client = make_site_client()
    token = add_team(client)
    sign_in(client, token)
    other = make_site_client(data_dir=client.app.state.services.settings.data_dir)  # the same database
    sign_in(other, token)
    other_csrf = dashboard_csrf(other)
    mine = dashboard_csrf(client)
    assert other_csrf != mine
    for csrf in (None, "", "0" * 64, other_csrf):
        data = {} if csrf is None else {"csrf": csrf}
        for path, extra in (("/team/picks/BW", {"ids": []}), ("/team/submissions/1/metadata", {"method": "x"}),
                            ("/team/sign-out", {})):
            r = client.post(path, data={**data, **extra})
            assert (r.status_code, r.text) == (403, FORGED + "\n"), (path, csrf)
        r = client.post("/team/upload", data={**data, "track": "BW"}, files={"file": ("p.h5", b"x" * 100)})
        assert (r.status_code, r.text) == (403, FORGED + "\n")
        r = client.post("/team/upload", headers={"X-CSRF-Token": csrf or "", **JSON},
                        files={"file": ("p.h5", b"x" * 100)})
        assert r.status_code == 403 and r.json()["message"] == FORGED
    assert len(session_rows(client)) == 2  # no sign-out went through
    assert client.get("/team").status_code == 200
    assert client.post("/team/picks/BW", data={"csrf": mine}, headers=JSON).json()["ok"] is True


def test_login_csrf_is_refused(client):
    token = add_team(client)
    # no pre-session cookie (a form on another site posting the attacker's token)
    r = client.post("/team/sign-in", data={"token": token, "csrf": "a" * 43})
    assert r.status_code == 403 and "c2seg_session" not in r.headers.get("set-cookie", "")
    page = client.get("/team/sign-in")
    csrf = csrf_of(page.text)
    assert client.cookies.get("c2seg_signin") == csrf
    assert client.post("/team/sign-in", data={"token": token, "csrf": csrf[::-1]}).status_code == 403
    r = client.post("/team/sign-in", data={"token": token, "csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert session_rows(client) == []
    r = client.post("/team/sign-in", data={"token": token, "csrf": csrf}, headers={"Origin": "http://testserver"})
    assert r.status_code == 303


def test_a_post_from_another_origin_is_refused_even_with_the_token(client):
    sign_in(client, add_team(client))
    csrf = dashboard_csrf(client)
    r = client.post("/team/picks/BW", data={"csrf": csrf}, headers={"Origin": "https://evil.example", **JSON})
    assert r.status_code == 403 and "another site" in r.json()["message"]
    for origin in ("null", "https://testserver", "http://testserver.evil.example", "http://evil.example/testserver"):
        r = client.post("/team/picks/BW", data={"csrf": csrf}, headers={"Origin": origin, **JSON})
        assert r.status_code == 403, origin
    for origin in ("http://testserver", "http://testserver:8080"):  # (a proxy forwards the host without its port)
        r = client.post("/team/picks/BW", data={"csrf": csrf}, headers={"Origin": origin, **JSON})
        assert r.status_code == 200, origin


# --- the token kept out of URLs and pages; the pages' policy -----------------------------------------

def test_the_token_appears_in_no_url_and_no_page(client):
    token = add_team(client)
    seen = []
    page = client.get("/team/sign-in")
    seen.append(page)
    form = Elements(page.text).find("form", id="sign-in")[0]
    assert form["method"] == "post" and form["action"] == "/team/sign-in" and "?" not in form["action"]
    r = client.post("/team/sign-in", data={"token": token, "csrf": csrf_of(page.text)})
    seen += [r, client.get(r.headers["location"])]
    seen.append(sign_in(make_client_like(client), token + "x"))
    for resp in seen:
        assert token not in str(resp.url) and token not in resp.headers.get("location", "")
        assert token not in resp.text and token not in str(resp.headers)


def make_client_like(client):
    """A second browser on the same app."""
    from fastapi.testclient import TestClient

    return TestClient(client.app, follow_redirects=False)


def test_the_pages_run_no_inline_script_or_style_and_send_the_sites_policy(client):
    sign_in(client, add_team(client))
    pages = {path: client.get(path) for path in ("/team", "/team/tiles/AB")}
    client.cookies.clear()
    pages["/team/sign-in"] = client.get("/team/sign-in")
    for path, r in pages.items():
        assert r.status_code == 200, path
        assert r.headers["content-security-policy"] == SITE_CSP.decode()
        page = Elements(r.text)
        assert page.inline == [], path
        assert [a.get("src") for a in page.find("script")] == ["/static/site.js"], path
        assert page.find("style") == []
        assert not [(t, k) for t, a in page.tags for k in a if k == "style" or k.startswith("on")], path
        assert {a["href"] for a in page.find("link", rel="stylesheet")} >= {"/static/site.css"}
    for part in ("script-src 'self'", "connect-src 'self'", "form-action 'self'", "default-src 'none'",
                 "frame-ancestors 'none'", "base-uri 'none'"):
        assert part in SITE_CSP.decode()
    assert "'unsafe-inline'" not in SITE_CSP.decode()
    board = client.get("/").headers["content-security-policy"]  # the board keeps its stricter policy
    assert "form-action 'none'" in board and "script-src" not in board
    # errors under /team get the site's policy too; static files and the API keep the board's
    assert client.post("/team/upload", headers=JSON).headers["content-security-policy"] == SITE_CSP.decode()
    assert client.get("/static/site.js").headers["content-security-policy"] == board


def test_the_dashboard_has_the_forms_and_landmarks_scripts_rely_on(client):
    sign_in(client, add_team(client))
    ends = dt.datetime(2031, 1, 2, 3, 4, tzinfo=dt.timezone.utc)
    with client.app.state.services.sessions() as s:
        phases.schedule(s, "BW", "closed", at=ends)
    html = client.get("/team").text
    phases_html = html[html.index('<section id="phases"'): html.index("</section>", html.index('<section id="phases"'))]
    assert '<time class="utc" datetime="2031-01-02T03:04:00Z">2031-01-02 03:04 UTC</time> (then closed)' in phases_html
    page = Elements(html)
    settings = client.app.state.services.settings
    (upload,) = page.find("form", id="upload")
    assert (upload["action"], upload["method"], upload["enctype"]) == ("/team/upload", "post", "multipart/form-data")
    assert upload["data-max-bytes"] == str(settings.max_upload_bytes) and upload["data-accept"] == ".h5,.hdf5"
    assert page.find("select", id="track", name="track")
    assert page.find("input", id="file", name="file", type="file")
    for field in ("method", "url"):
        assert page.find("input", id=field, name=field)
    assert page.find("textarea", id="description", name="description")
    assert page.find("button", id="upload-button")
    assert page.find("div", id="upload-result", role="status")[0]["aria-live"] == "polite"
    assert page.find("form", id="sign-out") and page.find("table", id="my-submissions")
    assert page.find("section", id="quota") and page.find("section", id="phases")
    assert page.find("a", href="/team/tiles/AB") and not page.find("a", href="/team/tiles/BW")
    assert len(page.find("input", type="hidden", name="csrf")) == 2  # sign-out, upload (no submissions yet)
    # every form control has its label
    labelled = {a["for"] for a in page.find("label")}
    controls = [a["id"] for t, a in page.tags if t in ("input", "select", "textarea") and a.get("type") != "hidden"]
    assert controls and set(controls) <= labelled
    times = page.find("time")
    assert times and all(t["class"] == "utc" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["datetime"])
                         for t in times)
    sign_in_page = Elements(make_client_like(client).get("/team/sign-in").text)
    (token_input,) = sign_in_page.find("input", id="token", name="token")
    assert token_input["type"] == "password" and token_input["autocomplete"] == "off"
    assert sign_in_page.find("label", **{"for": "token"})


def test_the_access_log_holds_neither_the_token_nor_the_session(tmp_path, site_targets):
    import httpx
    from live_server import LiveServer

    srv = LiveServer(tmp_path, site_targets[2], env={"C2SEG_SCORING_WORKERS": "1", "C2SEG_SPLIT_BLOCK": "8"},
                     options=["--log-level", "info"])
    srv.start()
    try:
        token = srv.add_team("logged")
        with httpx.Client(base_url=srv.url, follow_redirects=False) as http:
            page = http.get("/team/sign-in")
            r = http.post("/team/sign-in", data={"token": token, "csrf": csrf_of(page.text)})
            assert r.status_code == 303
            session = http.cookies.get("c2seg_session")
            assert session and http.get("/team").status_code == 200
    finally:
        srv.stop()
    log = srv.log()
    assert '"POST /team/sign-in HTTP/1.1" 303' in log and '"GET /team HTTP/1.1" 200' in log
    assert token not in log and session not in log
