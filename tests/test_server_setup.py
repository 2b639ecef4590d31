"""How the server is set up and what it records.

- The public/private split's seed is secret: made with `secrets` when a database is first served,
  different for every database, never in a response, page, log, export or command line; scores
  are on it (not on the old public default); rescoring keeps it; `admin split-seed` shows it;
  `rescore --new-split-seed` replaces it; a served database's split cannot change silently.
- `serve` with an unwritable data folder refuses to start (one line); `/healthz` says 503 once
  the folder cannot be written, and uploads get 503, not 500; `add-team` on a read-only database
  is one line.
- Query strings never reach the access log (a token pasted there included).
- `admin` finds its database and data folder from one setting, says which it uses, and refuses a
  missing database instead of making an empty one.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from cli_support import cli_in_process  # noqa: E402
from live_server import CLI, LiveServer, auth, free_port, make_target, noisy_prediction, upload, wait_for  # noqa: E402
from split_scores import as_served, scores_by_part, served_part  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

SHAPE = (96, 64)
BLOCK = 16
HERE = Path(__file__).resolve().parent


def c2seg(*args, cwd=None, env=None, timeout=120) -> tuple[int, str, str]:
    """`c2seg ARGS` without the caller's C2SEG_* settings: in this interpreter, `serve` in a fresh process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")}
    if args and args[0] == "serve":
        proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                              env={**clean, **(env or {})})
    else:
        proc = cli_in_process(args, cwd=cwd, env={**clean, **(env or {})})
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(code, out, err, *words) -> None:
    assert code == 1 and out == "" and err.startswith("error: ") and err.count("\n") == 1, (code, out, err)
    assert all(w in err for w in words), err


@pytest.fixture
def target(tmp_path):
    return make_target(tmp_path, shape=SHAPE)


def start(root: Path, target, **kw) -> LiveServer:
    root.mkdir(parents=True, exist_ok=True)
    env = {"C2SEG_SPLIT_BLOCK": str(BLOCK), **kw.pop("env", {})}
    return LiveServer(root, [target.path], env=env, **kw).start()


def split_seed(server) -> int:
    code, out, err = c2seg("admin", "--db", server.db, "split-seed")
    assert code == 0, err
    assert re.fullmatch(r"\d+\n", out) and "keep it secret" in err
    return int(out)


# --- the split ------------------------------------------------------------------------------------

def test_every_database_gets_its_own_secret_seed_that_nothing_shows(tmp_path, target):
    from c2seg_server.stored import LEGACY_SEED

    servers = [start(tmp_path / f"s{i}", target, options=["--log-level", "info"]) for i in range(2)]
    try:
        seeds = [split_seed(s) for s in servers]
        assert seeds[0] != seeds[1] and LEGACY_SEED not in seeds and min(seeds) > 2**32  # 63 random bits
        server, secret = servers[0], str(seeds[0])
        token = server.add_team("seen")
        pred = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 1), "AB")
        with httpx.Client(base_url=server.url, timeout=60) as c:
            sid = upload(c, token, pred).json()["id"]
            server.set_phase("AB", "final")
            shown = [c.get(p, headers=auth(token)).text for p in (
                "/healthz", "/", "/?track=AB&view=combined", "/openapi.json", "/api/v1/me", "/api/v1/tracks",
                "/api/v1/submissions", f"/api/v1/submissions/{sid}", "/api/v1/leaderboard?track=AB",
                "/api/v1/leaderboard.csv?track=AB", "/api/v1/leaderboard/combined")]
        shown.append(c2seg("admin", "--db", server.db, "export")[1])
        shown.append(c2seg("admin", "--db", server.db, "list-teams", "--json")[1])
        shown.append(server.log())
        cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in server.children()]
        assert len(cmdlines) == 2  # the scoring children get the seed over their socket, not argv
        assert not [t for t in shown + cmdlines if secret in t]
        assert "GET /healthz" in server.log()  # the access log was on, and searched
    finally:
        for s in servers:
            s.stop()


def export_scores(server) -> list[dict]:
    code, out, err = c2seg("admin", "--db", server.db, "export")
    assert code == 0, err
    return [{k: v for k, v in row.items() if k.startswith(("public_", "private_"))}
            for row in csv.DictReader(io.StringIO(out))]


def test_scores_are_on_the_secret_split_and_rescoring_keeps_it(tmp_path, target):
    from c2seg_server.scoring import public_mask
    from c2seg_server.stored import LEGACY_SEED

    server = start(tmp_path / "srv", target)
    try:
        seed = split_seed(server)
        mask = public_mask(SHAPE, "AB", seed=seed, block=BLOCK, fraction=0.5)
        old = public_mask(SHAPE, "AB", seed=LEGACY_SEED, block=BLOCK, fraction=0.5)
        assert (mask != old).any()  # not the mask anyone can compute from the code
        # A prediction right exactly where the old public default's public part is.
        pred = np.where(old, target.label, (target.label % 13) + 1).astype(np.uint8)
        path = write_submission(tmp_path / "p.h5", pred, "AB")
        token = server.add_team("t")
        with httpx.Client(base_url=server.url, timeout=60) as c:
            got = upload(c, token, path).json()["scores"]
        want = scores_by_part(path, target.label, mask, tmp_path)
        assert served_part(got) == as_served(want["public"])
        assert got["miou"] < 0.9  # on the old public split it would read 1.0
        before = export_scores(server)
        code, _, err = c2seg("admin", "--db", server.db, "rescore", "--labels", target.path, "--scoring-workers", "1")
        assert code == 0 and "rescored 1 submission(s)" in err, err
        assert export_scores(server) == before and split_seed(server) == seed
        # a new secret seed: scores and seed change together, to exactly the new split's scores
        code, _, err = c2seg("admin", "--db", server.db, "rescore", "--labels", target.path, "--scoring-workers", "1",
                             "--new-split-seed")
        assert code == 0 and "on a new secret split seed" in err, err
        fresh = split_seed(server)
        assert fresh != seed
        again = scores_by_part(path, target.label, public_mask(SHAPE, "AB", seed=fresh, block=BLOCK, fraction=0.5),
                               tmp_path)
        (row,) = export_scores(server)
        assert float(row["public_miou"]) == as_served(again["public"])["miou"]
        assert float(row["private_miou"]) == as_served(again["private"])["miou"]
    finally:
        server.stop()


def test_the_split_of_a_served_database_does_not_change_silently(tmp_path, target):
    server = start(tmp_path / "srv", target)
    server.stop()
    code, out, err = c2seg("serve", "--labels", target.path, "--data-dir", server.data_dir, "--port", free_port(),
                           env={"C2SEG_SPLIT_BLOCK": "32"})
    one_line_error(code, out, err, "split is recorded and cannot change", "C2SEG_SPLIT_BLOCK=32 (recorded: 16)")
    code, out, err = c2seg("admin", "--db", server.db, "rescore", "--labels", target.path,
                           env={"C2SEG_SPLIT_SEED": "2023"})
    one_line_error(code, out, err, "C2SEG_SPLIT_SEED differs from the recorded seed")
    assert "2023" not in err.replace("C2SEG_SPLIT_SEED", "")


def test_a_database_scored_before_secret_seeds_keeps_its_split_and_is_told(tmp_path, target):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(HERE / "fixtures" / "c2seg-0.1.db", data / "c2seg.db")  # 5 submissions, scored on seed 2023
    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--labels", str(target.path), "--data-dir", str(data), "--port",
                             str(port)], stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")})
    try:
        lines = [proc.stderr.readline() for _ in range(2)]
    finally:
        proc.terminate()
        proc.wait(20)
    assert lines[0].startswith("serving track(s) AB")
    assert lines[1].startswith("warning: this database's public/private split uses the public default seed")
    code, out, err = c2seg("admin", "--data-dir", data, "split-seed")
    assert (code, out) == (0, "2023\n") and "the public default of releases before secret seeds" in err


# --- careless set-up ------------------------------------------------------------------------------

def test_serve_refuses_a_data_folder_it_cannot_write(tmp_path, target):
    data = tmp_path / "data"
    data.mkdir()
    (data / "spool").write_text("a file where the upload spool should be")
    code, out, err = c2seg("serve", "--labels", target.path, "--data-dir", data, "--port", free_port())
    one_line_error(code, out, err, "the data folder is not writable", str(data / "spool"))
    assert not (data / "c2seg.db").exists()  # refused before anything was made
    if os.geteuid() != 0:  # permission bits bind everyone but root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        code, out, err = c2seg("serve", "--labels", target.path, "--data-dir", locked, "--port", free_port())
        one_line_error(code, out, err, "the data folder is not writable", "Permission denied")


def test_healthz_says_when_the_data_folder_cannot_be_written(tmp_path, target):
    server = start(tmp_path / "srv", target)
    try:
        token = server.add_team("t")
        spool = server.data_dir / "spool"
        shutil.rmtree(spool)
        spool.write_text("not a folder")
        with httpx.Client(base_url=server.url, timeout=30) as c:
            # the health check caches its answer for a second: poll until it tells
            wait_for(lambda: c.get("/healthz").status_code == 503, timeout_s=15, what="/healthz to answer 503")
            r = c.get("/healthz")
            assert r.status_code == 503 and r.json() == {
                "detail": "the server cannot write its data folder: uploads would fail"}
            r = upload(c, token, write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 1), "AB"))
            assert r.status_code == 503 and r.headers["retry-after"] == "60"
            assert "cannot store uploads right now" in r.json()["detail"]
            assert str(spool) not in r.text  # the server's paths are for its log
            spool.unlink()
            wait_for(lambda: c.get("/healthz").status_code == 200, timeout_s=15, what="/healthz to answer 200 again")
        assert f"the data folder is not writable: {spool}" in server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop()


def test_add_team_on_a_read_only_database_is_one_line(tmp_path):
    db = tmp_path / "c2seg.db"
    code, _, err = c2seg("admin", "--db", f"sqlite:///{db}", "add-team", "first")
    assert code == 0, err
    code, out, err = c2seg("admin", "--db", f"sqlite:///file:{db}?mode=ro&uri=true", "add-team", "second")
    one_line_error(code, out, err, "attempt to write a readonly database")
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT name FROM teams").fetchall() == [("first",)]


@pytest.mark.postgres
def test_add_team_with_a_read_only_postgresql_role_is_one_line(postgres_url):
    import psycopg
    from sqlalchemy.engine import make_url

    code, _, err = c2seg("admin", "--db", postgres_url, "add-team", "first")
    assert code == 0, err
    url = make_url(postgres_url)
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS c2seg_reader")
        conn.execute("CREATE ROLE c2seg_reader LOGIN PASSWORD 'reader'")
        conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO c2seg_reader")
    try:
        reader = url.set(username="c2seg_reader", password="reader").render_as_string(hide_password=False)
        code, out, err = c2seg("admin", "--db", reader, "add-team", "second")
        one_line_error(code, out, err, "permission denied")
        assert "reader@" not in err or ":***@" in err  # the password is masked
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute("REASSIGN OWNED BY c2seg_reader TO CURRENT_USER")
            conn.execute("DROP OWNED BY c2seg_reader")
            conn.execute("DROP ROLE c2seg_reader")


# --- the access log --------------------------------------------------------------------------------

def test_query_strings_never_reach_the_access_log(tmp_path, target):
    server = start(tmp_path / "srv", target, options=["--log-level", "info"])
    try:
        with httpx.Client(base_url=server.url) as c:
            assert c.get("/api/v1/me?token=c2s_SECRET1").status_code == 401
            assert c.get("/api/v1/leaderboard", params={"track": "AB", "token": "c2s_SECRET2"}).status_code == 200
            assert c.get("/?sort=team&c2s_SECRET3").status_code == 200
    finally:
        server.stop()
    log = server.log()
    assert '"GET /api/v1/me?[redacted] HTTP/1.1" 401' in log
    assert '"GET /api/v1/leaderboard?[redacted] HTTP/1.1" 200' in log and '"GET /?[redacted] HTTP/1.1" 200' in log
    assert "SECRET" not in log


# --- one setting finds the database and the data folder -------------------------------------

def test_admin_refuses_a_missing_database_instead_of_making_one(tmp_path, target):
    empty = tmp_path / "empty"
    empty.mkdir()
    for verb in (["list-teams"], ["rescore", "--labels", str(target.path)], ["export"], ["split-seed"]):
        code, out, err = c2seg("admin", *verb, cwd=empty)
        one_line_error(code, out, err, "no database at c2seg-data/c2seg.db",
                       "only `c2seg serve` and `c2seg admin add-team` create a database")
    code, out, err = c2seg("admin", "--db", f"sqlite:///{tmp_path / 'nope.db'}", "list-teams")
    one_line_error(code, out, err, f"no database at {tmp_path / 'nope.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SECRET-labels.h5", "empty"]
    assert list(empty.iterdir()) == []


@pytest.mark.postgres
def test_admin_refuses_an_empty_postgresql_database(postgres_url):
    code, out, err = c2seg("admin", "--db", postgres_url, "list-teams")
    one_line_error(code, out, err, "holds no c2seg tables")


def test_db_alone_finds_the_data_folder_that_serve_recorded(tmp_path, target):
    server = start(tmp_path / "srv", target)
    try:
        token = server.add_team("t")
        with httpx.Client(base_url=server.url, timeout=60) as c:
            assert upload(c, token, write_submission(tmp_path / "p.h5", target.label, "AB")).status_code == 201
    finally:
        server.stop()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = c2seg("admin", "--db", server.db, "rescore", "--labels", target.path, cwd=elsewhere)
    assert code == 0 and out == "" and "rescored 1 submission(s) on track(s) AB" in err, err
    assert err.splitlines()[-1] == (f"database {server.db}; data folder {server.data_dir.resolve()} "
                                    "(recorded by c2seg serve)")
    for verb in (["list-teams"], ["export"], ["phase", "AB"], ["duplicates"], ["members"]):
        code, _, err = c2seg("admin", "--db", server.db, *verb, cwd=elsewhere)
        assert code == 0 and err.splitlines()[-1].startswith(f"database {server.db}; data folder "), (verb, err)
    code, out, err = c2seg("admin", "--db", server.db, "revoke", "nobody", cwd=elsewhere)
    one_line_error(code, out, err, "no team named 'nobody'", f"(database {server.db})")
    assert list(elsewhere.iterdir()) == []
