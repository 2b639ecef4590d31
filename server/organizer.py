"""Organizers' operations on the database (what `c2seg admin` runs), each one short transaction.

Nothing here deletes a participant's data: hiding a submission and disqualifying a team take
them off the board and keep every row, with the time (and, for a team, the reason).
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from c2seg_kit import text

from .crud import get_team
from .models import Submission, Team, TeamMember, utcnow
from .security import hash_token, new_token


def get_any_submission(s: Session, submission_id: int) -> Submission:
    sub = s.scalar(select(Submission).options(selectinload(Submission.team)).where(Submission.id == submission_id))
    if sub is None:
        raise ValueError(f"no submission {submission_id}")
    return sub


def set_hidden(s: Session, submission_id: int, hidden: bool) -> Submission:
    sub = get_any_submission(s, submission_id)
    sub.hidden = (sub.hidden or utcnow()) if hidden else None
    s.commit()
    return sub


def disqualify(s: Session, name: str, reason: str) -> Team:
    reason = text.check_text(reason, field="the reason", max_len=text.REASON_MAX, required=True)
    team = get_team(s, name)
    team.disqualified = team.disqualified or utcnow()
    team.disqualified_reason = reason
    s.commit()
    return team


def reinstate(s: Session, name: str) -> Team:
    team = get_team(s, name)
    if team.disqualified is None:
        raise ValueError(f"team {name!r} is not disqualified")
    team.disqualified = team.disqualified_reason = None
    s.commit()
    return team


def rotate_token(s: Session, name: str) -> str:
    """A new token for the team; the old one stops working at once (a revoked team is let back in)."""
    team = get_team(s, name)
    token = new_token()
    team.token_hash = hash_token(token)
    team.revoked = None
    s.commit()
    return token


def add_member(s: Session, team_name: str, name: str, email: str, affiliation: str | None = None) -> TeamMember:
    name = text.check_text(name, field="the name", max_len=text.NAME_MAX, required=True)
    email = text.check_email(email)
    affiliation = text.check_text(affiliation, field="the affiliation", max_len=text.AFFILIATION_MAX)
    team = get_team(s, team_name)
    # One row per e-mail address (case-insensitive): adding it again updates the name and affiliation.
    existing = next((m for m in team.members if m.email.lower() == email.lower()), None)
    member = existing or TeamMember(team_id=team.id, email=email)
    member.name, member.affiliation = name, affiliation
    s.add(member)
    s.commit()
    return member


def remove_member(s: Session, team_name: str, email: str) -> None:
    team = get_team(s, team_name)
    member = next((m for m in team.members if m.email.lower() == email.strip().lower()), None)
    if member is None:
        raise ValueError(f"team {team_name!r} has no member with e-mail {email!r}")
    s.delete(member)
    s.commit()


def members(s: Session, team_name: str | None = None) -> list[TeamMember]:
    q = select(TeamMember).options(selectinload(TeamMember.team)).order_by(TeamMember.team_id, TeamMember.id)
    if team_name is not None:
        q = q.where(TeamMember.team_id == get_team(s, team_name).id)
    return list(s.scalars(q))


def duplicates(s: Session, track: str | None = None) -> list[dict]:
    """Groups of submissions by different teams with identical predictions.

    Two kinds: "file", byte-identical uploads (the sha256 stored at upload); "content", the
    same decoded prediction in different bytes (content_sha256, computed while scoring; rows
    from before it have none until `c2seg admin rescore`). A pair in the same file group is not
    listed again as content. Hidden submissions and disqualified teams are included: this is
    an investigation, not the board.
    """
    q = select(Submission).options(selectinload(Submission.team)).order_by(Submission.id)
    if track:
        q = q.where(Submission.track == track)
    subs = list(s.scalars(q))
    groups = []
    seen: set[frozenset] = set()
    for kind, attr in (("file", "sha256"), ("content", "content_sha256")):
        by_hash: dict[str, list[Submission]] = defaultdict(list)
        for sub in subs:
            if getattr(sub, attr):
                by_hash[getattr(sub, attr)].append(sub)
        for digest, group in by_hash.items():
            ids = frozenset(x.id for x in group)
            if len({x.team_id for x in group}) < 2 or ids in seen:
                continue
            seen.add(ids)
            groups.append({"kind": kind, "hash": digest, "submissions": [
                {"id": x.id, "team": x.team.name, "track": x.track, "created": x.created.isoformat(),
                 "hidden": x.hidden is not None} for x in group]})
    return groups
