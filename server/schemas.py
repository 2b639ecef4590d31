"""Response bodies of the HTTP API (pydantic), the OpenAPI schema's source of truth."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from c2seg_kit import text
from c2seg_kit.classes import CLASS_NAMES
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


class AttachedModelOut(BaseModel):
    kind: Literal["checkpoint", "onnx"] = Field(description="decided from the file's first bytes")
    filename: str
    size: int
    sha256: str
    created: dt.datetime


class SubmissionOut(BaseModel):
    id: int
    track: TrackName
    team: str
    created: dt.datetime
    filename: str
    method: str | None = None
    description: str | None = None
    url: str | None = None
    status: Literal["scored", "hidden"] = Field("scored", description="hidden: kept, but taken off the board by the organizers")
    final_pick: bool = Field(False, description="one of the team's final picks for the private ranking")
    best_public: bool = Field(False, description="the team's best public submission on its track (the one the public board shows)")
    private_candidate: bool = Field(
        False, description="counts for the private ranking: a final pick, or, with none picked, the best public one")
    scores: Scores = Field(description="public scores; in ladder mode only `miou` is given: the team's Ladder "
                                       "value after this submission (the others are null)")
    public_scores: Literal["exact", "ladder"] = Field("exact", description="how the track answers public scores")
    ladder_moved: bool | None = Field(None, description="ladder mode: whether this submission moved the team's "
                                                        "Ladder value (false: the previous value is shown again)")
    ladder_rule: Literal["fixed step", "standard error"] | None = Field(
        None, description="ladder mode: what a submission must beat the Ladder value by: the organizer's fixed step, "
                          "or the standard error of its difference from the team's best (parameter-free Ladder)")
    private_scores: Scores | None = Field(None, description="shown once the track's phase is final")
    model: AttachedModelOut | None = Field(None, description="the model attached to this submission, if any")


def _meta_text(max_len: int, pattern: str):
    # The pattern goes into the OpenAPI document only; c2seg_kit.text enforces it (Python's reading).
    return Annotated[str, Field(max_length=max_len, json_schema_extra={"pattern": pattern})]


class MetadataIn(BaseModel):
    """Fields to change; a field left out stays as it is, null or "" clears it."""

    model_config = {"extra": "forbid"}

    method: _meta_text(text.METHOD_MAX, text.LINE_PATTERN) | None = Field(None, description="method name, one line")
    description: _meta_text(text.DESCRIPTION_MAX, text.LINES_PATTERN) | None = Field(
        None, description="what the method does")
    url: _meta_text(text.URL_MAX, text.URL_PATTERN) | None = Field(
        None, description="http(s) link to a paper, report or code")

    @field_validator("method", "description", "url")
    @classmethod
    def _checked(cls, v, info):
        return text.check_metadata(**{info.field_name: v})[info.field_name]


class FinalPicksIn(BaseModel):
    model_config = {"extra": "forbid"}

    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        description="your submissions on this track to pick (replaces the current picks; [] clears)",
        max_length=20, json_schema_extra={"uniqueItems": True})


class FinalPicksOut(BaseModel):
    track: TrackName
    ids: list[int]
    max: int = Field(description="final picks allowed per track")
    closes: dt.datetime | None = Field(description="when picking closes (the end of the open phase), if scheduled")


class LeaderboardEntry(BaseModel):
    rank: int | None = Field(description="null for a baseline: shown in place, not ranked")
    team: str
    baseline: bool
    submissions: int = Field(description="scored submissions of this team on this track (hidden ones left out)")
    created: dt.datetime = Field(description="when the shown submission was made (ties go to the earlier one)")
    method: str | None = None
    description: str | None = None
    url: str | None = None
    selected: bool | None = Field(None, description="final phase: whether the shown submission is one of the "
                                                    "team's final picks (else its best public one)")
    public: Scores
    private: Scores | None = None


#: ?sort= keys of a track's board: the ranking, the team, each score and per-class IoU column.
SCORE_KEYS = ("miou", "oa", "f1", "kappa")
BOARD_SORTS = ("rank", "team", *SCORE_KEYS, *(f"private_{k}" for k in SCORE_KEYS), "submissions", "created",
               *(f"iou_{name}" for name in CLASS_NAMES))
BoardSort = Literal[BOARD_SORTS]  # type: ignore[valid-type]
COMBINED_SORTS = ("rank", "team", *(f"rank_{t}" for t in TRACKS), *(f"miou_{t}" for t in TRACKS))
CombinedSort = Literal[COMBINED_SORTS]  # type: ignore[valid-type]
SortDir = Literal["asc", "desc"]


class Leaderboard(BaseModel):
    track: TrackName
    phase: PhaseName
    ranked_by: Literal["public", "private"]
    public_scores: Literal["exact", "ladder"] = Field(
        "exact", description="ladder: each team's public mIoU is its Ladder value (it moves only when a submission "
                             "beats it by more than the threshold, see ladder_rule); the other public figures are "
                             "withheld")
    ladder_step: float | None = Field(None, description="the Ladder's step, in ladder mode with a fixed step")
    ladder_rule: Literal["fixed step", "standard error"] | None = Field(
        None, description="ladder mode: what a submission must beat the Ladder value by: the organizer's fixed step "
                          "(ladder_step), or the standard error of its difference from the team's best "
                          "(parameter-free Ladder)")
    sort: BoardSort = "rank"
    dir: SortDir = "asc"
    entries: list[LeaderboardEntry]


class CombinedTrack(BaseModel):
    rank: int | None = Field(description="the team's rank on the track; null if it has none there (or is a baseline)")
    placed: int = Field(description="the rank used for the mean: its rank, a baseline's place among the ranked "
                                    "teams, or one past the last ranked team when it has no entry on the track")
    miou: float | None = Field(description="mIoU of the split the track is ranked by")


class CombinedEntry(BaseModel):
    rank: int | None = Field(description="null for a baseline")
    team: str
    baseline: bool
    mean_rank: float = Field(description="mean of `placed` over the served tracks")
    tracks: dict[str, CombinedTrack]


class CombinedBoard(BaseModel):
    tracks: list[TrackName]
    phases: dict[str, PhaseName]
    rule: str
    sort: CombinedSort = "rank"
    dir: SortDir = "asc"
    entries: list[CombinedEntry]


class TrackInfo(BaseModel):
    track: TrackName
    phase: PhaseName
    layout: Literal["scene", "tiles"] = Field("scene", description="what a submission holds: one raster of the "
                                              "scene, or one raster per test tile (docs/formats.md in the "
                                              "kit's repository)")
    shape: tuple[int, int] | None = Field(..., description="the label raster's (H, W); null for a tile track")
    n_tiles: int | None = Field(None, description="test tiles a submission must hold (tile tracks; ids and "
                                "shapes at /api/v1/tracks/{track}/tiles)")
    quota_per_day: int
    phase_ends: dt.datetime | None = Field(None, description="the next scheduled change to another phase")
    next_phase: PhaseName | None = None


class TrackTiles(BaseModel):
    track: TrackName
    tiles: dict[str, tuple[int, int]] = Field(..., description="test tile id -> (H, W), as a submission must hold them")


class Health(BaseModel):
    status: Literal["ok"]
    tracks: list[TrackInfo]
    max_upload_bytes: int
    max_model_bytes: int | None = Field(None, description="the largest model file a team may attach to a submission")


class QuotaInfo(BaseModel):
    track: TrackName
    used_today: int
    left_today: int
    resets: dt.datetime = Field(description="when the daily quota resets (next midnight UTC)")
    phase: PhaseName
    phase_ends: dt.datetime | None = Field(None, description="the next scheduled change to another phase")
    next_phase: PhaseName | None = None
    phase_cap: int | None = Field(None, description="submissions allowed in this phase; null: no cap")
    used_phase: int = Field(0, description="submissions made in this phase")
    left_phase: int | None = None
    final_picks: list[int] = Field(default_factory=list)
    final_picks_max: int = 2


class TeamInfo(BaseModel):
    team: str
    baseline: bool
    disqualified: str | None = Field(None, description="the organizers' reason, while the team is disqualified")
    quota: list[QuotaInfo]
    failed_today: int
    failed_left_today: int


class ErrorOut(BaseModel):
    detail: str
