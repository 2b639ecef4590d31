"""The database schema of c2seg-kit 0.1 (before Alembic), frozen: what `create_all` of that
release's server/models.py made. Used by tests/make_legacy_db.py to write the committed fixture
tests/fixtures/c2seg-0.1.db, and by tests/test_server_migrations.py to check that migration 0001
reproduces it exactly. Never edit it: a new schema is a new migration.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

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

    submissions: Mapped[list[Submission]] = relationship(back_populates="team")


class Submission(Base):
    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_team_track_created", "team_id", "track", "created"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    track: Mapped[str] = mapped_column(String(8), index=True)
    created: Mapped[dt.datetime] = mapped_column(default=utcnow)  # when its quota slot was taken
    scored: Mapped[dt.datetime] = mapped_column(default=utcnow)
    filename: Mapped[str] = mapped_column(String(255))  # as uploaded, for the team's own reference
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    stored_as: Mapped[str] = mapped_column(String(255))  # file name under Settings.storage_dir
    method: Mapped[str | None] = mapped_column(String(255), default=None)

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


class Phase(Base):
    """A track's phase: open (accepting), closed (not accepting), final (private scores shown)."""

    __tablename__ = "phases"

    track: Mapped[str] = mapped_column(String(8), primary_key=True)
    phase: Mapped[str] = mapped_column(String(8), default="open")
    changed: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
