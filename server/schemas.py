"""Response bodies of the HTTP API (pydantic), the OpenAPI schema's source of truth."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

from c2seg_kit.registry import TRACKS

TrackName = Literal[tuple(TRACKS)]  # type: ignore[valid-type]
PhaseName = Literal["open", "closed", "final"]


class Scores(BaseModel):
    """Aggregate scores over one part (public or private) of the labelled pixels, rounded to 4 decimals."""

    oa: float | None
    miou: float | None
    f1: float | None
    kappa: float | None
    per_class_iou: dict[str, float | None]
    n_pixels: int


class SubmissionOut(BaseModel):
    id: int
    track: TrackName
    team: str
    created: dt.datetime
    filename: str
    method: str | None = None
    scores: Scores = Field(description="public scores")
    private_scores: Scores | None = Field(None, description="shown once the track's phase is final")


class LeaderboardEntry(BaseModel):
    rank: int
    team: str
    baseline: bool
    submissions: int = Field(description="scored submissions of this team on this track")
    created: dt.datetime = Field(description="when the team's best submission was made")
    public: Scores
    private: Scores | None = None


class Leaderboard(BaseModel):
    track: TrackName
    phase: PhaseName
    ranked_by: Literal["public", "private"]
    entries: list[LeaderboardEntry]


class TrackInfo(BaseModel):
    track: TrackName
    phase: PhaseName
    shape: tuple[int, int]
    quota_per_day: int


class Health(BaseModel):
    status: Literal["ok"]
    tracks: list[TrackInfo]
    max_upload_bytes: int


class QuotaInfo(BaseModel):
    track: TrackName
    used_today: int
    left_today: int
    resets: dt.datetime


class TeamInfo(BaseModel):
    team: str
    baseline: bool
    quota: list[QuotaInfo]
    failed_today: int
    failed_left_today: int


class ErrorOut(BaseModel):
    detail: str
