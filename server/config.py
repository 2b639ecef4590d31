"""Server settings: one pydantic-settings class, read from C2SEG_* environment variables.

`c2seg serve` turns its options into these variables so that every uvicorn worker process
builds the same app from the environment (see `main.app_from_env`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="C2SEG_", extra="ignore")

    #: Hidden label files (labels.h5, one per track); each file names its track.
    labels: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: Where the SQLite database (by default), stored submissions and upload spool live.
    data_dir: Path = Path("c2seg-data")
    #: SQLAlchemy URL; default sqlite:///<data_dir>/c2seg.db. PostgreSQL: postgresql+psycopg://...
    database_url: str | None = None
    sqlite_busy_timeout_s: float = 30.0

    # Quotas, per team, per track, per UTC day.
    quota_per_day: int = Field(5, ge=0)
    failed_per_day: int = Field(20, ge=0)
    #: Submissions per team and track during one phase (from the change that opened it), beside
    #: the daily quota; None: no such cap. `c2seg admin phase TRACK open --cap N` sets it per phase.
    quota_per_phase: int | None = Field(None, ge=0)
    #: How many submissions per track a team may mark as final picks for the private ranking.
    final_picks: int = Field(2, ge=1, le=20)

    # Uploads.
    max_upload_bytes: int = Field(256 * MB, ge=1)
    upload_timeout_s: float = Field(120.0, gt=0)

    # Scoring in child processes: how many at once, and the limits each one runs under.
    scoring_workers: int = Field(2, ge=1, le=64)
    scoring_timeout_s: float = Field(120.0, gt=0)
    #: The header check (peek) reads no pixels: a file that keeps HDF5 busy there is hostile.
    peek_timeout_s: float = Field(15.0, gt=0)
    scoring_memory_mb: int = Field(2048, ge=256)
    chunk_rows: int = Field(512, ge=1)

    # The public/private split of the labelled pixels: a seeded mask of square blocks. None: not
    # given. The split is recorded in the database when it is first served (stored.py: a secret
    # seed made then, block 64, half public) and taken from there afterwards; a value given here
    # that differs from the recorded one is refused.
    split_seed: int | None = Field(None, ge=0)
    split_block: int | None = Field(None, ge=1)
    public_fraction: float | None = Field(None, gt=0.0, lt=1.0)

    # Uploads in flight (each holds an upload slot, taken before its body is read).
    #: Uploads one team may have in progress at once; more get 429 at once.
    uploads_per_team: int = Field(2, ge=1)
    #: Bytes all uploads in progress may hold in the spool together (each reserves its declared
    #: Content-Length, or the upload cap when it sends none); past it, 503 with Retry-After.
    spool_budget_mb: int = Field(2048, ge=1)

    #: Hours a participant's sign-in on the site (/team) lasts before the token is asked again.
    site_session_hours: float = Field(12.0, gt=0, le=24 * 30)

    #: Seconds a leaderboard may be served from this process's cache (0 disables it);
    #: writes made by this process clear it at once.
    leaderboard_cache_s: float = Field(2.0, ge=0)

    @field_validator("labels", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        # C2SEG_LABELS may hold one path or a JSON list of paths.
        if isinstance(v, Path):
            return [v]
        if isinstance(v, str):
            return json.loads(v) if v.lstrip().startswith("[") else [v]
        return v

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'c2seg.db'}"

    @property
    def storage_dir(self) -> Path:
        """Accepted submission files, kept for rescoring after a label fix."""
        return self.data_dir / "submissions"

    @property
    def spool_dir(self) -> Path:
        """Uploads in progress; on the same file system as storage_dir so a move is a rename."""
        return self.data_dir / "spool"
