"""POST /api/v1/submissions (upload and score), reading one's own submissions back, editing their
metadata (PATCH) and choosing the final picks (PUT /api/v1/final-picks/{track}).

The upload route stays thin: it collects what the request brings and hands it to
submit_service, which takes the upload through its steps; the route turns the outcome into the
answer (the submission as the team sees it, or the refusal's status)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from c2seg_kit import text

from . import attached_models, crud, ladder, phases, submit_service
from .board import candidates, chosen, ladder_scores, scores_out
from .deps import ServicesDep, SessionDep, TeamDep, served_track
from .models import Submission, Team
from .schemas import (
    AttachedModelOut,
    ErrorOut,
    FinalPicksIn,
    FinalPicksOut,
    MetadataIn,
    SubmissionOut,
    TrackName,
)
from .submit_service import in_db
from .uploads import check_content_length, receive_upload

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
#: The track the file is for, declared in the query so that the track's phase and the team's quota
#: on it are decided before the body is read (`c2seg submit` sends it); the file must agree.
DeclaredTrack = Annotated[TrackName | None, Query(description="the file's track (lets the server answer "
                                                              "403/429 before the upload)")]
ERRORS = {code: {"model": ErrorOut, "description": why} for code, why in {
    400: "malformed request", 401: "missing, invalid or revoked token",
    403: "the track is not open, or the team is disqualified", 404: "no such submission of yours",
    408: "the upload took too long", 409: "identical to one of the team's earlier submissions (not charged)",
    413: "the upload is too large",
    422: "the file or a field is not valid",
    429: "daily or per-phase quota or the phase's leak budget used up, too many refused uploads, or too many uploads in progress",
    503: "the server's spool or disk is full for now, or its labels are out of date after a rescore (Retry-After)",
}.items()}


@dataclass(frozen=True)
class Flags:
    """What a team's submission on a track is shown with: its best public one, those that count
    for the private ranking and, in ladder mode while the track is not final, the Ladder's answers."""

    best_id: int | None = None
    counted: frozenset[int] = frozenset()
    answers: ladder.Answers | None = None


def _flags(db, team_id: int, track: str, phase: str) -> Flags:
    mine = candidates(db, track, team_id)
    best, _ = chosen(mine)
    best_id = best[team_id].id if team_id in best else None
    policy = ladder.read_policy(db, track)
    answers = None
    if policy.ladder:  # the submission the team was shown stands for it
        answers = ladder.team_answers(db, team_id, track, policy)
        best_id = answers.best_id
        answers = answers if phase != "final" else None
    picks = {c.id for c in mine if c.final_pick}
    return Flags(best_id, frozenset(picks or ({best_id} if best_id else set())), answers)


def submission_out(sub: Submission, team: Team, phase: str, flags: Flags = Flags()) -> SubmissionOut:
    public = scores_out(sub.score("public"))
    shown = None
    if flags.answers is not None:  # a hidden submission keeps the answer it was given
        shown = flags.answers.shown.get(sub.id) or flags.answers.seen.get(sub.id)
    if flags.answers is not None:  # ladder mode: the Ladder's value after this submission, nothing else
        public = ladder_scores(public, shown[0] if shown else 0.0)
    return SubmissionOut(
        id=sub.id, track=sub.track, team=team.name, created=sub.created, filename=sub.filename,
        method=sub.method, description=sub.description, url=sub.url,
        status="hidden" if sub.hidden else "scored", final_pick=sub.final_pick,
        best_public=sub.id == flags.best_id, private_candidate=sub.id in flags.counted,
        scores=public,
        public_scores="ladder" if flags.answers is not None else "exact",
        ladder_moved=None if flags.answers is None else bool(shown and shown[1]),
        ladder_rule=None if flags.answers is None else ladder.Policy(mode=flags.answers.mode).rule,
        private_scores=scores_out(sub.score("private")) if phase == "final" else None,
        model=None if sub.model is None else AttachedModelOut(
            kind=sub.model.kind, filename=sub.model.filename, size=sub.model.size, sha256=sub.model.sha256,
            created=sub.model.created),
    )


def _describe(db, team: Team, sub: Submission) -> SubmissionOut:
    phase = crud.get_phase(db, sub.track)
    return submission_out(sub, team, phase, _flags(db, team.id, sub.track, phase))


def _not_disqualified(team: Team) -> None:
    if team.disqualified is not None:
        raise HTTPException(403, f"your team is disqualified: {team.disqualified_reason or 'no reason given'}")


@router.post("", status_code=201, response_model=SubmissionOut, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Upload predictions.h5 and get its public scores")
async def create_submission(request: Request, team: TeamDep, services: ServicesDep,
                            track: DeclaredTrack = None) -> SubmissionOut:
    settings = services.settings
    # Token (TeamDep), standing, size, track and every cap are decided before the body is touched.
    _not_disqualified(team)
    nbytes = check_content_length(request, settings.max_upload_bytes)
    declared = served_track(track, services) if track is not None else None
    receive = functools.partial(receive_upload, request, spool_dir=settings.spool_dir,
                                limit=settings.max_upload_bytes, timeout_s=settings.upload_timeout_s)
    try:
        sub = await submit_service.submit(services, team, declared, nbytes, receive)
    except submit_service.Refusal as e:
        raise HTTPException(e.status, e.detail, headers=e.headers) from None
    return await in_db(services, lambda s: _describe(s, team, crud.own_submission(s, sub.id, team.id)))


@router.get("", response_model=list[SubmissionOut], responses={401: ERRORS[401]},
            summary="Your team's submissions (with metadata, status and final picks)")
def list_submissions(team: TeamDep, db: SessionDep, track: TrackName | None = None) -> list[SubmissionOut]:
    phase_of, flags_of = {}, {}
    out = []
    for sub in crud.team_submissions(db, team.id, track):
        if sub.track not in phase_of:
            phase_of[sub.track] = crud.get_phase(db, sub.track)
            flags_of[sub.track] = _flags(db, team.id, sub.track, phase_of[sub.track])
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


MODEL_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "a kit checkpoint (.pt) or an ONNX model (docs/verify.md)"}},
        }}},
    }
}


@router.put("/{submission_id}/model", response_model=SubmissionOut, openapi_extra=MODEL_BODY,
            responses={**{k: ERRORS[k] for k in (400, 401, 403, 404, 408, 429, 503)},
                       409: {"model": ErrorOut, "description": "the submission already has a model attached"},
                       413: {"model": ErrorOut, "description": "the model is larger than the server accepts"},
                       422: {"model": ErrorOut, "description": "neither a kit checkpoint nor an ONNX model"}},
            summary="Attach the model behind one of your submissions (stored for the organizers to re-run; "
                    "never run by this server)")
async def attach_model(submission_id: SubmissionId, request: Request, team: TeamDep,
                       services: ServicesDep) -> SubmissionOut:
    settings = services.settings
    # Token (TeamDep), standing, size and the submission are decided before the body is touched.
    _not_disqualified(team)
    nbytes = check_content_length(request, settings.max_model_bytes)
    receive = functools.partial(receive_upload, request, spool_dir=settings.spool_dir,
                                limit=settings.max_model_bytes, timeout_s=settings.upload_timeout_s)
    try:
        await attached_models.attach(services, team, submission_id, nbytes, receive)
    except submit_service.Refusal as e:
        raise HTTPException(e.status, e.detail, headers=e.headers) from None
    return await in_db(services, lambda s: _describe(s, team, crud.own_submission(s, submission_id, team.id)))
