"""Database operations, each a short transaction on the Session it is given.

The quota is enforced by `reserve_slot`: it first UPDATEs the team's row, which takes a
write lock (SQLite: the database write lock, waited for under busy_timeout; PostgreSQL: the
row lock, like SELECT ... FOR UPDATE) before it counts the day's submissions and live
reservations. Two reservations of one team are therefore serialised and can never both see
a free slot that only one of them may take.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from c2seg_kit import text

from . import ladder, phases
from .models import FailedAttempt, PublicUnits, QuotaReservation, Score, Submission, Team, UploadSlot, utcnow
from .phases import iso
from .security import hash_token, new_token, token_matches


class QuotaExceeded(Exception):
    """A quota is used up. `resets`: when a slot comes back (None: not before the phase ends)."""

    def __init__(self, what: str, used: int, limit: int, resets: dt.datetime | None, *, phase_ends=None,
                 per: str = "today"):
        self.what, self.used, self.limit, self.resets = what, used, limit, resets
        when = f"it resets at {iso(resets)}" if resets else "it does not reset before the phase ends"
        ends = f"; the phase ends at {iso(phase_ends)}" if phase_ends else ""
        super().__init__(f"{what} used up ({used} of {limit} {per}); {when}{ends}")


class TeamRevoked(Exception):
    pass


class TeamChanged(Exception):
    """The team was revoked, given a new token or disqualified while its upload was in flight:
    answer `status` (401 or 403) with this message; nothing was written."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class DuplicateSubmission(Exception):
    """The team already has a submission of exactly these bytes (`earlier`, its id): the
    database's unique index refused the second one."""

    def __init__(self, earlier: int | None):
        super().__init__(f"identical to submission {earlier}")
        self.earlier = earlier


class NotYours(LookupError):
    """A submission id that is not one of the team's (whether it exists or not)."""

    def __init__(self, submission_id: int):
        self.submission_id = submission_id
        super().__init__(f"you have no submission {submission_id}")


def utc_day(now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """(this UTC day's midnight, the next one)."""
    now = now or utcnow()
    start = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + dt.timedelta(days=1)


# --- teams -------------------------------------------------------------------------------

def check_team_name(name: str) -> str:
    """A team name as stored: one line of 1 to 100 characters, without control characters (C0,
    C1, bidi controls, ...: the rules of c2seg_kit.text); ValueError says what is wrong."""
    return text.check_text(name, field="a team name", max_len=100, required=True)


def add_team(s: Session, name: str, *, baseline: bool = False) -> tuple[Team, str]:
    name = check_team_name(name)
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
    """The track's phase now (see phases.py: a dated list of changes)."""
    return phases.current(s, track)


def set_phase(s: Session, track: str, phase: str) -> None:
    """Change the track's phase now."""
    phases.schedule(s, track, phase)


# --- quota -------------------------------------------------------------------------------

def failures_today(s: Session, team_id: int) -> int:
    start, _ = utc_day()
    return s.scalar(select(func.count()).where(FailedAttempt.team_id == team_id, FailedAttempt.created >= start))


def used_since(s: Session, team_id: int, track: str, start: dt.datetime | None, now: dt.datetime | None = None) -> int:
    """Scored submissions plus live reservations of (team, track) since `start` (None: ever).

    One statement, so one snapshot: under PostgreSQL's READ COMMITTED two separate counts could
    miss a submission that turns from reservation into row between them. Hidden submissions
    count: hiding is an organizer's decision about the board, not a refund.
    """
    now = now or utcnow()
    done = select(func.count()).where(Submission.team_id == team_id, Submission.track == track)
    held = select(func.count()).where(QuotaReservation.team_id == team_id, QuotaReservation.track == track,
                                      QuotaReservation.expires > now)
    if start is not None:
        done = done.where(Submission.created >= start)
        held = held.where(QuotaReservation.created >= start)
    return s.scalar(select(done.scalar_subquery() + held.scalar_subquery()))


def used_today(s: Session, team_id: int, track: str, now: dt.datetime | None = None) -> int:
    """Today's (UTC) scored submissions plus live reservations of (team, track)."""
    return used_since(s, team_id, track, utc_day(now)[0], now)


def lock_team(s: Session, team_id: int, now: dt.datetime) -> None:
    """A write on the team's row: the lock that serialises this team's reservations (SQLite: the
    database write lock; PostgreSQL: the row lock). TeamRevoked if the team is revoked."""
    locked = s.execute(update(Team).where(Team.id == team_id, Team.revoked.is_(None)).values(last_reservation=now))
    if locked.rowcount != 1:
        s.rollback()
        raise TeamRevoked()


def reserve_slot(s: Session, team_id: int, track: str, quota: int, hold_s: float,
                 phase: phases.PhaseState | None = None) -> QuotaReservation:
    """Take a quota slot for (team, track), atomically: one of today's, and one of the phase's
    when the phase has a cap; raise QuotaExceeded if none is left."""
    now = utcnow()
    # First statement of the transaction, a write: it takes the lock that serialises this team.
    lock_team(s, team_id, now)
    res = take_quota(s, team_id, track, quota, hold_s, phase, now)
    s.commit()
    return res


def take_quota(s: Session, team_id: int, track: str, quota: int, hold_s: float,
                phase: phases.PhaseState | None, now: dt.datetime) -> QuotaReservation:
    """Within a transaction holding the team's lock: add a quota reservation, or roll back and
    raise QuotaExceeded."""
    ends = phase.ends if phase else None
    used = used_today(s, team_id, track, now)
    if used >= quota:
        s.rollback()
        raise QuotaExceeded(f"the daily quota for track {track} is", used, quota, utc_day(now)[1], phase_ends=ends)
    if phase is not None and phase.cap is not None:
        used = used_since(s, team_id, track, phase.since, now)
        if used >= phase.cap:
            s.rollback()
            raise QuotaExceeded(f"the quota for this phase of track {track} is", used, phase.cap, None,
                                phase_ends=ends, per="in this phase")
    if phase is not None:
        policy = ladder.read_policy(s, track)
        if policy.leak_cap_bits is not None:
            spent = ladder.team_answers(s, team_id, track, policy, since=phase.since).bits
            if spent >= policy.leak_cap_bits:
                s.rollback()
                raise QuotaExceeded(f"the leak budget (public answers) for this phase of track {track} is",
                                    f"{spent:.1f}", f"{policy.leak_cap_bits:g}", None, phase_ends=ends,
                                    per="bits in this phase")
    res = QuotaReservation(team_id=team_id, track=track, created=now, expires=now + dt.timedelta(seconds=hold_s))
    s.add(res)
    return res


def purge_expired_reservations(s: Session) -> int:
    now = utcnow()
    n = s.execute(delete(QuotaReservation).where(QuotaReservation.expires <= now)).rowcount
    n += s.execute(delete(UploadSlot).where(UploadSlot.expires <= now)).rowcount
    s.commit()
    return n


# --- submissions -------------------------------------------------------------------------

def check_standing(s: Session, team_id: int, token_hash: str | None) -> None:
    """First statement of a transaction that writes on the team's behalf: a write on the team's
    row (its lock, as lock_team) that matches only while the team is neither revoked nor
    disqualified and, given `token_hash`, still has the token that authenticated the request.
    Otherwise roll back and raise TeamChanged. An organizer's change that commits first is seen
    here; one that commits after waits for this transaction."""
    keep = [Team.id == team_id, Team.revoked.is_(None), Team.disqualified.is_(None)]
    if token_hash is not None:
        keep.append(Team.token_hash == token_hash)
    if s.execute(update(Team).where(*keep).values(last_reservation=Team.last_reservation)).rowcount == 1:
        return
    s.rollback()
    team = s.get(Team, team_id)
    if team is None or team.revoked is not None:
        raise TeamChanged(401, "this team's token was revoked while the upload was in progress; it was not counted")
    if team.disqualified is not None:
        raise TeamChanged(403, "your team was disqualified while the upload was in progress: "
                               f"{team.disqualified_reason or 'no reason given'}")
    raise TeamChanged(401, "this team's token was replaced while the upload was in progress; it was not counted "
                           "(use the new token)")


def commit_submission(s: Session, reservation: QuotaReservation, *, filename: str, size: int, sha256: str,
                      stored_as: str, method: str | None, scores: dict, description: str | None = None,
                      url: str | None = None, upload_slot: int | None = None,
                      token_hash: str | None = None,
                      check: Callable[[Session], None] | None = None) -> Submission:
    """Write the submission and both score rows, and free the reservation and the upload slot:
    one transaction, which first checks the team's standing (check_standing: TeamChanged). A
    team's second submission of the same bytes is refused by the database (DuplicateSubmission),
    however many arrive at once. `check(session)` runs once the rows are written, before the
    commit (it raises to roll everything back)."""
    check_standing(s, reservation.team_id, token_hash)
    sub = Submission(team_id=reservation.team_id, track=reservation.track, created=reservation.created,
                     filename=filename[:255], size=size, sha256=sha256, stored_as=stored_as, method=method,
                     description=description, url=url, content_sha256=scores.get("content_sha256"))
    for split in ("public", "private"):
        sub.scores.append(score_row(split, scores[split]))
    if scores.get("public_units"):
        sub.units = PublicUnits(counts=scores["public_units"])
    s.add(sub)
    try:
        s.flush()  # the INSERT: where the unique index speaks
        s.execute(delete(QuotaReservation).where(QuotaReservation.id == reservation.id))
        if upload_slot is not None:
            s.execute(delete(UploadSlot).where(UploadSlot.id == upload_slot))
        if check is not None:
            check(s)
        s.commit()
    except IntegrityError:
        s.rollback()
        earlier = identical_submission(s, reservation.team_id, sha256)
        if earlier is None:  # another constraint: not ours to explain
            raise
        raise DuplicateSubmission(earlier) from None
    return sub


def identical_submission(s: Session, team_id: int, sha256: str) -> int | None:
    """The id of the team's earlier submission of exactly these bytes, if any (hidden ones too)."""
    return s.scalar(select(func.min(Submission.id)).where(Submission.team_id == team_id, Submission.sha256 == sha256))


def score_row(split: str, sc: dict) -> Score:
    return Score(split=split, oa=sc["oa"], miou=sc["miou"], f1=sc["f1"], kappa=sc["kappa"],
                 per_class_iou=sc["per_class_iou"], n_pixels=sc["n_pixels"])


def set_scores(s: Session, sub: Submission, scores: dict) -> None:
    """Write a rescore's results into the submission's rows: both scores, the content hash and
    the public part's per-unit counts (made again: the split may have moved)."""
    if scores.get("content_sha256"):
        sub.content_sha256 = scores["content_sha256"]
    if scores.get("public_units"):
        if sub.units is None:
            sub.units = PublicUnits(counts=scores["public_units"])
        else:
            sub.units.counts = scores["public_units"]
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
    q = (select(Submission).options(selectinload(Submission.scores), selectinload(Submission.model))
         .where(Submission.team_id == team_id))
    if track:
        q = q.where(Submission.track == track)
    return list(s.scalars(q.order_by(Submission.id)))


def all_submissions(s: Session, track: str | None = None) -> list[Submission]:
    q = select(Submission).options(selectinload(Submission.scores), selectinload(Submission.team),
                                   selectinload(Submission.model))
    if track:
        q = q.where(Submission.track == track)
    return list(s.scalars(q.order_by(Submission.id)))


def own_submission(s: Session, submission_id: int, team_id: int) -> Submission:
    """get_submission, or NotYours: another team's id and a missing one look the same."""
    sub = get_submission(s, submission_id, team_id)
    if sub is None:
        raise NotYours(submission_id)
    return sub


def set_metadata(s: Session, sub: Submission, fields: dict) -> Submission:
    """Replace the given metadata fields (already checked by c2seg_kit.text); None clears one."""
    for key in ("method", "description", "url"):
        if key in fields:
            setattr(sub, key, fields[key])
    s.commit()
    return sub


def set_final_picks(s: Session, team_id: int, track: str, ids: list[int], limit: int) -> list[Submission]:
    """Make exactly `ids` the team's final picks on `track` (an empty list clears them)."""
    if len(set(ids)) != len(ids):
        raise ValueError("an id is given twice")
    if len(ids) > limit:
        raise ValueError(f"at most {limit} final picks per track, got {len(ids)}")
    # Take the team's row lock first (as reserve_slot does): two selections at once cannot mix.
    s.execute(update(Team).where(Team.id == team_id).values(last_reservation=Team.last_reservation))
    picked = [own_submission(s, i, team_id) for i in ids]
    for sub in picked:
        if sub.track != track:
            s.rollback()
            raise ValueError(f"submission {sub.id} is on track {sub.track}, not {track}")
    for sub in team_submissions(s, team_id, track):
        sub.final_pick = sub.id in ids
    s.commit()
    return picked
