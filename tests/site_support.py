"""What the participants' site tests share: an app on a fresh database (the module's scoring pool),
a team and its token, signing in through the form, and reading the pages' hidden CSRF tokens.
Its fixtures `site_targets` (the labels), `site_scoring` (the pool) and `make_site_client` reach the
site's test modules through their `pytest_plugins`."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from c2seg_server import crud
from c2seg_server.config import Settings
from c2seg_server.main import create_app

CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def make_app_client(labels, data_dir, pool, *, base_url: str = "http://testserver", **settings) -> TestClient:
    """A TestClient (entered: call .__exit__ when done) on a fresh app sharing ``pool``."""
    app = create_app(Settings(labels=labels, data_dir=data_dir, **settings), pool=pool)
    client = TestClient(app, base_url=base_url, follow_redirects=False)
    client.__enter__()
    return client


def add_team(client: TestClient, name: str = "alpha") -> str:
    """A team in the client's database; returns its token."""
    with client.app.state.services.sessions() as s:
        _, token = crud.add_team(s, name)
    return token


def csrf_of(html: str) -> str:
    found = CSRF_RE.search(html)
    assert found, html[:500]
    return found.group(1)


def sign_in(client: TestClient, token: str):
    """The sign-in form as a browser sends it; returns the answer to the POST."""
    page = client.get("/team/sign-in")
    assert page.status_code == 200, page.text
    return client.post("/team/sign-in", data={"token": token, "csrf": csrf_of(page.text)})


def dashboard_csrf(client: TestClient) -> str:
    page = client.get("/team")
    assert page.status_code == 200, (page.status_code, page.text[:300])
    return csrf_of(page.text)


class Elements(HTMLParser):
    """Every start tag of a page as (tag, attributes), and the text inside <script>/<style>."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline: list[str] = []
        self._in: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._in = None

    def handle_data(self, data):
        if self._in and data.strip():
            self.inline.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def raw_post(app, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, dict, bytes, int]:
    """One POST straight through the app's ASGI interface (no client that reads the body first):
    (status, response headers, response body, how many body chunks the app pulled)."""
    import anyio

    pulled = 0
    queue = list(chunks)
    out: dict = {"status": 0, "headers": {}, "body": b""}

    async def receive():
        nonlocal pulled
        if not queue:
            return {"type": "http.disconnect"}
        pulled += 1
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = {k.decode().lower(): v.decode() for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "testserver", **headers}.items()],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
    anyio.run(app, scope, receive, send)
    return out["status"], out["headers"], out["body"], pulled


SPLIT = dict(split_block=8, split_seed=7, public_fraction=0.5)
BW_SHAPE = (40, 40)


def site_labels(folder):
    """Two tracks: AB on test tiles (hostile_files' tile target), BW on a 40 x 40 scene.
    Returns (the tile target, BW's label array, the two labels files)."""
    import numpy as np
    from hostile_files import make_tile_target

    from c2seg_kit.submission.writers import write_labels

    tiles = make_tile_target(folder)
    bw = np.random.default_rng(5).integers(1, 14, BW_SHAPE).astype(np.uint8)
    return tiles, bw, [tiles.path, write_labels(folder / "labels-BW.h5", bw, "BW")]


def site_pool(labels):
    """The scoring pool (one worker) of ``labels`` on SPLIT: a context manager."""
    from c2seg_server.main import make_pool, served_tracks

    settings = Settings(labels=labels, scoring_workers=1, **SPLIT)
    return make_pool(settings, served_tracks(settings.labels))


#: What a script asks for to get the site's JSON answers.
JSON = {"Accept": "application/json"}
#: The site's refusal of a form post without its session's CSRF token.
FORGED = "refused: the form's security token is missing or wrong; reload the page and try again"


@pytest.fixture(scope="module")
def site_targets(tmp_path_factory):
    return site_labels(tmp_path_factory.mktemp("labels"))


@pytest.fixture(scope="module")
def site_scoring(site_targets):
    with site_pool(site_targets[2]) as p:
        yield p


@pytest.fixture
def make_site_client(tmp_path, site_targets, site_scoring):
    """Factory: a TestClient on a fresh app (its own database unless ``data_dir`` names another's)."""
    clients = []

    def make(base_url="http://testserver", data_dir=None, **settings):
        c = make_app_client(site_targets[2], data_dir or tmp_path / f"data{len(clients)}", site_scoring, base_url=base_url,
                            **{**SPLIT, **settings})
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)
