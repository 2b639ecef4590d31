"""Upload admission (server/admission.py) under concurrency, on SQLite and PostgreSQL: the
per-team cap, the refused-upload cap counted with uploads in flight, and the spool budget shared
by all teams hold exactly however many admissions race; a finished upload frees its slot and
records its refusal in one step; `forget_all` clears what a killed server left."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("sqlalchemy")

from c2seg_server import admission, crud  # noqa: E402
from c2seg_server.db import init_db, make_engine, make_sessionmaker  # noqa: E402
from c2seg_server.models import FailedAttempt, UploadSlot  # noqa: E402

MiB = 2**20


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sessions(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'c2seg.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    init_db(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def teams(sessions, n: int) -> list[int]:
    with sessions() as s:
        return [crud.add_team(s, f"team-{i}")[0].id for i in range(n)]


def race(sessions, attempts: list[tuple[int, int]], limits: admission.Limits) -> list:
    """Admissions (team id, bytes) started together; each result an Admission or the exception."""
    barrier = threading.Barrier(len(attempts))

    def one(attempt):
        team_id, nbytes = attempt
        barrier.wait(30)
        with sessions() as s:
            try:
                return admission.admit(s, team_id, nbytes, limits)
            except (admission.Busy, crud.QuotaExceeded) as e:
                return e

    with ThreadPoolExecutor(len(attempts)) as ex:
        return list(ex.map(one, attempts))


def count(sessions, model) -> int:
    from sqlalchemy import func, select

    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_the_spool_budget_is_shared_and_exact_under_a_race(sessions):
    ids = teams(sessions, 12)
    limits = admission.Limits(per_team=2, failed_per_day=20, spool_bytes=5 * MiB, hold_s=60)
    results = race(sessions, [(i, MiB) for i in ids], limits)
    admitted = [r for r in results if isinstance(r, admission.Admission)]
    busy = [r for r in results if isinstance(r, admission.Busy)]
    assert len(admitted) == 5 and len(busy) == 7 and {b.status for b in busy} == {503}
    assert count(sessions, UploadSlot) == 5


def test_one_teams_caps_are_exact_under_a_race(sessions):
    (team,) = teams(sessions, 1)
    limits = admission.Limits(per_team=2, failed_per_day=20, spool_bytes=10**12, hold_s=60)
    results = race(sessions, [(team, 1000)] * 10, limits)
    admitted = [r for r in results if isinstance(r, admission.Admission)]
    assert len(admitted) == 2
    assert all(isinstance(r, admission.Busy) and r.status == 429 and "2 uploads of your team are in progress" in str(r)
               for r in results if r not in admitted)
    # Both are refused: each refusal is recorded as its slot goes, in one transaction.
    for held in admitted:
        with sessions() as s:
            admission.finish(s, held, refused="not HDF5")
    assert count(sessions, UploadSlot) == 0 and count(sessions, FailedAttempt) == 2
    # 2 refused today, a cap of 3: of many racing uploads exactly one may be in flight.
    limits = admission.Limits(per_team=5, failed_per_day=3, spool_bytes=10**12, hold_s=60)
    results = race(sessions, [(team, 1000)] * 8, limits)
    assert sum(isinstance(r, admission.Admission) for r in results) == 1
    assert all("refused uploads is used up (3 of 3 today, counting uploads in progress)" in str(r)
               for r in results if isinstance(r, crud.QuotaExceeded))


def test_forget_all_clears_the_slots_a_killed_server_left(sessions):
    (team,) = teams(sessions, 1)
    limits = admission.Limits(per_team=2, failed_per_day=20, spool_bytes=10**12, hold_s=3600)
    with sessions() as s:
        admission.admit(s, team, 10, limits)
        admission.admit(s, team, 10, limits)
        with pytest.raises(admission.Busy):
            admission.admit(s, team, 10, limits)
        assert admission.forget_all(s) == 2
        admission.admit(s, team, 10, limits)  # room again
