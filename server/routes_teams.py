"""GET /healthz, /api/v1/tracks, /api/v1/tracks/{track}/tiles (a tile track's test tile ids and
shapes) and /api/v1/me (the caller's team and quota)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from sqlalchemy import text

from . import crud, phases
from .deps import ServicesDep, SessionDep, TeamDep, served_track
from .folders import cached_problem
from .routes_submissions import ERRORS
from .schemas import ErrorOut, Health, QuotaInfo, TeamInfo, TrackInfo, TrackName, TrackTiles

log = logging.getLogger("c2seg_server")
router = APIRouter(tags=["teams"])


def track_infos(db, services) -> list[TrackInfo]:
    out = []
    for t, served in sorted(services.tracks.items()):
        st = phases.state(db, t)
        out.append(TrackInfo(track=t, phase=st.phase, layout=served.layout, shape=served.shape, n_tiles=served.n_tiles,
                             quota_per_day=services.settings.quota_per_day, phase_ends=st.ends,
                             next_phase=st.next_phase))
    return out


@router.get("/healthz", response_model=Health, responses={503: {"model": ERRORS[400]["model"]}})
def healthz(db: SessionDep, services: ServicesDep) -> Health:
    try:
        db.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001
        raise HTTPException(503, "database unavailable") from None
    problem = cached_problem(services.settings)
    if problem is not None:  # the path goes to the log only: it is the server's business
        log.error("the data folder is not writable: %s", problem)
        raise HTTPException(503, "the server cannot write its data folder: uploads would fail")
    return Health(status="ok", tracks=track_infos(db, services), max_upload_bytes=services.settings.max_upload_bytes,
                  max_model_bytes=services.settings.max_model_bytes)


@router.get("/api/v1/tracks", response_model=list[TrackInfo])
def tracks(db: SessionDep, services: ServicesDep) -> list[TrackInfo]:
    return track_infos(db, services)


@router.get("/api/v1/tracks/{track}/tiles", response_model=TrackTiles,
            responses={404: {"model": ErrorOut, "description": "the track is not served here, or is scored on the scene"},
                       422: ERRORS[422]})
def track_tiles(track: TrackName, services: ServicesDep) -> TrackTiles:
    """The test tiles a submission to a tile track must hold (what `c2seg submit` checks locally)."""
    track = served_track(track, services)
    served = services.tracks[track]
    if served.tiles is None:
        raise HTTPException(404, f"track {track} is scored on the whole scene ({served.shape[0]} x {served.shape[1]}); "
                                 "it has no tiles")
    return TrackTiles(track=track, tiles=served.tiles)


@router.get("/api/v1/me", response_model=TeamInfo, responses={401: ERRORS[401]})
def me(team: TeamDep, db: SessionDep, services: ServicesDep) -> TeamInfo:
    settings = services.settings
    _, resets = crud.utc_day()
    quota = []
    for t in sorted(services.tracks):
        st = phases.state(db, t, default_cap=settings.quota_per_phase)
        used = crud.used_today(db, team.id, t)
        used_phase = crud.used_since(db, team.id, t, st.since)
        picks = [s.id for s in crud.team_submissions(db, team.id, t) if s.final_pick]
        quota.append(QuotaInfo(
            track=t, used_today=used, left_today=max(0, settings.quota_per_day - used), resets=resets,
            phase=st.phase, phase_ends=st.ends, next_phase=st.next_phase, phase_cap=st.cap, used_phase=used_phase,
            left_phase=None if st.cap is None else max(0, st.cap - used_phase),
            final_picks=picks, final_picks_max=settings.final_picks))
    failed = crud.failures_today(db, team.id)
    return TeamInfo(team=team.name, baseline=team.is_baseline,
                    disqualified=(team.disqualified_reason or "no reason given") if team.disqualified else None,
                    quota=quota, failed_today=failed, failed_left_today=max(0, settings.failed_per_day - failed))
