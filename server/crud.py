"""Database operations, each a short transaction on the Session it is given.

The quota is enforced by `reserve_slot`: it first UPDATEs the team's row, which takes a
write lock (SQLite: the database write lock, waited for under busy_timeout; PostgreSQL: the
row lock, like SELECT ... FOR UPDATE) before it counts the day's submissions and live
reservations. Two reservations of one team are therefore serialised and can never both see
a free slot that only one of them may take.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, selectinload

from .models import PHASES, FailedAttempt, Phase, QuotaReservation, Score, Submission, Team, utcnow
from .security import hash_token, new_token, token_matches


class QuotaExceeded(Exception):
    def __init__(self, what: str, used: int, limit: int, resets: dt.datetime):
        self.what, self.used, self.limit, self.resets = what, used, limit, resets
        super().__init__(f"{what} used up ({used} of {limit} today); it resets at {iso(resets)}")


class TeamRevoked(Exception):
    pass


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def utc_day(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """(this UTC day's midnight, the next one)."""
    now = now or utcnow()
    start = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + dt.timedelta(days=1)


# --- teams -------------------------------------------------------------------------------

def add_team(s: Session, name: str, *, baseline: bool = False) -> tuple[Team, str]:
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("a team name must be 1 to 100 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("a team name must be one line of printable characters")
    if s.scalar(select(Team).where(Team.name == name)) is not None:
        raise ValueError(f"team {name!r} already exists")
    token = new_token()
    team = Team(name=name, token_hash=hash_token(token), is_baseline=baseline)
    s.add(team)
    s.commit()
    return team, token


def team_by_token(s: Session, token: str) -> Team | None:
    team = s.scalar(select(Team).where(Team.token_hash == hash_token(token)))
    # The lookup is by hash (an index); compare again in constant time before trusting it.
    if team is None or not token_matches(token, team.token_hash) or team.revoked is not None:
        return None
    return team


def get_team(s: Session, name: str) -> Team:
    team = s.scalar(select(Team).where(Team.name == name))
    if team is None:
        raise ValueError(f"no team named {name!r}")
    return team


def list_teams(s: Session) -> list[Team]:
    return list(s.scalars(select(Team).order_by(Team.id)))


def revoke_team(s: Session, name: str) -> Team:
    team = get_team(s, name)
    team.revoked = team.revoked or utcnow()
    s.commit()
    return team


# --- phases ------------------------------------------------------------------------------

def get_phase(s: Session, track: str) -> str:
    row = s.get(Phase, track)
    return row.phase if row is not None else "open"


def set_phase(s: Session, track: str, phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}")
    row = s.get(Phase, track)
    if row is None:
        s.add(Phase(track=track, phase=phase))
    else:
        row.phase = phase
    s.commit()


# --- quota -------------------------------------------------------------------------------

def failures_today(s: Session, team_id: int) -> int:
    start, _ = utc_day()
    return s.scalar(select(func.count()).where(FailedAttempt.team_id == team_id, FailedAttempt.created >= start))


def check_failure_budget(s: Session, team_id: int, cap: int) -> None:
    used = failures_today(s, team_id)
    if used >= cap:
        raise QuotaExceeded("the daily allowance of refused uploads is", used, cap, utc_day()[1])


def record_failure(s: Session, team_id: int, reason: str) -> None:
    s.add(FailedAttempt(team_id=team_id, reason=reason[:300]))
    s.commit()


def used_today(s: Session, team_id: int, track: str, now: dt.datetime | None = None) -> int:
    """Today's scored submissions plus live reservations of (team, track).

    One statement, so one snapshot: under PostgreSQL's READ COMMITTED two separate counts could
    miss a submission that turns from reservation into row between them.
    """
    now = now or utcnow()
    start, _ = utc_day(now)
    done = select(func.count()).where(
        Submission.team_id == team_id, Submission.track == track, Submission.created >= start).scalar_subquery()
    held = select(func.count()).where(
        QuotaReservation.team_id == team_id, QuotaReservation.track == track,
        QuotaReservation.created >= start, QuotaReservation.expires > now).scalar_subquery()
    return s.scalar(select(done + held))


def reserve_slot(s: Session, team_id: int, track: str, quota: int, hold_s: float) -> QuotaReservation:
    """Take one of today's quota slots for (team, track), atomically; raise QuotaExceeded if none is left."""
    now = utcnow()
    # First statement of the transaction, a write: it takes the lock that serialises this team.
    locked = s.execute(update(Team).where(Team.id == team_id, Team.revoked.is_(None)).values(last_reservation=now))
    if locked.rowcount != 1:
        s.rollback()
        raise TeamRevoked()
    used = used_today(s, team_id, track, now)
    if used >= quota:
        s.rollback()
        raise QuotaExceeded(f"the daily quota for track {track} is", used, quota, utc_day(now)[1])
    res = QuotaReservation(team_id=team_id, track=track, created=now, expires=now + dt.timedelta(seconds=hold_s))
    s.add(res)
    s.commit()
    return res


def release_slot(s: Session, reservation_id: int) -> None:
    s.execute(delete(QuotaReservation).where(QuotaReservation.id == reservation_id))
    s.commit()


def purge_expired_reservations(s: Session) -> int:
    n = s.execute(delete(QuotaReservation).where(QuotaReservation.expires <= utcnow())).rowcount
    s.commit()
    return n


# --- submissions -------------------------------------------------------------------------

def commit_submission(s: Session, reservation: QuotaReservation, *, filename: str, size: int, sha256: str,
                      stored_as: str, method: str | None, scores: dict) -> Submission:
    """Write the submission and both score rows, and free the reservation: one transaction."""
    sub = Submission(team_id=reservation.team_id, track=reservation.track, created=reservation.created,
                     filename=filename[:255], size=size, sha256=sha256, stored_as=stored_as, method=method)
    for split in ("public", "private"):
        sub.scores.append(score_row(split, scores[split]))
    s.add(sub)
    s.execute(delete(QuotaReservation).where(QuotaReservation.id == reservation.id))
    s.commit()
    return sub


def score_row(split: str, sc: dict) -> Score:
    return Score(split=split, oa=sc["oa"], miou=sc["miou"], f1=sc["f1"], kappa=sc["kappa"],
                 per_class_iou=sc["per_class_iou"], n_pixels=sc["n_pixels"])


def set_scores(s: Session, sub: Submission, scores: dict) -> None:
    for split in ("public", "private"):
        row = sub.score(split)
        fresh = score_row(split, scores[split])
        for key in ("oa", "miou", "f1", "kappa", "per_class_iou", "n_pixels"):
            setattr(row, key, getattr(fresh, key))


def get_submission(s: Session, submission_id: int, team_id: int) -> Submission | None:
    """The submission if it belongs to the team, else None (whether it exists or not)."""
    return s.scalar(select(Submission).options(selectinload(Submission.scores)).where(
        Submission.id == submission_id, Submission.team_id == team_id))


def team_submissions(s: Session, team_id: int, track: str | None = None) -> list[Submission]:
    q = select(Submission).options(selectinload(Submission.scores)).where(Submission.team_id == team_id)
    if track:
        q = q.where(Submission.track == track)
    return list(s.scalars(q.order_by(Submission.id)))


def all_submissions(s: Session, track: str | None = None) -> list[Submission]:
    q = select(Submission).options(selectinload(Submission.scores), selectinload(Submission.team))
    if track:
        q = q.where(Submission.track == track)
    return list(s.scalars(q.order_by(Submission.id)))
