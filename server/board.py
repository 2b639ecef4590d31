"""The leaderboard: each team's best submission on a track, ranked.

Ranking: best public mIoU, ties broken by OA, then by the earlier submission. Once a track's
phase is final, each team is still represented by its best *public* submission (a team
cannot pick by private score, which it never saw), and the board is ranked by that
submission's private scores, with the same tie-breaks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy.orm import Session

from . import crud
from .models import Submission
from .schemas import Leaderboard, LeaderboardEntry, Scores


def scores_out(row) -> Scores | None:
    if row is None:
        return None
    return Scores(oa=row.oa, miou=row.miou, f1=row.f1, kappa=row.kappa,
                  per_class_iou=row.per_class_iou, n_pixels=row.n_pixels)


def _rank_key(sub: Submission, split: str):
    sc = sub.score(split)
    miou = sc.miou if sc is not None and sc.miou is not None else -1.0
    oa = sc.oa if sc is not None and sc.oa is not None else -1.0
    return (-miou, -oa, sub.created, sub.id)


def build_board(s: Session, track: str) -> Leaderboard:
    phase = crud.get_phase(s, track)
    final = phase == "final"
    by_team: dict[int, list[Submission]] = {}
    for sub in crud.all_submissions(s, track):
        by_team.setdefault(sub.team_id, []).append(sub)
    best = [min(subs, key=lambda x: _rank_key(x, "public")) for subs in by_team.values()]
    split = "private" if final else "public"
    best.sort(key=lambda x: _rank_key(x, split))
    entries = [
        LeaderboardEntry(
            rank=i + 1,
            team=sub.team.name,
            baseline=sub.team.is_baseline,
            submissions=len(by_team[sub.team_id]),
            created=sub.created,
            public=scores_out(sub.score("public")),
            private=scores_out(sub.score("private")) if final else None,
        )
        for i, sub in enumerate(best)
    ]
    return Leaderboard(track=track, phase=phase, ranked_by=split, entries=entries)


@dataclass(frozen=True)
class CachedBoard:
    board: Leaderboard
    json: bytes  # serialised once, sent as is to every reader


class BoardCache:
    """Per-track boards kept for `ttl_s` seconds; writes made by this process clear them at once.

    With several server processes, a write made by another process shows after at most ttl_s.
    A board built while a write was clearing the cache is not stored (generation counter), so a
    reader never gets a board older than its own team's last acknowledged submission.
    """

    def __init__(self, ttl_s: float):
        self.ttl_s = ttl_s
        self._boards: dict[str, tuple[float, CachedBoard]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def fresh(self, track: str) -> CachedBoard | None:
        """The cached board if it is still fresh; never touches the database (safe on the event loop)."""
        hit = self._boards.get(track)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def get(self, s_factory, track: str) -> CachedBoard:
        hit = self.fresh(track)
        if hit is not None:
            return hit
        with self._lock:
            generation = self._generation
        now = time.monotonic()
        with s_factory() as s:
            board = build_board(s, track)
        entry = CachedBoard(board, board.model_dump_json().encode())
        if self.ttl_s > 0:
            with self._lock:
                if generation == self._generation:
                    self._boards[track] = (now + self.ttl_s, entry)
        return entry

    def invalidate(self, track: str | None = None) -> None:
        with self._lock:
            self._generation += 1
            if track is None:
                self._boards.clear()
            else:
                self._boards.pop(track, None)
