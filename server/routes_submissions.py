"""POST /api/v1/submissions (upload and score) and reading one's own submissions back."""

from __future__ import annotations

import functools
import os
import uuid
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool

from . import crud
from .board import scores_out
from .deps import Services, ServicesDep, SessionDep, TeamDep
from .models import Submission, Team
from .schemas import ErrorOut, SubmissionOut
from .uploads import check_content_length, receive_upload
from .workers import InvalidUpload, ScoringFailed

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])

# The body is read by hand (see uploads.py), so its schema is declared here for the OpenAPI document.
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "predictions.h5 in the submission/1 format"}},
        }}},
    }
}
ERRORS = {code: {"model": ErrorOut, "description": why} for code, why in {
    400: "malformed request", 401: "missing, invalid or revoked token", 403: "the track is not open",
    404: "no such submission of yours", 408: "the upload took too long", 413: "the upload is too large",
    422: "the file is not a valid submission", 429: "daily quota used up",
}.items()}


def submission_out(sub: Submission, team: Team, phase: str) -> SubmissionOut:
    return SubmissionOut(
        id=sub.id, track=sub.track, team=team.name, created=sub.created, filename=sub.filename,
        method=sub.method, scores=scores_out(sub.score("public")),
        private_scores=scores_out(sub.score("private")) if phase == "final" else None,
    )


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
    # Token (TeamDep) and Content-Length are checked before the body is touched.
    check_content_length(request, settings.max_upload_bytes)
    try:
        await _db(services, crud.check_failure_budget, team.id, settings.failed_per_day)
    except crud.QuotaExceeded as e:
        raise HTTPException(429, str(e)) from None
    upload = await receive_upload(request, spool_dir=settings.spool_dir, limit=settings.max_upload_bytes,
                                  timeout_s=settings.upload_timeout_s)
    try:
        try:
            # Metadata only, so a short limit: a file that loops HDF5 there holds a child for seconds, not minutes.
            info = await _in_child(services, "peek", str(upload.path),
                                   timeout_s=min(settings.peek_timeout_s, settings.scoring_timeout_s))
        except (InvalidUpload, ScoringFailed) as e:
            raise await _refuse(services, team, str(e)) from None
        track = info["track"]
        phase = await _db(services, crud.get_phase, track)
        if phase != "open":
            raise HTTPException(403, f"track {track} is {phase}: submissions are not accepted")
        try:
            hold_s = settings.scoring_timeout_s * 2 + 60
            reservation = await _db(services, crud.reserve_slot, team.id, track, settings.quota_per_day, hold_s)
        except crud.QuotaExceeded as e:
            raise HTTPException(429, str(e)) from None
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
                            size=upload.size, sha256=upload.sha256, stored_as=stored_as,
                            method=info.get("method"), scores=scores)
        except BaseException:
            kept.unlink(missing_ok=True)
            await _db(services, crud.release_slot, reservation.id)
            raise
    finally:
        upload.path.unlink(missing_ok=True)
    services.boards.invalidate(track)
    return submission_out(sub, team, "open")


@router.get("", response_model=list[SubmissionOut], responses={401: ERRORS[401]},
            summary="Your team's submissions")
def list_submissions(team: TeamDep, db: SessionDep, track: str | None = None) -> list[SubmissionOut]:
    phases = {}
    out = []
    for sub in crud.team_submissions(db, team.id, track.upper() if track else None):
        phase = phases.setdefault(sub.track, crud.get_phase(db, sub.track))
        out.append(submission_out(sub, team, phase))
    return out


@router.get("/{submission_id}", response_model=SubmissionOut, responses={401: ERRORS[401], 404: ERRORS[404]},
            summary="One of your team's submissions")
def get_submission(submission_id: Annotated[int, Path(ge=1, le=2**31 - 1)], team: TeamDep, db: SessionDep) -> SubmissionOut:
    sub = crud.get_submission(db, submission_id, team.id)
    if sub is None:  # also for other teams' ids: their existence is not revealed
        raise HTTPException(404, f"you have no submission {submission_id}")
    return submission_out(sub, team, crud.get_phase(db, sub.track))
