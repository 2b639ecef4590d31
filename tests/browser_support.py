"""The participant site (/team) in a real browser: Playwright for Python driving the Debian
Chromium by its executable path (no browser download), for tests/test_site_browser.py,
scripts/site_screenshots.py and bench/site_upload.py.

- `chromium_path`: the installed Chromium, or None;
- `launch`: headless Chromium with the flags the other browser tests use (no sandbox, no GPU,
  no background network, no first-run);
- `sign_in`: the sign-in form filled and sent as a person does (the token typed into the form,
  never put in a URL);
- `upload`: a file chosen in the upload form and sent; returns when the page shows the answer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: Where Debian (and CI, which installs Debian's package) puts Chromium, then the names on PATH.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium_path() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = name if Path(name).is_file() else shutil.which(name)
        if found:
            return found
    return None


def launch(playwright, executable: str | None = None):
    """Headless Chromium (the installed one) under Playwright."""
    return playwright.chromium.launch(executable_path=executable or chromium_path(), headless=True, args=FLAGS)


def sign_in(page, base_url: str, token: str) -> None:
    """Open the sign-in page, type the token, send the form; waits for the team page."""
    page.goto(base_url + "/team/sign-in")
    page.fill("#token", token)
    with page.expect_navigation():
        page.press("#token", "Enter")


def upload(page, path: Path | str, track: str, timeout_ms: float = 120_000, **fields: str) -> str:
    """Choose `path` in the upload form (and `track`, and method/description/url from `fields`),
    press the upload button and wait until #upload-result shows the server's answer; returns its text.
    The page must run its script (the form then stays on the page)."""
    page.select_option("#track", track)
    page.set_input_files("#file", str(path))
    for name, value in fields.items():
        page.fill(f"#{name}", value)
    page.evaluate("document.getElementById('upload-result').textContent = ''")
    page.click("#upload-button")
    page.wait_for_function(
        "() => { const r = document.getElementById('upload-result');"
        " return r && (r.classList.contains('ok') || r.classList.contains('refused')); }", timeout=timeout_ms)
    return page.inner_text("#upload-result")
