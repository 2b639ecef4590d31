"""What an upload must hold before a byte of its body is read: an upload slot, and, when its
track is known, its quota slot. Taken in one short transaction, under the same locks as the
quota (crud.reserve_slot), so caps hold however many uploads arrive at once:

- a team has at most `uploads_per_team` uploads in progress (429 at once past it);
- refused uploads today *plus uploads in progress* stay under the daily cap of refused uploads
  (an upload in flight may yet be refused: it is counted before the work, not after);
- all uploads in progress together reserve at most the spool budget (their declared
  Content-Length, or the upload cap when they declare none): past it, 503 with Retry-After;
- with the track known (declared by the client, or the only one served), the quota slot is
  taken in the same transaction, so an over-quota team is answered before it sends its file.

The slot is deleted when the upload ends, in the same transaction that records the outcome (a
refused upload's FailedAttempt, or the submission), so the counts never dip in between. A
server that dies leaves slots that expire on their own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from . import phases
from .crud import QuotaExceeded, failures_today, lock_team, take_quota, utc_day
from .models import FailedAttempt, QuotaReservation, UploadSlot, utcnow

#: Any fixed number: the PostgreSQL advisory lock that serialises admissions (the spool budget is
#: shared by every team). SQLite needs none: its write lock is already global.
_PG_ADMISSION_LOCK = 0x6332_7370_6F6F


class Busy(Exception):
    """Too much in flight: answer `status` with Retry-After `retry_after_s`."""

    def __init__(self, status: int, message: str, retry_after_s: int):
        super().__init__(message)
        self.status, self.retry_after_s = status, retry_after_s


@dataclass(frozen=True)
class Limits:
    per_team: int
    failed_per_day: int
    spool_bytes: int
    hold_s: float


@dataclass
class Admission:
    team_id: int
    slot_id: int
    reservation: QuotaReservation | None


def admit(s: Session, team_id: int, nbytes: int, limits: Limits, *, track: str | None = None,
          quota: int | None = None, phase: phases.PhaseState | None = None) -> Admission:
    """Take an upload slot of `nbytes` (and the quota slot of `track`, if given), or raise Busy,
    QuotaExceeded or crud.TeamRevoked, having changed nothing."""
    now = utcnow()
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ADMISSION_LOCK})
    lock_team(s, team_id, now)
    live = UploadSlot.expires > now
    in_flight = s.scalar(select(func.count()).where(UploadSlot.team_id == team_id, live))
    if in_flight >= limits.per_team:
        s.rollback()
        raise Busy(429, f"{in_flight} uploads of your team are in progress (at most {limits.per_team} at once); "
                        "send the next one when one has finished", 5)
    refused = failures_today(s, team_id)
    if refused + in_flight >= limits.failed_per_day:
        s.rollback()
        raise QuotaExceeded("the daily allowance of refused uploads is", refused + in_flight, limits.failed_per_day,
                            utc_day(now)[1], per="today, counting uploads in progress")
    spooled = s.scalar(select(func.coalesce(func.sum(UploadSlot.bytes), 0)).where(live))
    if spooled + nbytes > limits.spool_bytes:
        s.rollback()
        raise Busy(503, "the server is receiving too many uploads at once (its spool is full); "
                        "try again in a minute", 30)
    reservation = None
    if track is not None:
        reservation = take_quota(s, team_id, track, quota, limits.hold_s, phase, now)
    slot = UploadSlot(team_id=team_id, bytes=nbytes, created=now, expires=now + dt.timedelta(seconds=limits.hold_s))
    s.add(slot)
    s.commit()
    return Admission(team_id=team_id, slot_id=slot.id, reservation=reservation)


def forget_all(s: Session) -> int:
    """Delete every upload slot: run by `c2seg serve` as it starts, when no upload of this
    database can be in flight (a killed server's slots would otherwise hold its teams' uploads,
    refused-upload counts and spool budget until they expire)."""
    n = s.execute(delete(UploadSlot)).rowcount
    s.commit()
    return n


def finish(s: Session, admission: Admission, *, refused: str | None = None) -> None:
    """End the upload: free its slot (and its quota reservation, unless it became a submission),
    recording a refusal when there was one, in one transaction."""
    s.execute(delete(UploadSlot).where(UploadSlot.id == admission.slot_id))
    if admission.reservation is not None:
        s.execute(delete(QuotaReservation).where(QuotaReservation.id == admission.reservation.id))
    if refused is not None:
        s.add(FailedAttempt(team_id=admission.team_id, reason=refused[:300]))
    s.commit()
