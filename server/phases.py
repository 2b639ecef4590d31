"""A track's phases as a dated list of changes (the phase_changes table), read at request time.

`c2seg admin phase AB closed --at 2026-12-01T00:00Z` adds a change dated in the future; every
request computes the phase from the list, so the change applies on time without a restart or a
background job. The same list gives the phase's start (from which the per-phase cap counts),
its end (the next change to another phase: shown by `c2seg me` and in 429 answers) and its cap.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .models import PHASES, PhaseChange, utcnow


@dataclass(frozen=True)
class PhaseState:
    track: str
    phase: str  # open | closed | final
    since: dt.datetime | None  # when this phase began (None: open since the start)
    ends: dt.datetime | None  # the next change to another phase, if one is scheduled
    next_phase: str | None
    cap: int | None  # submissions per team in this phase; None: no cap


def changes(s: Session, track: str) -> list[PhaseChange]:
    return list(s.scalars(select(PhaseChange).where(PhaseChange.track == track)
                          .order_by(PhaseChange.at, PhaseChange.id)))


def state(s: Session, track: str, *, now: dt.datetime | None = None, default_cap: int | None = None) -> PhaseState:
    """The track's phase at `now`. Consecutive changes to the same phase are one phase (a
    change that only sets a new cap does not restart the count; a track open from the start and
    reopened with a cap is still in its first phase); the latest change's cap holds."""
    now = now or utcnow()
    rows = changes(s, track)
    past = [r for r in rows if r.at <= now]
    phase = past[-1].phase if past else "open"
    since = None
    for r in reversed(past):
        if r.phase != phase:
            break
        since = r.at
    else:  # every change so far set this phase: if it is "open", the phase runs from the start
        since = None if phase == "open" else since
    cap = past[-1].cap if past and past[-1].cap is not None else default_cap
    upcoming = next((r for r in rows if r.at > now and r.phase != phase), None)
    return PhaseState(track=track, phase=phase, since=since, ends=upcoming.at if upcoming else None,
                      next_phase=upcoming.phase if upcoming else None, cap=cap)


def current(s: Session, track: str, *, now: dt.datetime | None = None) -> str:
    return state(s, track, now=now).phase


def schedule(s: Session, track: str, phase: str, *, at: dt.datetime | None = None, cap: int | None = None,
             now: dt.datetime | None = None) -> PhaseChange:
    """Add a change: now (at=None) or at a future moment; one transaction."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}")
    if cap is not None and cap < 0:
        raise ValueError("a phase's cap must be 0 or more")
    now = now or utcnow()
    if at is not None:
        if at.tzinfo is None:
            raise ValueError("give the time in UTC, e.g. 2026-12-01T00:00Z")
        if at < now - dt.timedelta(seconds=1):
            raise ValueError(f"{iso(at)} is in the past; leave out --at to change the phase now")
    row = PhaseChange(track=track, phase=phase, at=at or now, cap=cap, created=now)
    s.add(row)
    s.commit()
    return row


def unschedule(s: Session, track: str, *, now: dt.datetime | None = None) -> int:
    """Drop the track's changes that have not happened yet; returns how many."""
    n = s.execute(delete(PhaseChange).where(PhaseChange.track == track, PhaseChange.at > (now or utcnow()))).rowcount
    s.commit()
    return n


def parse_utc(text: str) -> dt.datetime:
    """ISO 8601 with an explicit UTC marker ('Z' or +00:00), minutes at least: 2026-12-01T00:00Z."""
    raw = text.strip()
    try:
        t = dt.datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01T00:00Z)") from None
    if t.tzinfo is None or t.utcoffset() != dt.timedelta(0):
        raise ValueError(f"give the time in UTC with a Z, e.g. 2026-12-01T00:00Z (got {text!r})")
    return t.astimezone(dt.timezone.utc)


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
