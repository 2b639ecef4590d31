"""The leaderboard features as people use them, against a live `c2seg serve` (both tracks): the participants' verbs
(`submit --method/--description/--url`, `me`, `submissions`, `submissions select|edit`), the
organizers' `c2seg admin` verbs, and the page in headless Chromium (sorting, the combined view,
a disqualified team, every column reachable on a desktop and on a narrow screen).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from live_server import LiveServer  # noqa: E402

from c2seg_kit.classes import EVAL_CLASSES  # noqa: E402
from c2seg_kit.cli import cli, main  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SHAPES = {"AB": (64, 48), "BW": (40, 40)}
TOKEN_RE = re.compile(r"^c2s_[A-Za-z0-9_-]{43}\n$")


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels")
    out = {}
    for i, (track, shape) in enumerate(SHAPES.items()):
        lab = np.random.default_rng(20 + i).integers(1, 14, shape).astype(np.uint8)
        write_labels(folder / f"labels_{track}.h5", lab, track)
        out[track] = (folder / f"labels_{track}.h5", lab)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, labels):
    srv = LiveServer(tmp_path_factory.mktemp("server"), [labels["AB"][0], labels["BW"][0]],
                     env={"C2SEG_SCORING_WORKERS": "1", "C2SEG_QUOTA_PER_DAY": "50", "C2SEG_SPLIT_BLOCK": "8"})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def pred(tmp_path, labels):
    counter = iter(range(10**6))

    def make(track="AB", right=1.0, seed=0, **kw):
        lab = labels[track][1]
        keep = np.random.default_rng(seed).random(lab.shape) < right
        path = tmp_path / f"pred{next(counter)}.h5"
        write_submission(path, np.where(keep, lab, lab % 13 + 1).astype(np.uint8), track, **kw)
        return path

    return make


def run(capsys, *args: str, token: str | None = None, server: LiveServer | None = None) -> tuple[int, str, str]:
    """`c2seg ARGS` through main(), as the console script runs it: (exit code, stdout, stderr)."""
    env = {"C2SEG_SERVER": server.url if server else None, "C2SEG_TOKEN": token}
    old = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def admin(server: LiveServer, *args: str, code: int = 0):
    result = CliRunner().invoke(cli, ["admin", "--db", server.db, "--data-dir", str(server.data_dir), *args])
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def one_line_error(code, out, err, words):
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert words in err, err


# --- participants ------------------------------------------------------------------------------------

def test_submit_with_metadata_then_me_and_submissions(server, pred, capsys):
    token = server.add_team("p-alpha")
    code, out, err = run(capsys, "submit", str(pred(right=0.9)), "--method", "HighDAN+", "--description",
                         "line one\r\nline two", "--url", "https://example.org/p", "--json", token=token, server=server)
    assert code == 0, err
    sub = json.loads(out)
    assert (sub["method"], sub["description"], sub["url"]) == ("HighDAN+", "line one\nline two", "https://example.org/p")
    code, out, err = run(capsys, "submissions", "--json", token=token, server=server)
    listed = json.loads(out)
    assert [(s["id"], s["method"], s["status"], s["best_public"], s["final_pick"]) for s in listed] == [
        (sub["id"], "HighDAN+", "scored", True, False)]
    code, out, err = run(capsys, "submissions", token=token, server=server)
    assert code == 0 and re.search(rf"^\s*{sub['id']}\s+\S+ \S+\s+AB\s+scored\s+0\.\d{{4}}.*HighDAN\+\s+best public",
                                   out, re.M), out
    # `me`: quota used and left, reset time (next UTC midnight), phase and its end.
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%MZ")
    admin(server, "phase", "AB", "closed", "--at", ends)
    try:
        code, out, err = run(capsys, "me", token=token, server=server)
        midnight = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime("%Y-%m-%d 00:00 UTC")
        assert code == 0 and "team p-alpha" in out
        assert f"today:      1 used, 49 left; resets at {midnight}" in out
        assert f"track AB: open until {ends[:10]} {ends[11:16]} UTC (then closed)" in out
        assert "track BW: open (no change scheduled)" in out
        assert "final picks: none (your best public submission counts) (at most 2)" in out
        info = json.loads(run(capsys, "me", "--json", token=token, server=server)[1])
        assert info["quota"][0]["phase_ends"].startswith(ends[:16].replace("Z", ""))
    finally:
        admin(server, "phase", "AB", "--unschedule")
    assert "open (no change scheduled)" in run(capsys, "me", token=token, server=server)[1]


def test_bad_metadata_is_refused_before_anything_is_sent(server, pred, capsys):
    token = server.add_team("p-careful")
    for args, words in ((["--method", "red\x1b[31m"], "U+001B"), (["--url", "javascript:alert(1)"], "http://"),
                        (["--description", "d" * 1001], "at most 1000")):
        one_line_error(*run(capsys, "submit", str(pred()), *args, token=token, server=server), words)
    me = httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["quota"][0]["used_today"] == 0 and me["failed_today"] == 0


def test_select_final_picks_and_edit_metadata(server, pred, capsys):
    token, other = server.add_team("p-picker"), server.add_team("p-other")
    ids = [json.loads(run(capsys, "submit", str(pred(right=r, seed=i)), "--json", token=token, server=server)[1])["id"]
           for i, r in enumerate((0.5, 0.7, 0.6))]
    bw = json.loads(run(capsys, "submit", str(pred("BW")), "--json", token=token, server=server)[1])["id"]
    theirs = json.loads(run(capsys, "submit", str(pred()), "--json", token=other, server=server)[1])["id"]
    code, out, err = run(capsys, "submissions", "select", str(ids[0]), str(ids[2]), str(bw), token=token, server=server)
    assert code == 0, err
    assert f"track AB: final picks {ids[0]}, {ids[2]} (at most 2)" in out and f"track BW: final picks {bw}" in out
    listed = {s["id"]: s for s in json.loads(run(capsys, "submissions", "--json", token=token, server=server)[1])}
    assert [i for i, s in listed.items() if s["final_pick"]] == [ids[0], ids[2], bw]
    assert not listed[ids[1]]["private_candidate"] and listed[ids[1]]["best_public"]
    one_line_error(*run(capsys, "submissions", "select", *map(str, ids), token=token, server=server), "at most 2")
    one_line_error(*run(capsys, "submissions", "select", str(theirs), token=token, server=server),
                   f"you have no submission {theirs}")
    assert run(capsys, "submissions", "select", token=token, server=server)[0] == 2  # nothing to do: usage
    code, out, _ = run(capsys, "submissions", "select", "--track", "AB", token=token, server=server)
    assert code == 0 and "track AB: final picks none" in out
    # edit: set, clear, refuse
    code, out, err = run(capsys, "submissions", "edit", str(ids[1]), "--method", "v2", "--url", "https://x.org",
                         token=token, server=server)
    assert code == 0 and "method v2; url https://x.org" in out, err
    board = httpx.get(server.url + "/api/v1/leaderboard", params={"track": "AB"}).json()
    assert next(e for e in board["entries"] if e["team"] == "p-picker")["method"] == "v2"
    code, out, _ = run(capsys, "submissions", "edit", str(ids[1]), "--clear", "url", token=token, server=server)
    assert code == 0 and "url -" in out
    one_line_error(*run(capsys, "submissions", "edit", str(ids[1]), "--url", "ftp://x", token=token, server=server),
                   "http://")
    one_line_error(*run(capsys, "submissions", "edit", str(theirs), "--method", "x", token=token, server=server),
                   f"you have no submission {theirs}")
    assert run(capsys, "submissions", "edit", str(ids[1]), token=token, server=server)[0] == 2


# --- organizers ----------------------------------------------------------------------------------------

def test_admin_tokens_members_hide_disqualify(server, pred, capsys):
    admin(server, "add-team", "o-team")
    token = admin(server, "rotate-token", "o-team").stdout
    assert TOKEN_RE.match(token)
    old = admin(server, "rotate-token", "o-team").stdout.strip()  # rotate again: the first one dies
    assert httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {token.strip()}"}).status_code == 401
    assert httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {old}"}).status_code == 200
    admin(server, "revoke", "o-team")
    new = admin(server, "rotate-token", "o-team").stdout.strip()  # lifts the revoke
    assert httpx.get(server.url + "/api/v1/me", headers={"Authorization": f"Bearer {new}"}).status_code == 200

    admin(server, "member", "o-team", "--name", "Ada Lovelace", "--email", "ada@uni.example", "--affiliation", "UCL")
    admin(server, "member", "o-team", "--name", "Ada L.", "--email", "ADA@uni.example")  # same address: updated
    admin(server, "member", "o-team", "--name", "Bo", "--email", "bo@x.example")
    rows = json.loads(admin(server, "members", "o-team", "--json").stdout)
    assert [(r["name"], r["email"], r["affiliation"]) for r in rows] == [
        ("Ada L.", "ada@uni.example", None), ("Bo", "bo@x.example", None)]
    admin(server, "member", "o-team", "--email", "bo@x.example", "--remove")
    assert len(json.loads(admin(server, "members", "--json").stdout)) == 1
    for args, words in ((["member", "o-team", "--name", "X", "--email", "not-an-address"], "not an e-mail"),
                        (["member", "o-team", "--name", "X\u202e", "--email", "x@y.example"], "control character"),
                        (["member", "nobody", "--name", "X", "--email", "x@y.example"], "no team named"),
                        (["hide", "999999"], "no submission 999999"),
                        (["disqualify", "o-team", "--reason", "two\nlines"], "line break")):
        code, out, err = run(capsys, "admin", "--db", server.db, "--data-dir", str(server.data_dir), *args)
        one_line_error(code, out, err, words)
    assert run(capsys, "admin", "--db", server.db, "disqualify", "o-team")[0] == 2  # --reason is required

    sid = json.loads(run(capsys, "submit", str(pred()), "--json", token=new, server=server)[1])["id"]

    def on_board():
        return [e["team"] for e in httpx.get(server.url + "/api/v1/leaderboard", params={"track": "AB"}).json()["entries"]]

    assert "o-team" in on_board()
    admin(server, "hide", str(sid))
    assert "o-team" not in on_board()
    admin(server, "unhide", str(sid))
    admin(server, "disqualify", "o-team", "--reason", "shared predictions")
    assert "o-team" not in on_board()
    teams = {t["name"]: t for t in json.loads(admin(server, "list-teams", "--json").stdout)}
    assert teams["o-team"]["disqualified"] == "shared predictions" and teams["o-team"]["members"] == 1
    one_line_error(*run(capsys, "submit", str(pred()), token=new, server=server), "disqualified: shared predictions")
    admin(server, "reinstate", "o-team")
    assert "o-team" in on_board()


def test_admin_fetch_duplicates_and_phase_checks(server, pred, tmp_path, capsys):
    ta, tb = server.add_team("d-one"), server.add_team("d-two")
    same = pred(right=0.4, seed=77)
    a = json.loads(run(capsys, "submit", str(same), "--json", token=ta, server=server)[1])["id"]
    b = json.loads(run(capsys, "submit", str(same), "--json", token=tb, server=server)[1])["id"]
    out = tmp_path / "fetched.h5"
    admin(server, "fetch", str(a), "--out", str(out))
    assert out.read_bytes() == same.read_bytes()
    code, o, err = run(capsys, "admin", "--db", server.db, "--data-dir", str(server.data_dir), "fetch", str(a),
                       "--out", str(out))
    one_line_error(code, o, err, "already exists; it was left as it is")
    admin(server, "fetch", str(b), "--out", str(out), "--force")
    assert out.read_bytes() == same.read_bytes() and not list(tmp_path.glob(".fetched*"))
    groups = json.loads(admin(server, "duplicates", "--json", "--track", "AB").stdout)
    mine = [g for g in groups if {a, b} <= {x["id"] for x in g["submissions"]}]
    assert [g["kind"] for g in mine] == ["file"]
    text = admin(server, "duplicates").stdout
    assert re.search(rf"^file [0-9a-f]{{16}}:\n(.*\n)*\s+{a}\s+d-one", text, re.M)
    assert "rescore" in admin(server, "duplicates", "--help").stdout
    for args, words in ((["--at", "2026-12-01T00:00"], "UTC with a Z"), (["--at", "2020-01-01T00:00Z"], "in the past"),
                        (["--at", "soon"], "not an ISO 8601 time")):
        code, o, err = run(capsys, "admin", "--db", server.db, "phase", "BW", "closed", *args)
        one_line_error(code, o, err, words)
    result = admin(server, "phase", "BW", "final", "--at", "2099-01-01T00:00Z", "--cap", "7")
    assert result.stdout == "BW open\n" and "scheduled: final at 2099-01-01T00:00:00Z (cap 7)" in result.stderr
    admin(server, "phase", "BW", "--unschedule")
    assert "scheduled" not in admin(server, "phase", "BW").stderr


# --- the page in a browser ------------------------------------------------------------------------------

def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_page_sorting_combined_view_disqualified_team_and_reachable_columns(server, pred, tmp_path, capsys):
    browser = _chromium()
    if browser is None:
        if os.environ.get("C2SEG_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (C2SEG_REQUIRE_BROWSER=1)")
        pytest.skip("chromium is not installed")
    for name, q in (("w-zeta", 0.95), ("w-<b>amp&</b>", 0.97), ("w-cheat", 0.99)):
        token = server.add_team(name)
        run(capsys, "submit", str(pred(right=q, seed=int(q * 100))), "--method", f"m-{name[2:5]}", token=token,
            server=server)
        if name == "w-zeta":
            run(capsys, "submit", str(pred("BW", right=0.99)), token=token, server=server)
    admin(server, "disqualify", "w-cheat", "--reason", "copied")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]

    def dom(query: str) -> str:
        r = subprocess.run([browser, *flags, "--dump-dom", server.url + "/" + query], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    def teams(html: str) -> list[str]:
        return re.findall(r'<td class="team">(w-[^<]*?)(?: <span|</td>)', html)

    by_team = dom("?track=AB&sort=team&dir=desc")
    assert teams(by_team) == ["w-zeta", "w-&lt;b&gt;amp&amp;&lt;/b&gt;"]  # sorted by name, descending, escaped
    assert 'id="col-team" aria-sort="descending"' in by_team
    ranked = dom("?track=AB")
    assert teams(ranked) == ["w-&lt;b&gt;amp&amp;&lt;/b&gt;", "w-zeta"]  # by mIoU; the cheat is gone
    assert "w-cheat" not in ranked and "m-che" not in ranked
    combined = dom("?view=combined")
    assert 'aria-current="page">Combined' in combined and "Mean rank" in combined
    assert teams(combined)[:1] == ["w-zeta"]  # the only w- team with both tracks
    assert "w-cheat" not in combined
    rows = re.findall(r'<td class="team">w-zeta</td>\s*<td class="num strong">([0-9.]+)</td>', combined)
    cb = httpx.get(server.url + "/api/v1/leaderboard/combined").json()
    assert rows == [f"{next(e['mean_rank'] for e in cb['entries'] if e['team'] == 'w-zeta'):.2f}"]

    def shot(name: str, size: tuple[int, int], query: str) -> np.ndarray:
        path = tmp_path / f"{name}.png"
        subprocess.run([browser, *flags, f"--window-size={size[0]},{size[1]}", f"--screenshot={path}",
                        server.url + "/" + query], capture_output=True, timeout=120)
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))

    def painted(img: np.ndarray, hex_colour: str) -> int:
        rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
        return int((img == rgb).all(-1).sum())

    # A 1700 px desktop shows every class column (docs/leaderboard.png used to stop at "Open spaces").
    desktop = shot("desktop", (1700, 900), "?track=AB")
    for c in EVAL_CLASSES:
        assert painted(desktop, c.colour) > 200, c.name
    # A narrow screen (500 px, headless Chromium's narrowest window): the table scrolls inside its box;
    # the last class column is off screen at first and reached by scrolling to it.
    last = EVAL_CLASSES[-1]
    first_view = shot("narrow", (500, 900), "?track=AB")
    scrolled = shot("narrow-scrolled", (500, 900), f"?track=AB#col-iou_{last.name}")
    assert painted(first_view, last.colour) == 0 and painted(scrolled, last.colour) > 200
    assert painted(scrolled, EVAL_CLASSES[0].colour) == 0  # it scrolled sideways, not the page
    assert (scrolled[:, :120].max(-1) < 80).sum() > 200  # the sticky rank/team column stays, with text
