"""Promise 3: nothing acknowledged is lost.

A real `c2seg serve` takes uploads from 8 client threads; it is killed with SIGKILL while
uploads are in flight, then restarted on the same database. Every submission that got a 201 is
there with the very scores that were sent back; every submission row has both its score rows
and its stored file; the scoring children exit by themselves; the restarted server takes
uploads again. On SQLite (a file in WAL mode) and on PostgreSQL.

PostgreSQL: C2SEG_TEST_POSTGRES_URL if set, else a throwaway cluster from
scripts/start-test-postgres.sh; without one these tests skip, unless C2SEG_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("psutil")

from live_server import VARIANT, LiveServer, Variants, auth, make_target, noisy_prediction, reap, upload  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (600, 400)
CLIENTS = 8
ACKED_BEFORE_KILL = 12


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request):
    if request.param == "sqlite":
        yield None  # the server's default: sqlite in its data folder
        return
    yield request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return make_target(tmp_path_factory.mktemp("labels"), shape=SHAPE)


@pytest.fixture(scope="module")
def files(tmp_path_factory, target):
    folder = tmp_path_factory.mktemp("preds")
    return [write_submission(folder / f"p{i}.h5", noisy_prediction(target.label, i), "AB", team=VARIANT)
            for i in range(CLIENTS)]


def hammer(server, tokens, files, acked, stop):
    """CLIENTS threads uploading until the server goes away; 201s go into `acked`."""
    errors = []

    def run(i):
        # each upload fresh bytes of the client's prediction (the same file again would be a 409)
        token, copies = tokens[i % len(tokens)], Variants(files[i].read_bytes())
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                try:
                    r = upload(c, token, copies.next())
                except httpx.HTTPError:
                    return  # the server died under us: this upload was never acknowledged
                if r.status_code == 201:
                    acked.append((token, r.json()))
                else:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads, errors


def check_database(server) -> dict:
    """Every submission has its public and private score rows and its stored file."""
    from sqlalchemy import func, select

    from c2seg_server.models import Score, Submission

    with server.session() as s:
        subs = list(s.scalars(select(Submission)))
        splits = {sub.id: sorted(sc.split for sc in sub.scores) for sub in subs}
        orphans = s.scalar(select(func.count()).select_from(Score).where(
            Score.submission_id.not_in(select(Submission.id))))
    assert all(v == ["private", "public"] for v in splits.values()), splits
    assert orphans == 0
    stored = server.data_dir / "submissions"
    assert all((stored / sub.stored_as).is_file() for sub in subs)
    return {sub.id: sub for sub in subs}


def test_kill_9_loses_no_acknowledged_submission(tmp_path, target, files, db_url):
    server = LiveServer(tmp_path, [target.path], db_url=db_url)
    server.start()
    tokens = [server.add_team(f"t{i}") for i in range(4)]
    acked, stop = [], threading.Event()
    try:
        threads, errors = hammer(server, tokens, files, acked, stop)
        deadline = time.monotonic() + 120
        while len(acked) < ACKED_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= ACKED_BEFORE_KILL, server.log()[-2000:]
        children = server.kill9()  # mid-flight: 8 clients, 2 scoring children, always busy
        n_acked = len(acked)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors
        # The orphaned scoring children notice their parent is gone and exit by themselves.
        assert reap(children, timeout_s=30) == []

        server.start()
        rows = check_database(server)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            found = {}
            for token in tokens:
                for sub in c.get("/api/v1/submissions", headers=auth(token)).json():
                    found[sub["id"]] = sub
            for _token, sub in acked:
                assert sub["id"] in found, f"submission {sub['id']} was acknowledged, then lost"
                assert found[sub["id"]]["scores"] == sub["scores"]
                assert found[sub["id"]]["team"] == sub["team"]
            assert set(found) == set(rows)
            # The restarted server takes uploads again.
            assert upload(c, tokens[0], files[0]).status_code == 201
        print(f"\nkill -9 ({'postgres' if db_url else 'sqlite'}): {n_acked} acknowledged before the kill, "
              f"{len(acked)} in all, {len(found)} found after restart, "
              f"{len(found) - len(acked)} committed but unacknowledged, lost 0")
        assert len(acked) == n_acked  # nothing was acknowledged after the kill
    finally:
        stop.set()
        server.stop()
