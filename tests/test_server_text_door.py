"""Participant text is cleaned at the door, and what organizers open
(exports, terminals) carries no formula and no control character; on SQLite and PostgreSQL.

- A filename with NUL, ESC, C1 and bidi controls is stored without them (PostgreSQL refused the
  NUL: the file was scored, then the insert failed with a 500, charged to no one).
- A file whose attributes hold NUL and escape sequences is scored (its method cleaned) or
  refused in one line (a track attribute with a NUL): never a 500.
- `c2seg admin add-team` refuses names with C1 or bidi controls in one line.
- `c2seg admin export`: cells that would run as formulas start with an apostrophe; no cell
  holds a control character.
"""

from __future__ import annotations

import csv
import io
import os
import sys

import h5py
import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import LiveServer, auth, make_target, noisy_prediction  # noqa: E402

from c2seg_kit import text  # noqa: E402

SHAPE = (96, 64)
HOSTILE_NAME = "we\x00ird\x1b[31m\u202egnp.\x85=cmd|' -C calc'!A0.h5"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def live(request, tmp_path):
    db_url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    target = make_target(tmp_path, shape=SHAPE)
    server = LiveServer(tmp_path / "srv", [target.path], db_url=db_url, env={"C2SEG_SPLIT_BLOCK": "16"})
    (tmp_path / "srv").mkdir()
    server.start()
    yield server, target
    server.stop()


def hdf5(path, label, **attrs):
    with h5py.File(path, "w") as f:
        for key, value in {"c2seg_format": "submission/1", "track": "AB", **attrs}.items():
            f.attrs[key] = value
        f.create_dataset("prediction", data=label)
    return path.read_bytes()


def multipart(filename: bytes, data: bytes) -> tuple[bytes, str]:
    """A multipart body whose filename holds exactly these bytes (httpx would escape them)."""
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            b"Content-Type: application/x-hdf5\r\n\r\n" + data + b"\r\n--b0undary--\r\n")
    return body, "multipart/form-data; boundary=b0undary"


def test_nul_and_control_characters_never_reach_the_database(live, tmp_path):
    server, target = live
    token = server.add_team("door")
    pred = noisy_prediction(target.label, 2)
    data = hdf5(tmp_path / "a.h5", pred, method=np.bytes_(b"high\x00dan\x1b[2J\xc2\x9b"))
    body, ctype = multipart(HOSTILE_NAME.encode("utf-8"), data)
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/api/v1/submissions", headers={**auth(token), "Content-Type": ctype}, content=body)
        assert r.status_code == 201, r.text
        got = r.json()
        assert got["filename"] == "weird[31mgnp.=cmd|' -C calc'!A0.h5"  # NUL, ESC, U+202E, U+0085 gone
        assert got["method"] == "highdan[2J"
        # A NUL inside the track attribute: refused in one line (the reader's own words), never a 500.
        bad = hdf5(tmp_path / "b.h5", pred, track=np.bytes_(b"A\x00B"))
        r = c.post("/api/v1/submissions", headers=auth(token), files={"file": ("b.h5", bad)})
        assert r.status_code == 422, r.text
        assert "\n" not in r.json()["detail"] and "\x00" not in r.json()["detail"]
        me = c.get("/api/v1/me", headers=auth(token)).json()
        assert me["failed_today"] == 1 and me["quota"][0]["used_today"] == 1
    assert "Traceback" not in server.log() and "unhandled error" not in server.log()
    from c2seg_server import crud

    with server.session() as s:
        (sub,) = crud.all_submissions(s)
        assert sub.filename == got["filename"] and sub.method == got["method"]


def admin(server, *args) -> tuple[int, str, str]:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")}
    proc = subprocess.run([sys.executable, "-m", "c2seg_kit", "admin", "--db", server.db, *args],
                          capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def test_team_names_with_c1_or_bidi_controls_are_refused(live):
    server, _ = live
    for name, what in (("evil\u202eeman", "U+202E"), ("csi\x9b31m", "U+009B"), ("zero\u200bwidth", "U+200B")):
        code, out, err = admin(server, "add-team", name)
        assert (code, out) == (1, "") and err.startswith("error: a team name contains a control character") \
            and what in err and err.count("\n") == 1, err
    with server.session() as s:
        from c2seg_server import crud

        assert crud.list_teams(s) == []


def test_export_cells_are_neither_formulas_nor_control_characters(live, tmp_path):
    server, target = live
    pred = noisy_prediction(target.label, 3)
    for i, (team, name) in enumerate((("=HYPERLINK(\"http://x\",\"y\")", b"+1+1.h5"),
                                      ("-2+3", b"@SUM(A1)\x1b]0;title\x07.h5"),
                                      ("plain", b"\tleading-tab.h5"))):
        token = server.add_team(team)
        data = hdf5(tmp_path / f"e{i}.h5", pred + 0, method=f"=m{i}\x1b[1m")
        body, ctype = multipart(name, data)
        r = httpx.post(server.url + "/api/v1/submissions", headers={**auth(token), "Content-Type": ctype},
                       content=body, timeout=60)
        assert r.status_code == 201, r.text
    code, out, err = admin(server, "export")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["team"], r["filename"], r["method"]) for r in rows] == [
        ("'=HYPERLINK(\"http://x\",\"y\")", "'+1+1.h5", "'=m0[1m"),
        ("'-2+3", "'@SUM(A1)]0;title.h5", "'=m1[1m"),
        ("plain", "leading-tab.h5", "'=m2[1m")]
    for row in rows:
        for key in ("team", "filename", "method", "url"):
            cell = row[key]
            assert text.for_terminal(cell) == cell and cell[:1] not in ("=", "+", "-", "@", "\t", "\r"), (key, cell)
    assert "\x1b" not in out and "\x07" not in out


@pytest.mark.parametrize("twin", ["alpha\u200d", "al\u00adpha", "alpha\U000e0041", "alpha\u3164", "a\u0301\u0301\u0301\u0301\u0301lpha"],
                         ids=["ZWJ", "soft-hyphen", "tag", "Hangul-filler", "piled-marks"])
def test_a_second_team_cannot_look_exactly_like_the_first(tmp_path, capsys, twin):
    from cli_support import run_cli

    db = f"sqlite:///{tmp_path / 'c2seg.db'}"
    assert run_cli(capsys, "admin", "--db", db, "add-team", "alpha")[0] == 0
    code, out, err = run_cli(capsys, "admin", "--db", db, "add-team", twin)
    assert (code, out) == (1, "") and err.startswith("error: a team name ") and err.count("\n") == 1, err
    assert "invisible character" in err or "combining marks in a row" in err
