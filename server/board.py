"""The leaderboard: each team's submission on a track, ranked (the rules in one place).

- Which submission shows: while a track is open or closed, each team's best public one (highest
  public mIoU; a tie goes to the earlier submission). Once it is final, the private ranking uses
  the best (by private mIoU) of the team's final picks (`c2seg submissions select`, at most
  Settings.final_picks per track); a team that picked none is represented by its best public
  one, as on Kaggle (it never saw private scores, so it cannot pick by them).
- Ranking: by the shown submission's mIoU on the split the board is ranked by (public, or
  private once final); a tie goes to the earlier submission.
- Ladder modes (ladder.py: fixed step, or parameter-free): while the track is not final, each
  team shows the submission that last moved its Ladder value, with that value as its only
  public figure, ranked by it; a team that picked no final pick is represented by that
  submission. Once final, every score shows exactly, as in exact mode.
- Left out: hidden submissions and disqualified teams (both kept in the database).
- Baselines are shown in place but not ranked (rank null); ranks count participants only.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased, selectinload

from . import crud, ladder
from .models import Score, Submission, Team
from .schemas import Leaderboard, LeaderboardEntry, Scores


def scores_out(row) -> Scores | None:
    if row is None:
        return None
    return Scores(oa=row.oa, miou=row.miou, f1=row.f1, kappa=row.kappa,
                  per_class_iou=row.per_class_iou, n_pixels=row.n_pixels)


def ladder_scores(sc: Scores | None, value: float) -> Scores | None:
    """The public scores as ladder mode shows them: the Ladder's value, every other figure withheld."""
    if sc is None:
        return None
    return Scores(oa=None, miou=value, f1=None, kappa=None, per_class_iou={}, n_pixels=sc.n_pixels)


def ladder_best(cands: list[Candidate], policy: ladder.Policy,
                counts: dict | None = None) -> dict[int, tuple[Candidate, float]]:
    """{team: (the submission that set its Ladder value, the value)} over visible submissions
    (`counts`: their per-unit counts, for ladder-auto)."""
    teams: dict[int, list[Candidate]] = {}
    for c in sorted(cands, key=lambda c: c.id):  # the order the answers were given
        teams.setdefault(c.team_id, []).append(c)
    out = {}
    for team_id, cs in teams.items():
        a = ladder.answers_of([(c.id, c.created, c.public_miou, False) for c in cs], policy, counts=counts)
        out[team_id] = (next(c for c in cs if c.id == a.best_id), a.shown[a.best_id][0])
    return out


def key(miou, created, sub_id) -> tuple:
    """Sort key of a submission: higher mIoU first, then the earlier submission."""
    return (-(miou if miou is not None else -1.0), created, sub_id)


@dataclass(frozen=True)
class Candidate:
    """One visible submission, as much as choosing and ranking need."""

    id: int
    team_id: int
    created: object
    public_miou: float | None
    private_miou: float | None
    final_pick: bool
    baseline: bool


def candidates(s: Session, track: str, team_id: int | None = None) -> list[Candidate]:
    """Visible submissions on the track (not hidden, team not disqualified): one light query."""
    pub, priv = aliased(Score), aliased(Score)
    q = (select(Submission.id, Submission.team_id, Submission.created, pub.miou, priv.miou, Submission.final_pick,
                Team.is_baseline)
         .join(Team, Team.id == Submission.team_id)
         .join(pub, and_(pub.submission_id == Submission.id, pub.split == "public"))
         .outerjoin(priv, and_(priv.submission_id == Submission.id, priv.split == "private"))
         .where(Submission.track == track, Submission.hidden.is_(None), Team.disqualified.is_(None)))
    if team_id is not None:
        q = q.where(Submission.team_id == team_id)
    return [Candidate(*row) for row in s.execute(q).all()]


def chosen(cands: list[Candidate]) -> tuple[dict[int, Candidate], dict[int, Candidate]]:
    """({team: best public}, {team: private representative}) over visible submissions."""
    best: dict[int, Candidate] = {}
    picks: dict[int, Candidate] = {}
    for c in cands:
        if c.team_id not in best or key(c.public_miou, c.created, c.id) < key(*_pub(best[c.team_id])):
            best[c.team_id] = c
        if c.final_pick and (c.team_id not in picks
                             or key(c.private_miou, c.created, c.id) < key(*_priv(picks[c.team_id]))):
            picks[c.team_id] = c
    return best, {t: picks.get(t, b) for t, b in best.items()}


def _pub(c: Candidate) -> tuple:
    return c.public_miou, c.created, c.id


def _priv(c: Candidate) -> tuple:
    return c.private_miou, c.created, c.id


def build_board(s: Session, track: str) -> Leaderboard:
    """The board, from one light query over the track's visible submissions, then full rows
    for the shown submission of each team only."""
    phase = crud.get_phase(s, track)
    final = phase == "final"
    cands = candidates(s, track)
    count: dict[int, int] = {}
    for c in cands:
        count[c.team_id] = count.get(c.team_id, 0) + 1
    best, private_rep = chosen(cands)
    policy = ladder.read_policy(s, track)
    value: dict[int, float] = {}
    if policy.ladder:  # what the team was shown stands for it (it never saw its exact scores)
        counts = ladder.unit_counts(s, [c.id for c in cands]) if policy.auto else None
        for team_id, (c, v) in ladder_best(cands, policy, counts).items():
            picked = private_rep[team_id] if private_rep[team_id].final_pick else c
            best[team_id], private_rep[team_id], value[c.id] = c, picked, v
    shown = private_rep if final else best
    rungs = bool(value) and not final
    order = sorted(shown.values(), key=lambda c: key(*(_priv(c) if final else
                                                      (value[c.id], c.created, c.id) if rungs else _pub(c))))
    subs = {sub.id: sub for sub in s.scalars(
        select(Submission).options(selectinload(Submission.scores), selectinload(Submission.team))
        .where(Submission.id.in_([c.id for c in order])))} if order else {}
    entries, rank = [], 0
    for c in order:
        sub = subs[c.id]
        if not c.baseline:
            rank += 1
        entries.append(LeaderboardEntry(
            rank=None if c.baseline else rank, team=sub.team.name, baseline=c.baseline, submissions=count[c.team_id],
            created=sub.created, method=sub.method, description=sub.description, url=sub.url,
            selected=sub.final_pick if final else None,
            public=ladder_scores(scores_out(sub.score("public")), value[c.id]) if rungs
            else scores_out(sub.score("public")),
            private=scores_out(sub.score("private")) if final else None,
        ))
    return Leaderboard(track=track, phase=phase, ranked_by="private" if final else "public", entries=entries,
                       public_scores="ladder" if policy.ladder and not final else "exact",
                       ladder_step=policy.step if policy.ladder and not policy.auto and not final else None,
                       ladder_rule=policy.rule if not final else None)


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
