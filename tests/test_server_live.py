"""The server as organizers run it: `c2seg serve` (uvicorn) on 127.0.0.1, a random port, SQLite
and PostgreSQL; participants' `c2seg submit` / `c2seg leaderboard`; organizers' `c2seg admin`.

PostgreSQL: C2SEG_TEST_POSTGRES_URL if set (CI starts one with scripts/start-test-postgres.sh),
else a throwaway cluster started here from the local binaries. With C2SEG_REQUIRE_POSTGRES=1 a
missing PostgreSQL fails these tests instead of skipping them; C2SEG_REQUIRE_BROWSER=1 does the
same for Chromium.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from live_server import VARIANT, Variants, free_port, wait_for  # noqa: E402
from split_scores import scores_by_part  # noqa: E402

from c2seg_kit.cli import cli, main  # noqa: E402
from c2seg_kit.errors import C2SegError  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402

# Each test starts real server processes: bound them so a hang fails instead of stalling CI.
pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (120, 100)
TOKEN_RE = re.compile(r"^c2s_[A-Za-z0-9_-]{43}\n$")


def _required(var: str) -> bool:
    return os.environ.get(var, "") == "1"


# --- PostgreSQL -----------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    return request.getfixturevalue("postgres_url")


# --- a live server ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    rng = np.random.default_rng(11)
    lab = rng.integers(1, 14, SHAPE).astype(np.uint8)
    lab[:10] = 0
    path = tmp_path_factory.mktemp("live") / "labels.h5"
    write_labels(path, lab, "AB")
    return path, lab


class LiveServer:
    def __init__(self, url: str, db: str, data_dir: Path, proc: subprocess.Popen, settings: dict[str, str]):
        self.url, self.db, self.data_dir, self.proc, self.settings = url, db, data_dir, proc, settings

    def admin(self, *args: str) -> str:
        """Run `c2seg admin --db ... ARGS` in-process, under the server's C2SEG_* settings (as an
        organizer's shell would be: `rescore` must split the labels as the server does); returns
        stdout (stderr kept apart)."""
        result = CliRunner().invoke(cli, ["admin", "--db", self.db, "--data-dir", str(self.data_dir), *args],
                                    env=self.settings)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout


@pytest.fixture
def live_server(tmp_path, labels):
    """Factory: start `c2seg serve` with the given C2SEG_* settings; wait until /healthz answers."""
    procs = []

    def start(db: str, **settings) -> LiveServer:
        port = free_port()
        data_dir = tmp_path / "data"
        env = dict(os.environ, **{f"C2SEG_{k.upper()}": str(v) for k, v in settings.items()})
        env.setdefault("C2SEG_SPLIT_BLOCK", "16")
        env.setdefault("C2SEG_SCORING_WORKERS", "1")
        log = open(tmp_path / f"server-{port}.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from c2seg_kit.cli import main; main()", "serve", "--labels", str(labels[0]),
             "--db", db, "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        for _ in range(150):  # up to 30 s
            if proc.poll() is not None:
                pytest.fail(f"server exited: {(tmp_path / f'server-{port}.log').read_text()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return LiveServer(url, db, data_dir, proc, {k: v for k, v in env.items() if k.startswith("C2SEG_")})
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail("server did not start within 30 s")

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_cli(capsys, *args: str, env: dict | None = None) -> tuple[int, str, str]:
    """`c2seg ARGS` through main() (as the console script runs it): (exit code, stdout, stderr)."""
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def db_count(db: str, table: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db)
    try:
        with engine.connect() as c:
            return c.execute(text(f"SELECT count(*) FROM {table}")).scalar()
    finally:
        engine.dispose()


# --- tests ------------------------------------------------------------------------------------------

def test_end_to_end_over_http(live_server, db_url, labels, tmp_path, capsys):
    server = live_server(db_url)
    token = server.admin("add-team", "alpha")
    assert TOKEN_RE.match(token), "add-team prints the token alone on stdout"
    token = token.strip()
    other = server.admin("add-team", "beta").strip()
    pred = tmp_path / "pred.h5"
    write_submission(pred, labels[1], "AB", method="oracle")

    code, out, err = run_cli(capsys, "submit", str(pred), "--server", server.url, "--token", token, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["scores"]["miou"] == 1.0 and result["track"] == "AB" and result["method"] == "oracle"

    again = tmp_path / "pred-again.h5"  # other bytes: the very same file again would be a 409 (not charged)
    write_submission(again, labels[1], "AB", method="oracle", team="alpha")
    code, out, err = run_cli(capsys, "submit", str(again), env={"C2SEG_SERVER": server.url, "C2SEG_TOKEN": token})
    assert code == 0 and "mIoU" in out and "1.0000" in out and "Surface water" in out

    code, out, _ = run_cli(capsys, "leaderboard", "--server", server.url, "--track", "AB", "--json")
    board = json.loads(out)
    assert [e["team"] for e in board["entries"]] == ["alpha"] and board["entries"][0]["submissions"] == 2
    code, out, _ = run_cli(capsys, "leaderboard", "--server", server.url, "--track", "ab")
    assert code == 0 and "alpha" in out and "1.0000" in out

    own = httpx.get(f"{server.url}/api/v1/submissions/{result['id']}", headers={"Authorization": f"Bearer {token}"})
    theirs = httpx.get(f"{server.url}/api/v1/submissions/{result['id']}", headers={"Authorization": f"Bearer {other}"})
    assert own.status_code == 200 and own.json()["scores"] == result["scores"]
    assert theirs.status_code == 404
    assert db_count(db_url, "submissions") == 2 and db_count(db_url, "scores") == 4
    assert db_count(db_url, "quota_reservations") == 0
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "alpha" in page.text and "content-security-policy" in page.headers


def test_submit_with_a_model_attaches_it_over_http(live_server, labels, tmp_path, capsys):
    """`c2seg submit --model` submits, then attaches the model (checked locally first); a second
    model for the same submission is refused (409) in one line; a model the server would refuse
    is refused before the predictions are sent; `c2seg admin export` lists the attached model."""
    zipped = pytest.importorskip("torch")
    db = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    server = live_server(db, max_model_bytes=200_000)
    token = server.admin("add-team", "alpha").strip()
    pred = tmp_path / "pred.h5"
    write_submission(pred, labels[1], "AB")
    model = tmp_path / "best.pt"
    zipped.save({"format": "c2seg-highdan/1", "w": zipped.zeros(3)}, model)
    base = ["--server", server.url, "--token", token]
    code, out, err = run_cli(capsys, "submit", str(pred), "--model", str(model), *base, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["model"]["kind"] == "checkpoint" and result["model"]["filename"] == "best.pt"
    assert f"to submission {result['id']}" in err
    code, out, err = run_cli(capsys, "attach-model", str(result["id"]), str(model), *base)
    assert code == 1 and "409" in err and "already has a model attached" in err and err.count("\n") == 1, err
    code, out, _ = run_cli(capsys, "submissions", *base, "--json")
    assert json.loads(out)[0]["model"]["sha256"] == result["model"]["sha256"]
    code, out, _ = run_cli(capsys, "submissions", *base)
    assert code == 0 and out.splitlines()[-1].endswith("[model: checkpoint]")
    big = tmp_path / "big.pt"
    zipped.save({"w": zipped.rand(100_000)}, big)  # ~400 kB, over this server's model cap
    other = tmp_path / "pred2.h5"
    write_submission(other, labels[1], "AB", method="again")
    code, out, err = run_cli(capsys, "submit", str(other), "--model", str(big), *base)
    assert code == 1 and "larger than the server accepts" in err and err.count("\n") == 1, err
    assert db_count(db, "submissions") == 1  # refused before the predictions were sent
    rows = list(csv.DictReader(io.StringIO(server.admin("export"))))
    assert [(r["model_kind"], r["model_sha256"]) for r in rows] == [("checkpoint", result["model"]["sha256"])]


@pytest.mark.slow
def test_quota_holds_under_concurrent_requests(live_server, db_url, labels, tmp_path):
    quota, clients = 3, 16
    # uploads_per_team raised so that all of them race for the quota (the default, 2 at once, is
    # tested in test_server_limits.py); each client its own file (an identical one would be a 409)
    server = live_server(db_url, quota_per_day=quota, scoring_workers=2, uploads_per_team=clients)
    token = server.admin("add-team", "alpha").strip()
    files = []
    for i in range(clients):
        write_submission(tmp_path / f"pred{i}.h5", labels[1], "AB", team=f"client {i}")
        files.append((tmp_path / f"pred{i}.h5").read_bytes())
    barrier = threading.Barrier(clients)
    codes: list[int] = []

    def one(data):
        barrier.wait(30)
        r = httpx.post(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                       files={"file": ("p.h5", data)}, timeout=120)
        codes.append(r.status_code)

    threads = [threading.Thread(target=one, args=(data,)) for data in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert sorted(codes) == [201] * quota + [429] * (clients - quota), str(sorted(codes))
    assert db_count(db_url, "submissions") == quota
    assert db_count(db_url, "quota_reservations") == 0


def test_client_explains_401_413_429_and_network_failures(live_server, labels, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    server = live_server(db, quota_per_day=1, max_upload_bytes=50_000)
    token = server.admin("add-team", "alpha").strip()
    small, big = tmp_path / "small.h5", tmp_path / "big.h5"
    write_submission(small, labels[1], "AB")  # ~12 kB: under the cap
    rng = np.random.default_rng(0)
    h5 = __import__("h5py")
    with h5.File(big, "w") as f:  # valid, but incompressible data makes it ~5x the cap
        f.attrs["c2seg_format"], f.attrs["track"] = "submission/1", "AB"
        f.create_dataset("prediction", data=rng.integers(0, 14, (500, 500)).astype(np.uint8))
    base = ["--server", server.url]

    def fails(*args, token_=token):
        code, out, err = run_cli(capsys, "submit", *args, *base, "--token", token_)
        assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
        return err

    assert "401" in fails(str(small), token_="c2s_wrong")
    err = fails(str(big))
    assert "larger than the server accepts" in err and "413" in err  # known before uploading
    # Raw uploads past the cap get 413 from the server itself, from Content-Length alone.
    r = httpx.post(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                   files={"file": ("big.h5", big.read_bytes() * 3)})
    assert r.status_code == 413 and "larger than this server accepts" in r.json()["detail"]
    wrong = tmp_path / "wrong_shape.h5"
    write_submission(wrong, labels[1][:-1], "AB")
    err = fails(str(wrong))
    assert "shape" in err
    code, out, err = run_cli(capsys, "submit", str(small), *base, "--token", token, "--json")
    assert code == 0
    err = fails(str(small))
    assert "429" in err and "resets at" in err
    code, out, err = run_cli(capsys, "submit", str(small), "--server", f"http://127.0.0.1:{free_port()}", "--token", token)
    assert code == 1 and "cannot reach the server" in err and err.count("\n") == 1
    code, out, err = run_cli(capsys, "leaderboard", "--server", f"http://127.0.0.1:{free_port()}", "--track", "AB")
    assert code == 1 and "cannot reach the server" in err
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"junk")
    code, out, err = run_cli(capsys, "submit", str(junk), *base, "--token", token)
    assert code == 1 and "HDF5" in err  # refused locally, before any upload
    me = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["failed_today"] == 0


def test_admin_verbs_revoke_phase_export_and_rescore(live_server, labels, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    server = live_server(db)
    token = server.admin("add-team", "alpha").strip()
    server.admin("add-team", "HighDAN", "--baseline")
    pred = tmp_path / "pred.h5"
    write_submission(pred, labels[1], "AB")
    code, out, err = run_cli(capsys, "submit", str(pred), "--server", server.url, "--token", token, "--json")
    assert code == 0, err
    teams = json.loads(server.admin("list-teams", "--json"))
    assert [(t["name"], t["baseline"], t["submissions"]) for t in teams] == [("alpha", False, 1), ("HighDAN", True, 0)]

    assert server.admin("phase", "AB").strip() == "AB open"
    assert server.admin("phase", "AB", "closed").strip() == "AB closed"
    r = httpx.post(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                   files={"file": ("p.h5", pred.read_bytes())})
    assert r.status_code == 403 and "closed" in r.json()["detail"]

    out_csv = tmp_path / "export.csv"
    server.admin("export", "--out", str(out_csv))
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 1 and rows[0]["team"] == "alpha" and float(rows[0]["public_miou"]) == 1.0
    assert float(rows[0]["private_miou"]) == 1.0

    # A label fix: some class-3 pixels were really class 4. Rescoring brings the perfect-looking
    # submission below 1 on both parts: to exactly what `c2seg score` says on each part.
    fixed = labels[1].copy()
    fixed[(fixed == 3) & (np.arange(SHAPE[1]) % 2 == 0)] = 4
    fixed_path = tmp_path / "labels_fixed.h5"
    write_labels(fixed_path, fixed, "AB")
    server.admin("rescore", "--labels", str(fixed_path), "--scoring-workers", "1")
    rows = list(csv.DictReader(io.StringIO(server.admin("export"))))
    from c2seg_server.scoring import public_mask

    # the split the database recorded when it was first served (a secret seed; block from C2SEG_SPLIT_BLOCK)
    seed = int(server.admin("split-seed"))
    public = public_mask(SHAPE, "AB", seed=seed, block=16, fraction=0.5)
    want = scores_by_part(pred, fixed, public, tmp_path)
    for part in ("public", "private"):
        assert want[part]["miou"] < 1.0
        for key in ("miou", "oa", "f1", "kappa"):
            assert float(rows[0][f"{part}_{key}"]) == round(want[part][key], 4), (part, key)

    server.admin("revoke", "alpha")
    r = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    bad = CliRunner().invoke(cli, ["admin", "--db", db, "revoke", "nobody"])
    assert bad.exit_code == 1 and isinstance(bad.exception, C2SegError) and "no team named" in str(bad.exception)


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_page_renders_the_board_in_headless_chromium(live_server, labels, tmp_path, capsys):
    browser = _chromium()
    if browser is None:
        if _required("C2SEG_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (C2SEG_REQUIRE_BROWSER=1)")
        pytest.skip("chromium is not installed")
    db = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    server = live_server(db)
    token = server.admin("add-team", "<b>Team & Co</b>").strip()
    pred = tmp_path / "pred.h5"
    write_submission(pred, labels[1], "AB")
    assert run_cli(capsys, "submit", str(pred), "--server", server.url, "--token", token)[0] == 0
    # a baseline with a long name and method, as organizers add one
    baseline = server.admin("add-team", "HighDAN reference of the organizers", "--baseline").strip()
    noisy = labels[1].copy()
    noisy[::3] = 1
    write_submission(tmp_path / "base.h5", noisy, "AB")
    assert run_cli(capsys, "submit", str(tmp_path / "base.h5"), "--server", server.url, "--token", baseline,
                   "--method", "HighDAN (HRNet-w32, the authors' recipe, 6000 steps)")[0] == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    dom = subprocess.run([browser, *flags, "--dump-dom", server.url + "/"], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "C2Seg leaderboard" in html and "Track AB" in html
    assert re.search(r'<td class="team">&lt;b&gt;Team &amp; Co&lt;/b&gt;</td>', html), "name shown as text"
    assert "<b>Team" not in html
    assert html.count('class="num iou"') == 26  # 13 classes, 2 rows
    # Screenshots at desktop and phone sizes: the page lays out and paints.
    shots = {}
    for name, size in (("desktop", (1400, 700)), ("phone", (390, 844))):
        shot = tmp_path / f"{name}.png"
        subprocess.run([browser, *flags, f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}",
                        server.url + "/"], capture_output=True, timeout=120)
        from PIL import Image

        shots[name] = np.asarray(Image.open(shot).convert("RGB"))
        assert shots[name].shape[:2] == size[::-1]
    # The class colours reached the header cells: surface water's cyan and urban fabric's red are painted.
    desktop = shots["desktop"]
    assert ((desktop == (0, 255, 255)).all(-1)).sum() > 50 and ((desktop == (255, 0, 0)).all(-1)).sum() > 50
    # On a phone the page fits the screen width (the table scrolls inside its box) and shows text.
    phone = shots["phone"]
    assert (phone.max(-1) < 80).sum() > 500  # dark text pixels
    # At 1400 px every column is in view, open and final (two more columns), and neither a team name
    # nor the baseline tag is cut; at 500 px the page itself does not scroll sideways, its table does.
    for phase in ("open", "final"):
        server.admin("phase", "AB", phase)
        wait_for(lambda: f'class="phase phase-{phase}"' in httpx.get(server.url + "/?track=AB").text,
                 what=f"the board to show phase {phase}")  # the server rebuilds a board at most every ttl_s
        wide = _layout(browser, flags, server.url, tmp_path, 1400)
        assert wide["box"][0] <= wide["box"][1], (phase, wide)
        assert len(wide["cols"]) == (25 if phase == "final" else 22)
        assert all(right <= wide["vw"] for _, right in wide["cols"]), (phase, wide)
        assert len(wide["tags"]) == 1 and all(sw <= cw and right <= cell for sw, cw, right, cell in wide["tags"]), wide
        assert all(sw <= cw for sw, cw in wide["teams"]), wide
        narrow = _layout(browser, flags, server.url, tmp_path, 500)
        assert narrow["page"] <= narrow["vw"] and narrow["box"][0] > narrow["box"][1], narrow
        assert dict(narrow["cols"])["col-team"] <= narrow["vw"]  # rank and team in view


#: Appended to a copy of the board page (not served: the server's CSP forbids scripts) to measure
#: its layout in Chromium: the viewport, each header cell's right edge, the baseline tags and team
#: cells (scrollWidth vs clientWidth: cut when larger), the table box.
LAYOUT_PROBE = """<script>
const box = document.querySelector('.scroll');
const out = {vw: document.documentElement.clientWidth, page: document.documentElement.scrollWidth,
  box: [box.scrollWidth, box.clientWidth],
  cols: [...document.querySelectorAll('table.board thead th')].map(th =>
    [th.id || th.className, th.getBoundingClientRect().right]),
  tags: [...document.querySelectorAll('.tag')].map(t =>
    [t.scrollWidth, t.clientWidth, t.getBoundingClientRect().right, t.closest('td').getBoundingClientRect().right]),
  teams: [...document.querySelectorAll('td.team')].map(td => [td.scrollWidth, td.clientWidth])};
const pre = document.createElement('pre');
pre.id = 'layout';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _layout(browser: str, flags: list[str], url: str, folder: Path, width: int) -> dict:
    """The board's layout at `width` px, measured by LAYOUT_PROBE in a copy of the page that loads
    the server's own stylesheets."""
    import html as html_lib

    page = httpx.get(url + "/").text
    probe = folder / f"layout-{width}.html"
    probe.write_text(page.replace("<head>", f'<head><base href="{url}/">', 1).replace("</body>", LAYOUT_PROBE + "</body>"))
    profile = folder / f"chromium-layout-{width}-{time.monotonic_ns()}"  # no cached stylesheet
    own = [f for f in flags if not f.startswith("--user-data-dir=")]
    dom = subprocess.run([browser, *own, f"--user-data-dir={profile}", f"--window-size={width},900", "--dump-dom",
                          probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="layout"[^>]*>(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


# --- faults and the HTTP edge --------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_load_loses_nothing_acknowledged(live_server, db_url, labels, tmp_path):
    """kill -9 the server while submissions are in flight; after a restart every 201 is there
    with both score rows, and no submission row lacks its scores."""
    import signal

    # 6 uploads of one team in flight (past the default of 2 at once); each a fresh copy (no 409)
    server = live_server(db_url, quota_per_day=100000, scoring_workers=2, uploads_per_team=6)
    token = server.admin("add-team", "alpha").strip()
    pred = tmp_path / "pred.h5"
    write_submission(pred, labels[1], "AB", team=VARIANT)
    copies = Variants(pred.read_bytes())
    acked: list[int] = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{server.url}/api/v1/submissions", headers={"Authorization": f"Bearer {token}"},
                               files={"file": ("p.h5", copies.next())})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    acked.append(r.json()["id"])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for _ in range(100):  # until some are acknowledged (at most 20 s)
        if len(acked) >= 5:
            break
        time.sleep(0.2)
    os.kill(server.proc.pid, signal.SIGKILL)  # the server process; its scoring children see EOF and exit
    server.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(60)
    assert len(acked) >= 5
    restarted = live_server(db_url)
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as c:
        rows = dict(c.execute(text(
            "SELECT s.id, count(sc.id) FROM submissions s LEFT JOIN scores sc ON sc.submission_id = s.id GROUP BY s.id"
        )).all())
    engine.dispose()
    assert set(acked) <= set(rows), "an acknowledged submission was lost"
    assert set(rows.values()) == {2}, "a submission row without both scores"
    board = httpx.get(restarted.url + "/api/v1/leaderboard", params={"track": "AB"}).json()
    assert board["entries"][0]["submissions"] == len(rows)


def test_http_edge_oversized_headers_and_stalled_uploads(live_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'data' / 'c2seg.db'}"
    server = live_server(db, upload_timeout_s=1)
    token = server.admin("add-team", "alpha").strip()
    # Oversized request heads are refused, and the server keeps serving. A head over 16 KiB that
    # arrives in one read reaches the app, which answers 431: 20 KiB fits one loopback segment
    # (64 KiB would not, and arriving in pieces it meets uvicorn's own limit first: 400 or a reset).
    r = httpx.get(server.url + "/healthz", headers={"X-Big": "x" * 20_000}, timeout=10)
    assert r.status_code == 431 and r.json()["detail"] == "request headers larger than 16 KiB"
    try:
        r = httpx.get(server.url + "/healthz", headers={"X-Big": "x" * 2_000_000}, timeout=10)
        assert (r.status_code, r.text) == (400, "Invalid HTTP request received.")  # uvicorn's own answer
    except httpx.HTTPError:
        pass  # reset before the answer arrived (the head was not read to its end): refused just the same
    assert httpx.get(server.url + "/healthz").status_code == 200
    # An upload that stalls mid-body gets 408 after the upload timeout.
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        head = (f"POST /api/v1/submissions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n"
                "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.h5\"\r\n\r\n")
        s.sendall(head.encode())
        answer = s.recv(4096).decode("latin-1")
    assert answer.startswith("HTTP/1.1 408"), answer[:200]
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_organizer_mistakes_are_one_line(tmp_path, labels, capsys):
    port = free_port()  # nothing listens there
    cases = [
        (["admin", "--db", f"postgresql+psycopg://u:pw@127.0.0.1:{port}/x", "list-teams"], "cannot open the database"),
        (["admin", "--db", "not a url", "list-teams"], "not a database URL"),
        (["serve", "--labels", str(tmp_path / "missing.h5")], "labels file not found"),
        (["serve", "--labels", str(labels[0]), "--labels", str(labels[0])], "two labels files for track AB"),
        (["admin", "--data-dir", str(tmp_path / "d"), "add-team", "<x>\nnew line"], "one line"),
    ]
    for args, words in cases:
        code, out, err = run_cli(capsys, *args)
        assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and words in err, (args, err)
        assert "pw@" not in err  # passwords are masked
