"""The participant site (/team) in a real browser: Playwright for Python driving the Debian
Chromium (by its executable path, no browser download) against one live `c2seg serve` on
loopback, serving a tile track (AB) and a scene track (BW).

With the page's script: sign in, upload a valid file and see its score without a reload (a
progress bar, the row in the table), a file of the other layout answered with the 422's advice,
a wrong file name or an oversized file stopped in the page before a byte is sent, metadata edited
and final picks chosen without a reload, sign out. The session cookie as the browser stores it
(HttpOnly, SameSite=Strict, an expiry), a forged form post from a page of another origin refused,
the token in no URL the browser asked for nor in the access log, a revoked token's session ended.
Without JavaScript: sign in, upload and picks as plain forms. No CSP violation in any console;
the upload reached and sent with the keyboard alone; no sideways scroll at 500 px.

With C2SEG_REQUIRE_BROWSER=1 (CI) a missing Chromium or Playwright fails these tests instead of
skipping them.
"""

from __future__ import annotations

import datetime as dt
import http.server
import os
import re
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from browser_support import chromium_path, launch, sign_in, upload  # noqa: E402
from hostile_files import honest_tile_file, make_tile_target  # noqa: E402
from live_server import LiveServer, auth, free_port  # noqa: E402

from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402

pytestmark = pytest.mark.timeout(300)
BW_SHAPE = (40, 30)


def _need(what: str, missing: bool) -> None:
    if missing:
        if os.environ.get("C2SEG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{what} is not installed (C2SEG_REQUIRE_BROWSER=1)")
        pytest.skip(f"{what} is not installed")


# --- one server, one browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def bw_labels():
    return np.random.default_rng(5).integers(1, 14, BW_SHAPE).astype(np.uint8)


@pytest.fixture(scope="module")
def server(tmp_path_factory, bw_labels):
    folder = tmp_path_factory.mktemp("site")
    target = make_tile_target(folder)  # AB: 12 test tiles
    bw = write_labels(folder / "labels-BW.h5", bw_labels, "BW")
    # --log-level info: the access log is written, so the test can read it for the token
    srv = LiveServer(folder, [target.path, bw], options=["--log-level", "info"],
                     env={"C2SEG_SCORING_WORKERS": "1", "C2SEG_SPLIT_BLOCK": "16", "C2SEG_SCORING_TIMEOUT_S": "30",
                          "C2SEG_PEEK_TIMEOUT_S": "20"})
    srv.target = target
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    _need("chromium", chromium_path() is None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright (pip install playwright)", True)
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


class Watched:
    """A browser context and page whose every request URL and console message is kept."""

    def __init__(self, browser, **options):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
        self.urls: list[str] = []
        self.console: list[str] = []
        self.context.on("request", lambda r: self.urls.append(r.url))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "pageerror" in m]

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser):
    made = []

    def make(**options) -> Watched:
        made.append(Watched(browser, **options))
        return made[-1]

    yield make
    for w in made:
        w.close()


@pytest.fixture
def scene(tmp_path, bw_labels):
    """A fresh BW scene prediction each call (an identical re-upload is a 409)."""
    counter = iter(range(10**6))

    def make(right: float = 0.8) -> os.PathLike:
        n = next(counter)
        keep = np.random.default_rng(100 + n).random(BW_SHAPE) < right
        pred = np.where(keep, bw_labels, bw_labels % 13 + 1).astype(np.uint8)
        return write_submission(tmp_path / f"scene-{n}.h5", pred, "BW")

    return make


def api_submissions(server, token) -> dict[int, dict]:
    r = httpx.get(server.url + "/api/v1/submissions", headers=auth(token), timeout=30)
    assert r.status_code == 200, r.text
    return {s["id"]: s for s in r.json()}


def no_reload_marker(page) -> None:
    page.evaluate("window.__sameDocument = true")


def same_document(page) -> bool:
    return page.evaluate("window.__sameDocument === true")


#: WCAG 2 contrast ratio of each element's text colour on the first opaque background behind it.
CONTRAST_JS = """(selectors) => selectors.map((sel) => {
  const el = document.querySelector(sel);
  if (!el) return [sel, null];
  const rgba = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
                       return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  let bg = [255, 255, 255];
  for (let n = el; n; n = n.parentElement) {
    const c = rgba(getComputedStyle(n).backgroundColor);
    if (c.length === 3 || c[3] > 0) { bg = c; break; }
  }
  const [hi, lo] = [lum(rgba(getComputedStyle(el).color)), lum(bg)].sort((a, b) => b - a);
  return [sel, (hi + 0.05) / (lo + 0.05)];
})"""


def low_contrast(page, selectors: list[str], least: float = 4.5) -> list:
    found = page.evaluate(CONTRAST_JS, selectors)
    assert all(ratio is not None for _, ratio in found), found  # every selector names an element
    return [(sel, round(ratio, 2)) for sel, ratio in found if ratio < least]


# --- with the page's script ------------------------------------------------------------------------

def test_sign_in_upload_edit_pick_sign_out(server, watched, scene, tmp_path):
    token = server.add_team("site-alpha")
    w = watched()
    page = w.page
    page.goto(server.url + "/team")
    assert page.url.endswith("/team/sign-in"), page.url  # signed out: the sign-in page
    sign_in(page, server.url, token)
    assert page.url == server.url + "/team"
    assert page.locator("#upload").is_visible() and page.locator("#quota").is_visible()
    # the phases' end times and any other UTC time gain the viewer's local time
    no_reload_marker(page)

    # A valid file: the progress bar reaches 100 %, the answer shows the score, the row appears.
    text = upload(page, scene(), "BW", method="Site method", description="first line\nsecond",
                  url="https://example.org/site")
    subs = api_submissions(server, token)
    assert len(subs) == 1, text
    (sid,) = subs
    miou = subs[sid]["scores"]["miou"]
    assert f"{miou:.4f}" in text, text
    assert page.locator("#upload-result").get_attribute("role") == "status"
    assert low_contrast(page, ["#upload-result", ".progress-text", "#my-submissions td.num", ".local-time"]) == []
    bar = page.locator("#upload progress, .upload-progress progress").first
    assert bar.get_attribute("value") == "100" and page.get_by_label("Upload progress").count() == 1
    assert "100 %" in page.inner_text(".upload-progress")
    row = page.locator(f'#my-submissions tr[data-id="{sid}"]')
    assert row.count() == 1 and f"{miou:.4f}" in row.inner_text()
    assert subs[sid]["method"] == "Site method" and subs[sid]["description"] == "first line\nsecond"
    assert same_document(page)

    # The other layout (a scene file for the tile track): the 422's reason and how to convert.
    ab_scene = write_submission(tmp_path / "ab-scene.h5", np.ones((64, 64), np.uint8), "AB")
    text = upload(page, ab_scene, "AB")
    assert "c2seg pack" in text and "tile" in text, text
    assert page.locator("#upload-result").get_attribute("class").split().count("refused") == 1
    assert low_contrast(page, ["#upload-result"]) == []
    assert len(api_submissions(server, token)) == 1

    # Checked in the page before sending: the file's name and its size.
    posts = len([u for u in w.urls if "/team/upload" in u])
    wrong_name = tmp_path / "notes.txt"
    wrong_name.write_bytes(b"not a submission")
    page.set_input_files("#file", str(wrong_name))
    page.click("#upload-button")
    assert "notes.txt" in page.inner_text("#upload-result") and "must end in" in page.inner_text("#upload-result")
    page.evaluate("document.getElementById('upload').setAttribute('data-max-bytes', '100')")
    page.set_input_files("#file", str(scene()))
    page.click("#upload-button")
    assert "at most 100 bytes" in page.inner_text("#upload-result")
    assert len([u for u in w.urls if "/team/upload" in u]) == posts  # nothing was sent

    # Metadata edited in place.
    form = page.locator(f'form.metadata[data-id="{sid}"]')
    form.locator('[name="method"]').fill("Edited method")
    form.locator('[name="url"]').fill("https://example.org/edited")
    form.locator('button, input[type="submit"]').first.click()
    page.wait_for_function("() => document.querySelector('.form-result.ok, .form-result.refused')")
    assert api_submissions(server, token)[sid]["method"] == "Edited method"
    assert page.locator(".form-result.ok").count() == 1
    assert "saved" in page.inner_text(".form-result.ok")
    # the row came back from the server (the page's refresh), with the saved values
    assert page.locator(f'form.metadata[data-id="{sid}"] [name="url"]').input_value() == "https://example.org/edited"

    # Final picks chosen in place.
    picks = page.locator('form.picks[data-track="BW"]')
    picks.locator(f'input[name="ids"][value="{sid}"]').check()
    picks.locator('button, input[type="submit"]').first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.form-result')].some(n => n.dataset.for === 'picks:BW'"
        " && (n.classList.contains('ok') || n.classList.contains('refused')))")
    assert api_submissions(server, token)[sid]["final_pick"] is True
    assert same_document(page)
    assert page.locator(f'form.picks[data-track="BW"] input[name="ids"][value="{sid}"]').is_checked()

    # The session cookie as the browser keeps it.
    (cookie,) = [c for c in w.context.cookies() if c["httpOnly"] and c["sameSite"] == "Strict"]
    assert cookie["secure"] is False  # plain http on loopback; Secure over HTTPS (the server's tests)
    assert cookie["expires"] > time.time() + 60  # an expiry, not a browser-lifetime cookie
    assert token not in cookie["value"]
    assert page.evaluate("document.cookie").find(cookie["name"]) < 0  # HttpOnly: no script reads it

    # Sign out: back to the sign-in page, and the team page asks to sign in again.
    with page.expect_navigation():
        page.locator("#sign-out button, #sign-out [type=submit]").first.click()
    assert "/team/sign-in" in page.url
    page.goto(server.url + "/team")
    assert page.url.endswith("/team/sign-in")

    assert not any(token in u for u in w.urls), [u for u in w.urls if token in u]
    assert w.csp_violations() == []


def test_local_times_beside_utc(server, watched):
    token = server.add_team("site-clock")
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).replace(microsecond=0, second=0)
    from click.testing import CliRunner

    from c2seg_kit.cli import cli

    r = CliRunner().invoke(cli, ["admin", "--db", server.db, "--data-dir", str(server.data_dir), "phase", "BW",
                                 "closed", "--at", ends.strftime("%Y-%m-%dT%H:%MZ")])
    assert r.exit_code == 0, r.output
    try:
        w = watched(timezone_id="Asia/Tokyo", locale="en-GB")
        sign_in(w.page, server.url, token)
        local = w.page.locator("#phases .local-time")
        assert local.count() >= 1
        text = local.first.inner_text()
        tokyo = ends.astimezone(dt.timezone(dt.timedelta(hours=9)))
        assert "Asia/Tokyo" in text and tokyo.strftime("%H:%M") in text, text
        assert ends.strftime("%H:%M") in w.page.inner_text("#phases")  # UTC stays
        assert w.csp_violations() == []
    finally:
        CliRunner().invoke(cli, ["admin", "--db", server.db, "--data-dir", str(server.data_dir), "phase", "BW",
                                 "--unschedule"])


def test_the_console_watch_sees_a_csp_violation(server, watched):
    """What the other tests' `csp_violations() == []` would catch: an inline style, refused by the CSP."""
    w = watched()
    w.page.goto(server.url + "/team/sign-in")
    assert w.csp_violations() == []
    w.page.evaluate("document.body.setAttribute('style', 'color: red')")
    deadline = time.monotonic() + 10
    while not w.csp_violations() and time.monotonic() < deadline:
        w.page.wait_for_timeout(50)
    assert any("style-src" in m for m in w.csp_violations()), w.console


def test_keyboard_alone_reaches_and_sends_the_upload(server, watched, scene):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    token = server.add_team("site-keys")
    w = watched()
    page = w.page
    sign_in(page, server.url, token)
    page.evaluate("document.activeElement && document.activeElement.blur()")

    def tab_to(element_id: str, limit: int = 60) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
                return
        raise AssertionError(f"#{element_id} not reached with Tab")

    tab_to("track")
    focus_ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert focus_ring not in ("none", ""), focus_ring  # the focus is visible
    page.keyboard.press("End")  # the last track in the list: BW
    assert page.eval_on_selector("#track", "s => s.value") == "BW"
    tab_to("file")
    for key in ("Space", "Enter"):  # either opens the file chooser (a busy machine may drop the first)
        try:
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press(key)
            break
        except PlaywrightTimeout:
            assert page.evaluate("document.activeElement.id") == "file"
    chooser.value.set_files(str(scene()))
    tab_to("upload-button")
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('upload-result').classList.contains('ok')", timeout=60_000)
    (sub,) = api_submissions(server, token).values()
    assert f"{sub['scores']['miou']:.4f}" in page.inner_text("#upload-result")
    assert page.evaluate("document.activeElement.id") == "upload-button"  # the focus stays where it was
    assert w.csp_violations() == []


def test_narrow_and_wide_windows(server, watched, scene):
    token = server.add_team("site-a-team-with-a-rather-long-name-that-must-wrap")
    for _ in range(2):
        httpx.post(server.url + "/api/v1/submissions", headers=auth(token), timeout=60,
                   files={"file": ("p.h5", open(scene(), "rb").read())}).raise_for_status()
    for width in (500, 1700):
        w = watched()
        page = w.page
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(server.url + "/team/sign-in")
        sizes = [page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")]
        sign_in(page, server.url, token)
        sizes.append(page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]"))
        assert all(sw <= iw for sw, iw in sizes), (width, sizes)
        assert low_contrast(page, ["body", "h1", "caption", "#my-submissions thead th", "#my-submissions td",
                                   ".help", "#upload-button", "#sign-out-button", "form.metadata label",
                                   "form.metadata button", "#phases li", ".phase", "a"]) == []
        if width == 500:  # the table scrolls inside its own box
            box = page.evaluate("(() => { const t = document.getElementById('my-submissions');"
                                " const b = t.parentElement; return [t.scrollWidth, b.clientWidth,"
                                " getComputedStyle(b).overflowX]; })()")
            assert box[0] > box[1] and box[2] in ("auto", "scroll"), box
        assert w.csp_violations() == []


# --- what the browser and the server keep ---------------------------------------------------------------

def test_forged_post_from_another_origin_is_refused(server, watched, scene):
    token = server.add_team("site-victim")
    r = httpx.post(server.url + "/api/v1/submissions", headers=auth(token), timeout=60,
                   files={"file": ("p.h5", open(scene(), "rb").read())})
    sid = r.json()["id"]
    # A page on another loopback port (the same site for the cookie: only the CSRF token stops it).
    evil = (f'<!doctype html><form id="f" method="post" action="{server.url}/team/submissions/{sid}/metadata">'
            '<input name="method" value="forged"><input name="csrf" value="guessed">'
            '<button id="go">go</button></form>').encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(evil)))
            self.end_headers()
            self.wfile.write(evil)

        def log_message(self, *args):
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Evil)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        w = watched()
        sign_in(w.page, server.url, token)
        w.page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        with w.page.expect_navigation():
            w.page.click("#go")
        status = w.page.evaluate("performance.getEntriesByType('navigation')[0].responseStatus")
        assert status in (400, 403), status
        # ... and again without any csrf field
        w.page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        w.page.evaluate("document.querySelector('[name=csrf]').remove()")
        with w.page.expect_navigation():
            w.page.click("#go")
        assert w.page.evaluate("performance.getEntriesByType('navigation')[0].responseStatus") in (400, 403)
    finally:
        other.shutdown()
        other.server_close()
    assert api_submissions(server, token)[sid]["method"] != "forged"


def test_revoked_token_ends_its_session(server, watched):
    token = server.add_team("site-revoked")
    w = watched()
    sign_in(w.page, server.url, token)
    assert w.page.url == server.url + "/team"
    server.revoke("site-revoked")
    w.page.reload()
    assert w.page.url.endswith("/team/sign-in"), w.page.url
    assert w.page.locator("#upload").count() == 0


def test_token_in_no_url_nor_the_access_log(server, watched, scene):
    token = server.add_team("site-logged")
    w = watched()
    sign_in(w.page, server.url, token)
    upload(w.page, scene(), "BW")
    w.page.goto(server.url + "/team/tiles/AB")
    assert w.page.locator("body").inner_text().count("\n") >= 1
    visited = w.urls + [w.page.url]
    assert visited and not any(token in u for u in visited)
    log = server.log()
    assert re.search(r'"POST /team/sign-in HTTP/1\.1" 303', log), log[-2000:]  # the access log is on
    assert token not in log and token[4:20] not in log


# --- without JavaScript ----------------------------------------------------------------------------------

def test_plain_forms_without_javascript(server, watched, scene):
    token = server.add_team("site-nojs")
    w = watched(java_script_enabled=False)
    page = w.page
    sign_in(page, server.url, token)
    assert page.url == server.url + "/team"
    assert page.locator("html.js").count() == 0  # the script did not run
    page.select_option("#track", "BW")
    page.set_input_files("#file", str(scene()))
    page.fill("#method", "No script")
    with page.expect_navigation():
        page.click("#upload-button")
    assert page.url.startswith(server.url + "/team")
    (sub,) = api_submissions(server, token).values()
    assert sub["method"] == "No script"
    assert f"{sub['scores']['miou']:.4f}" in page.inner_text("body")
    assert page.locator(f'#my-submissions tr[data-id="{sub["id"]}"]').count() == 1
    picks = page.locator('form.picks[data-track="BW"]')
    picks.locator(f'input[name="ids"][value="{sub["id"]}"]').check()
    with page.expect_navigation():
        picks.locator('button, input[type="submit"]').first.click()
    assert api_submissions(server, token)[sub["id"]]["final_pick"] is True
    assert not any(token in u for u in w.urls)
    assert w.csp_violations() == []


def test_tile_track_upload_and_its_tile_list(server, watched, tmp_path):
    token = server.add_team("site-tiles")
    w = watched()
    sign_in(w.page, server.url, token)
    text = upload(w.page, honest_tile_file(tmp_path / "tiles.h5", server.target), "AB")
    (sub,) = api_submissions(server, token).values()
    assert f"{sub['scores']['miou']:.4f}" in text
    w.page.goto(server.url + "/team/tiles/AB")
    body = w.page.inner_text("body")
    assert all(tid in body for tid in server.target.tiles)
    assert w.csp_violations() == []
