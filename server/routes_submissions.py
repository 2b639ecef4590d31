"""POST /api/v1/submissions (upload and score), reading one's own submissions back, editing their
metadata (PATCH) and choosing the final picks (PUT /api/v1/final-picks/{track})."""

from __future__ import annotations

import functools
import os
import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool

from c2seg_kit import text

from . import crud, phases
from .board import candidates, chosen, scores_out
from .deps import Services, ServicesDep, SessionDep, TeamDep, served_track
from .models import Submission, Team, utcnow
from .schemas import ErrorOut, FinalPicksIn, FinalPicksOut, MetadataIn, SubmissionOut, TrackName
from .uploads import TEXT_FIELDS, check_content_length, receive_upload
from .workers import InvalidUpload, ScoringFailed

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])
picks_router = APIRouter(prefix="/api/v1/final-picks", tags=["submissions"])

# The body is read by hand (see uploads.py), so its schema is declared here for the OpenAPI document.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary", "description": "predictions.h5 in the submission/1 format"},
                "method": {"type": "string", "maxLength": text.METHOD_MAX, "pattern": text.LINE_PATTERN,
                           "description": "method name (default: the file's `method` attribute)"},
                "description": {"type": "string", "maxLength": text.DESCRIPTION_MAX, "pattern": text.LINES_PATTERN,
                                "description": "what the method does"},
                "url": {"type": "string", "maxLength": text.URL_MAX, "pattern": text.URL_PATTERN,
                        "description": "http(s) link to a paper, report or code"},
            },
        }}},
    }
}
ERRORS = {code: {"model": ErrorOut, "description": why} for code, why in {
    400: "malformed request", 401: "missing, invalid or revoked token",
    403: "the track is not open, or the team is disqualified", 404: "no such submission of yours",
    408: "the upload took too long", 413: "the upload is too large",
    422: "the file or a field is not valid", 429: "daily or per-phase quota used up",
}.items()}


def _flags(db, team_id: int, track: str) -> tuple[int | None, set[int]]:
    """(the team's best public submission, the submissions that count for the private ranking)."""
    mine = candidates(db, track, team_id)
    best, _ = chosen(mine)
    picks = {c.id for c in mine if c.final_pick}
    best_id = best[team_id].id if team_id in best else None
    return best_id, picks or ({best_id} if best_id else set())


def submission_out(sub: Submission, team: Team, phase: str, flags: tuple[int | None, set[int]] = (None, set())
                   ) -> SubmissionOut:
    best_id, counted = flags
    return SubmissionOut(
        id=sub.id, track=sub.track, team=team.name, created=sub.created, filename=sub.filename,
        method=sub.method, description=sub.description, url=sub.url,
        status="hidden" if sub.hidden else "scored", final_pick=sub.final_pick,
        best_public=sub.id == best_id, private_candidate=sub.id in counted,
        scores=scores_out(sub.score("public")),
        private_scores=scores_out(sub.score("private")) if phase == "final" else None,
    )


def _describe(db, team: Team, sub: Submission) -> SubmissionOut:
    return submission_out(sub, team, crud.get_phase(db, sub.track), _flags(db, team.id, sub.track))


def _not_disqualified(team: Team) -> None:
    if team.disqualified is not None:
        raise HTTPException(403, f"your team is disqualified: {team.disqualified_reason or 'no reason given'}")


async def _in_child(services: Services, verb: str, *args, timeout_s: float | None = None):
    if services.limiter is None:  # made here, inside the event loop, on first use
        services.limiter = anyio.CapacityLimiter(services.pool.size)
    call = functools.partial(services.pool.call, verb, *args, timeout_s=timeout_s)
    return await anyio.to_thread.run_sync(call, limiter=services.limiter)


async def _db(services: Services, fn, *args, **kwargs):
    def run():
        with services.sessions() as s:
            return fn(s, *args, **kwargs)

    return await run_in_threadpool(run)


async def _refuse(services: Services, team: Team, reason: str, status: int = 422) -> HTTPException:
    await _db(services, crud.record_failure, team.id, reason)
    return HTTPException(status, reason)


@router.post("", status_code=201, response_model=SubmissionOut, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Upload predictions.h5 and get its public scores")
async def create_submission(request: Request, team: TeamDep, services: ServicesDep) -> SubmissionOut:
    settings = services.settings
    # Token (TeamDep), standing and Content-Length are checked before the body is touched.
    _not_disqualified(team)
    check_content_length(request, settings.max_upload_bytes)
    try:
        await _db(services, crud.check_failure_budget, team.id, settings.failed_per_day)
    except crud.QuotaExceeded as e:
        raise HTTPException(429, str(e)) from None
    upload = await receive_upload(request, spool_dir=settings.spool_dir, limit=settings.max_upload_bytes,
                                  timeout_s=settings.upload_timeout_s)
    try:
        try:  # the metadata, checked before any scoring work (refusing it costs the team nothing)
            meta = text.check_metadata(**{k: upload.fields.get(k) for k in TEXT_FIELDS})
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        try:
            # Metadata only, so a short limit: a file that loops HDF5 there holds a child for seconds, not minutes.
            info = await _in_child(services, "peek", str(upload.path),
                                   timeout_s=min(settings.peek_timeout_s, settings.scoring_timeout_s))
        except (InvalidUpload, ScoringFailed) as e:
            raise await _refuse(services, team, str(e)) from None
        track = info["track"]
        phase = await _db(services, phases.state, track, default_cap=settings.quota_per_phase)
        if phase.phase != "open":
            raise HTTPException(403, f"track {track} is {phase.phase}: submissions are not accepted")
        try:
            hold_s = settings.scoring_timeout_s * 2 + 60
            reservation = await _db(services, crud.reserve_slot, team.id, track, settings.quota_per_day, hold_s,
                                    phase)
        except crud.QuotaExceeded as e:
            retry = {"Retry-After": str(max(1, int((e.resets - utcnow()).total_seconds())))} if e.resets else None
            raise HTTPException(429, str(e), headers=retry) from None
        except crud.TeamRevoked:
            raise HTTPException(401, "this team's token was revoked") from None
        try:
            scores = await _in_child(services, "score", str(upload.path), track)
        except (InvalidUpload, ScoringFailed) as e:
            await _db(services, crud.release_slot, reservation.id)
            raise await _refuse(services, team, str(e)) from None
        except BaseException:
            await _db(services, crud.release_slot, reservation.id)
            raise
        # Keep the file for rescoring: rename into storage, then commit the rows in one transaction.
        stored_as = f"{reservation.created:%Y%m%d}-{uuid.uuid4().hex}.h5"
        settings.storage_dir.mkdir(parents=True, exist_ok=True)
        kept = settings.storage_dir / stored_as
        os.replace(upload.path, kept)
        try:
            sub = await _db(services, crud.commit_submission, reservation, filename=upload.filename,
                            size=upload.size, sha256=upload.sha256, stored_as=stored_as, scores=scores,
                            # the file's `method` attribute is the fallback (cleaned, never refused)
                            method=meta["method"] or _file_method(info.get("method")),
                            description=meta["description"], url=meta["url"])
        except BaseException:
            kept.unlink(missing_ok=True)
            await _db(services, crud.release_slot, reservation.id)
            raise
    finally:
        upload.path.unlink(missing_ok=True)
    services.boards.invalidate(track)
    return await _db(services, lambda s: _describe(s, team, crud.own_submission(s, sub.id, team.id)))


def _file_method(value: str | None) -> str | None:
    cleaned = text.strip_controls(value or "")[: text.METHOD_MAX].strip()
    return cleaned or None


@router.get("", response_model=list[SubmissionOut], responses={401: ERRORS[401]},
            summary="Your team's submissions (with metadata, status and final picks)")
def list_submissions(team: TeamDep, db: SessionDep, track: TrackName | None = None) -> list[SubmissionOut]:
    phase_of, flags_of = {}, {}
    out = []
    for sub in crud.team_submissions(db, team.id, track):
        if sub.track not in phase_of:
            phase_of[sub.track] = crud.get_phase(db, sub.track)
            flags_of[sub.track] = _flags(db, team.id, sub.track)
        out.append(submission_out(sub, team, phase_of[sub.track], flags_of[sub.track]))
    return out


SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _own(db, submission_id: int, team: Team) -> Submission:
    try:
        return crud.own_submission(db, submission_id, team.id)
    except crud.NotYours as e:  # also for other teams' ids: their existence is not revealed
        raise HTTPException(404, str(e)) from None


@router.get("/{submission_id}", response_model=SubmissionOut, responses={401: ERRORS[401], 404: ERRORS[404]},
            summary="One of your team's submissions")
def get_submission(submission_id: SubmissionId, team: TeamDep, db: SessionDep) -> SubmissionOut:
    return _describe(db, team, _own(db, submission_id, team))


@router.patch("/{submission_id}", response_model=SubmissionOut,
              responses={k: ERRORS[k] for k in (400, 401, 403, 404, 422)},
              summary="Edit your submission's method, description or URL")
def edit_submission(submission_id: SubmissionId, body: MetadataIn, team: TeamDep, db: SessionDep,
                    services: ServicesDep) -> SubmissionOut:
    _not_disqualified(team)
    sub = _own(db, submission_id, team)
    crud.set_metadata(db, sub, body.model_dump(include=body.model_fields_set))
    services.boards.invalidate(sub.track)
    return _describe(db, team, sub)


@picks_router.put("/{track}", response_model=FinalPicksOut, responses={k: ERRORS[k] for k in (400, 401, 403, 404, 422)},
                  summary="Choose your final picks on a track for the private ranking (while it is open)")
def set_final_picks(track: TrackName, body: FinalPicksIn, team: TeamDep, db: SessionDep,
                    services: ServicesDep) -> FinalPicksOut:
    track = served_track(track, services)
    _not_disqualified(team)
    state = phases.state(db, track)
    if state.phase != "open":
        raise HTTPException(403, f"track {track} is {state.phase}: final picks closed with the open phase")
    limit = services.settings.final_picks
    try:
        crud.set_final_picks(db, team.id, track, body.ids, limit)
    except crud.NotYours as e:
        raise HTTPException(404, str(e)) from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    services.boards.invalidate(track)
    return FinalPicksOut(track=track, ids=sorted(body.ids), max=limit, closes=state.ends)
