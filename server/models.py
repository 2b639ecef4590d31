"""Database tables (SQLAlchemy 2, typed declarative).

A submission row and its score rows are written in one transaction, after scoring; until then
the quota slot it uses is held by a QuotaReservation row, which expires on its own if the
server dies mid-scoring. So the submissions table never holds a half-done entry.

The schema is built and upgraded by the Alembic migrations in migrations/versions/, never by
`create_all`: a change here needs a new migration (tests/test_server_migrations.py checks that
the migrations' head matches these classes, on SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

PHASES = ("open", "closed", "final")
SPLITS = ("public", "private")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timestamps stored as naive UTC and read back as aware UTC, the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=dt.timezone.utc) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime()}


class Team(Base):
    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # sha256 of the token; the token itself is shown once by `c2seg admin add-team` and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Touched at every quota reservation: the row lock that serialises a team's reservations.
    last_reservation: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Off the board (kept in the database) while set; submissions are refused.
    disqualified: Mapped[dt.datetime | None] = mapped_column(default=None)
    disqualified_reason: Mapped[str | None] = mapped_column(String(300), default=None)

    submissions: Mapped[list[Submission]] = relationship(back_populates="team")
    members: Mapped[list[TeamMember]] = relationship(back_populates="team", order_by="TeamMember.id")


class TeamMember(Base):
    """A person in a team, kept by organizers (`c2seg admin member`); never shown publicly."""

    __tablename__ = "team_members"
    __table_args__ = (UniqueConstraint("team_id", "email", name="uq_team_members_team_email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    affiliation: Mapped[str | None] = mapped_column(String(200), default=None)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)

    team: Mapped[Team] = relationship(back_populates="members")


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (
        Index("ix_submissions_team_track_created", "team_id", "track", "created"),
        # A team's byte-identical re-upload is refused by the database itself (crud.commit_submission
        # turns the conflict into DuplicateSubmission: 409, not charged); rows marked duplicate_of
        # were written before the index existed and stay as they are.
        Index("uq_submissions_team_sha256", "team_id", "sha256", unique=True,
              sqlite_where=text("duplicate_of IS NULL"), postgresql_where=text("duplicate_of IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    track: Mapped[str] = mapped_column(String(8), index=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)  # when its quota slot was taken
    scored: Mapped[dt.datetime] = mapped_column(default=utcnow)
    filename: Mapped[str] = mapped_column(String(255))  # as uploaded, for the team's own reference
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    stored_as: Mapped[str] = mapped_column(String(255))  # file name under Settings.storage_dir
    method: Mapped[str | None] = mapped_column(String(255), default=None)
    # Participant metadata (checked by c2seg_kit.text at the door; the team may edit it later).
    description: Mapped[str | None] = mapped_column(Text, default=None)
    url: Mapped[str | None] = mapped_column(String(300), default=None)
    # One of the team's final picks for the private ranking (at most Settings.final_picks per track).
    final_pick: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Hidden by an organizer: kept, off the board.
    hidden: Mapped[dt.datetime | None] = mapped_column(default=None)
    # sha256 of the decoded prediction (uint8 rows), computed while scoring: equal for identical
    # predictions stored differently (compression, chunks, dtype). NULL for rows from before it.
    content_sha256: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    # Set only on rows written before re-uploads were refused by the database: the id of the
    # team's first submission of the same bytes (migration 0004). NULL on every new row.
    duplicate_of: Mapped[int | None] = mapped_column(Integer, default=None)

    team: Mapped[Team] = relationship(back_populates="submissions")
    scores: Mapped[list[Score]] = relationship(back_populates="submission", cascade="all, delete-orphan")

    def score(self, split: str) -> Score | None:
        return next((s for s in self.scores if s.split == split), None)


class Score(Base):
    __tablename__ = "scores"
    __table_args__ = (UniqueConstraint("submission_id", "split"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    split: Mapped[str] = mapped_column(String(8))  # "public" | "private"
    oa: Mapped[float] = mapped_column(Float)
    miou: Mapped[float] = mapped_column(Float)
    f1: Mapped[float] = mapped_column(Float)
    kappa: Mapped[float] = mapped_column(Float)
    per_class_iou: Mapped[dict] = mapped_column(JSON)
    n_pixels: Mapped[int] = mapped_column(Integer)

    submission: Mapped[Submission] = relationship(back_populates="scores")


class QuotaReservation(Base):
    """A quota slot held while a submission is being scored."""

    __tablename__ = "quota_reservations"
    __table_args__ = (Index("ix_reservations_team_track", "team_id", "track"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    track: Mapped[str] = mapped_column(String(8))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime]


class FailedAttempt(Base):
    """A refused upload: it costs no quota, but a team gets only so many per day."""

    __tablename__ = "failed_attempts"
    __table_args__ = (Index("ix_failed_team_created", "team_id", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(String(300))


class UploadSlot(Base):
    """An upload in progress, taken before its body is read: it bounds a team's concurrent
    uploads, counts against the team's daily cap of refused uploads until it ends (an upload in
    flight may still be refused), and holds `bytes` of the spool budget. Deleted when the upload
    ends; expires on its own if the server dies."""

    __tablename__ = "upload_slots"
    __table_args__ = (Index("ix_upload_slots_team", "team_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime]


class ServerSetting(Base):
    """Settings the server records for itself (see stored.py): the secret split seed, the split's
    block size and public fraction, the data folder. Never sent in any response."""

    __tablename__ = "server_settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(4096))
    updated: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PhaseChange(Base):
    """A track's phase from `at` on: open (accepting), closed (not accepting), final (private
    scores shown). The phase at a moment is the latest change at or before it ("open" before
    any), so changes scheduled ahead apply on time without a restart. `cap`: the most
    submissions a team may make on the track during this phase (NULL: Settings.quota_per_phase).
    """

    __tablename__ = "phase_changes"
    __table_args__ = (Index("ix_phase_changes_track_at", "track", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    track: Mapped[str] = mapped_column(String(8))
    phase: Mapped[str] = mapped_column(String(8))
    at: Mapped[dt.datetime]
    cap: Mapped[int | None] = mapped_column(Integer, default=None)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SiteSession(Base):
    """A signed-in browser of the participants' site (site_sessions.py). Only the SHA-256 of the
    session id is kept; `token_hash` is the team's token hash at sign-in: a session whose team
    has another token since (rotated) or is revoked is refused, so either ends it at once."""

    __tablename__ = "site_sessions"
    __table_args__ = (Index("ix_site_sessions_team", "team_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    token_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires: Mapped[dt.datetime]
    #: A one-shot message for the next page (the answer to a plain form post), then cleared.
    flash: Mapped[str | None] = mapped_column(Text, default=None)
