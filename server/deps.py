"""Typed dependencies (FastAPI-template style): `SessionDep`, `TeamDep`, `SettingsDep`, ...

Everything comes from `app.state.services`, built once by the app factory, so tests can swap
any piece with `app.dependency_overrides`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from anyio import CapacityLimiter
from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from . import crud, stored
from .board import BoardCache
from .config import Settings
from .models import Team
from .security import bearer_token
from .workers import ScoringPool


@dataclass(frozen=True)
class ServedTrack:
    """What a served track's labels file says about the submissions it takes: the layout, and
    the label shape (scene) or each test tile's id and shape (tiles). Ids and shapes are public:
    participants hold the test tiles; the labels' content never leaves the scoring children."""

    layout: str
    shape: tuple[int, int] | None = None
    tiles: dict[str, tuple[int, int]] | None = None

    @property
    def n_tiles(self) -> int | None:
        return None if self.tiles is None else len(self.tiles)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    tracks: dict[str, ServedTrack]  # served track -> its layout and shape or tiles
    pool: ScoringPool | None = None
    boards: BoardCache = field(default_factory=lambda: BoardCache(0))
    limiter: CapacityLimiter | None = None
    #: The labels and split this process scores with (stored.Basis); uploads are refused while the
    #: database records others (a rescore since it started).
    basis: stored.Basis | None = None


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_db(services: ServicesDep) -> Iterator[Session]:
    with services.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]

UNAUTHORIZED = HTTPException(
    401, "missing, invalid or revoked token: send 'Authorization: Bearer <token>'",
    headers={"WWW-Authenticate": "Bearer"},
)


def current_team(request: Request, services: ServicesDep) -> Team:
    """The team whose token the request carries; 401 otherwise. Reads the header only, never the body."""
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise UNAUTHORIZED
    # A short session of its own: an upload must not hold a connection while it streams.
    with services.sessions() as s:
        team = crud.team_by_token(s, token)
    if team is None:
        raise UNAUTHORIZED
    return team


TeamDep = Annotated[Team, Depends(current_team)]


def served_track(track: str, services: Services) -> str:
    track = track.upper()
    if track not in services.tracks:
        raise HTTPException(404, f"track {track} is not served here (served: {', '.join(sorted(services.tracks)) or 'none'})")
    return track
