"""The leaderboard: each team's best submission on a track, ranked.

Ranking: best public mIoU, ties broken by OA, then by the earlier submission. Once a track's
phase is final, each team is still represented by its best *public* submission (a team
cannot pick by private score, which it never saw), and the board is ranked by that
submission's private scores, with the same tie-breaks.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, selectinload

from . import crud
from .models import Score, Submission
from .schemas import Leaderboard, LeaderboardEntry, Scores


def scores_out(row) -> Scores | None:
    if row is None:
        return None
    return Scores(oa=row.oa, miou=row.miou, f1=row.f1, kappa=row.kappa,
                  per_class_iou=row.per_class_iou, n_pixels=row.n_pixels)


def _key(miou, oa, created, sub_id):
    return (-(miou if miou is not None else -1.0), -(oa if oa is not None else -1.0), created, sub_id)


def _rank_key(sub: Submission, split: str):
    sc = sub.score(split)
    return _key(sc.miou if sc else None, sc.oa if sc else None, sub.created, sub.id)


def build_board(s: Session, track: str) -> Leaderboard:
    """The board, from one light query over (id, team, created, public mIoU, OA) of every
    submission on the track, then full rows for each team's best submission only."""
    phase = crud.get_phase(s, track)
    final = phase == "final"
    rows = s.execute(
        select(Submission.id, Submission.team_id, Submission.created, Score.miou, Score.oa)
        .join(Score, and_(Score.submission_id == Submission.id, Score.split == "public"))
        .where(Submission.track == track)
    ).all()
    best: dict[int, tuple] = {}
    count: dict[int, int] = {}
    for sub_id, team_id, created, miou, oa in rows:
        key = _key(miou, oa, created, sub_id)
        count[team_id] = count.get(team_id, 0) + 1
        if team_id not in best or key < best[team_id]:
            best[team_id] = key
    subs = s.scalars(
        select(Submission).options(selectinload(Submission.scores), selectinload(Submission.team))
        .where(Submission.id.in_([k[3] for k in best.values()]))
    ).all() if best else []
    split = "private" if final else "public"
    subs = sorted(subs, key=lambda x: _rank_key(x, split))
    entries = [
        LeaderboardEntry(
            rank=i + 1,
            team=sub.team.name,
            baseline=sub.team.is_baseline,
            submissions=count[sub.team_id],
            created=sub.created,
            public=scores_out(sub.score("public")),
            private=scores_out(sub.score("private")) if final else None,
        )
        for i, sub in enumerate(subs)
    ]
    return Leaderboard(track=track, phase=phase, ranked_by=split, entries=entries)


@dataclass(frozen=True)
class CachedBoard:
    board: Leaderboard
    json: bytes  # serialised once, sent as is to every reader


class BoardCache:
    """Per-track boards, rebuilt at most once at a time and reused for `ttl_s` seconds.

    A write made by this process bumps the track's generation, so the next reader gets a board
    built after that write (read-your-writes for the submitting team). Readers arriving while a
    build of the current generation is running wait for it instead of starting their own, so a
    burst of readers costs one database query. With several server processes, a write made by
    another process shows after at most ttl_s.
    """

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._boards: dict[str, tuple[float, int, CachedBoard]] = {}  # track -> (expires, generation, board)
        self._generation: dict[str, int] = {}
        self._building: dict[str, tuple[int, Future]] = {}

    def fresh(self, track: str) -> CachedBoard | None:
        """The cached board if it is fresh and current; never touches the database (safe on the event loop)."""
        hit = self._boards.get(track)
        if hit is not None and hit[0] > time.monotonic() and hit[1] == self._generation.get(track, 0):
            return hit[2]
        return None

    def get(self, s_factory, track: str) -> CachedBoard:
        with self._lock:
            hit = self.fresh(track)
            if hit is not None:
                return hit
            generation = self._generation.get(track, 0)
            building = self._building.get(track)
            if building is not None and building[0] == generation:
                future, builder = building[1], False
            else:
                future, builder = Future(), True
                self._building[track] = (generation, future)
        if not builder:
            return future.result()
        try:
            started = time.monotonic()
            with s_factory() as s:
                board = build_board(s, track)
            entry = CachedBoard(board, board.model_dump_json().encode())
            future.set_result(entry)
            return entry
        except BaseException as e:
            future.set_exception(e)
            raise
        finally:
            with self._lock:
                if self._building.get(track, (None, None))[1] is future:
                    del self._building[track]
                if future.done() and future.exception() is None and self.ttl_s > 0 \
                        and generation == self._generation.get(track, 0):
                    self._boards[track] = (started + self.ttl_s, generation, future.result())

    def invalidate(self, track: str | None = None) -> None:
        with self._lock:
            for t in ([track] if track else list(self._generation) + list(self._boards)):
                self._generation[t] = self._generation.get(t, 0) + 1
