"""POST /api/v1/submissions (upload and score), reading one's own submissions back, editing their
metadata (PATCH) and choosing the final picks (PUT /api/v1/final-picks/{track})."""

from __future__ import annotations

import functools
import logging
import os
import uuid
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from c2seg_kit import text

from . import admission, crud, ladder, phases, stored
from .board import candidates, chosen, ladder_scores, scores_out
from .deps import Services, ServicesDep, SessionDep, TeamDep, served_track
from .models import Submission, Team, utcnow
from .schemas import ErrorOut, FinalPicksIn, FinalPicksOut, MetadataIn, SubmissionOut, TrackName
from .uploads import FRAMING_BYTES, TEXT_FIELDS, check_content_length, receive_upload
from .workers import InvalidUpload, ScoringFailed

log = logging.getLogger("c2seg_server")
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
        private_scores=scores_out(sub.score("private")) if phase == "final" else None,
    )


def _describe(db, team: Team, sub: Submission) -> SubmissionOut:
    phase = crud.get_phase(db, sub.track)
    return submission_out(sub, team, phase, _flags(db, team.id, sub.track, phase))


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


def _limits(settings) -> admission.Limits:
    return admission.Limits(
        per_team=settings.uploads_per_team, failed_per_day=settings.failed_per_day,
        spool_bytes=settings.spool_budget_mb * 1024 * 1024,
        hold_s=settings.upload_timeout_s + settings.peek_timeout_s + 2 * settings.scoring_timeout_s + 60)


def _quota_refusal(e: crud.QuotaExceeded) -> HTTPException:
    retry = {"Retry-After": str(max(1, int((e.resets - utcnow()).total_seconds())))} if e.resets else None
    return HTTPException(429, str(e), headers=retry)


class Refused(HTTPException):
    """A refusal that is recorded as one of the team's refused uploads (the daily cap): the file
    was read by a scoring child, or its track's caps could only be decided after that."""


async def _open_track(services: Services, track: str, at=None, started=None) -> phases.PhaseState:
    """The track's phase (at `at`, default now), which must be open: 403 otherwise (saying so
    when it changed after `started`, while the upload was arriving)."""
    state = await _db(services, phases.state, track, now=at, default_cap=services.settings.quota_per_phase)
    if state.phase != "open":
        late = (f" (its phase changed at {phases.iso(state.since)}, before the upload had fully arrived)"
                if started is not None and state.since is not None and state.since > started else "")
        raise HTTPException(403, f"track {track} is {state.phase}: submissions are not accepted{late}")
    return state


def _identical(earlier: int | None) -> HTTPException:
    # free of charge: the answer would be the same scores
    return HTTPException(409, f"identical to submission {earlier} (the same file, byte for byte); "
                              "not scored again and not charged")


@router.post("", status_code=201, response_model=SubmissionOut, responses=ERRORS, openapi_extra=UPLOAD_BODY,
             summary="Upload predictions.h5 and get its public scores")
async def create_submission(request: Request, team: TeamDep, services: ServicesDep,
                            track: DeclaredTrack = None) -> SubmissionOut:
    settings = services.settings
    # Token (TeamDep), standing, size, track and every cap are decided before the body is touched.
    _not_disqualified(team)
    declared = check_content_length(request, settings.max_upload_bytes)
    if track is not None:
        track = served_track(track, services)
    elif len(services.tracks) == 1:
        track = next(iter(services.tracks))  # the only track served: the file must be for it
    if track is not None:
        phase = await _open_track(services, track)
    elif not any([(await _db(services, phases.state, t)).phase == "open" for t in services.tracks]):
        raise HTTPException(403, "no track is open: submissions are not accepted")
    else:
        phase = None
    nbytes = declared if declared is not None else settings.max_upload_bytes + FRAMING_BYTES
    try:
        held = await _db(services, admission.admit, team.id, nbytes, _limits(settings), track=track,
                         quota=settings.quota_per_day, phase=phase)
    except admission.Busy as e:
        raise HTTPException(e.status, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    except crud.QuotaExceeded as e:
        raise _quota_refusal(e) from None
    except crud.TeamRevoked:
        raise HTTPException(401, "this team's token was revoked") from None
    refused, done = None, False
    try:
        sub = await _receive_and_score(request, team, services, held, track)
        done = True
    except Refused as e:
        refused = e.detail
        raise
    finally:
        if not done:  # the slot (and an unused quota slot) go, with the refusal if there was one
            await _db(services, admission.finish, held, refused=refused)
    services.boards.invalidate(sub.track)
    return await _db(services, lambda s: _describe(s, team, crud.own_submission(s, sub.id, team.id)))


async def _receive_and_score(request: Request, team: Team, services: Services, held: admission.Admission,
                             track: str | None) -> Submission:
    settings = services.settings
    started = utcnow()
    upload = await receive_upload(request, spool_dir=settings.spool_dir, limit=settings.max_upload_bytes,
                                  timeout_s=settings.upload_timeout_s)
    # The deadline rule: an upload counts in the phase in which its last byte arrived. One whose
    # head came before a close (or the switch to final) and whose body came after is refused.
    received = utcnow()
    try:
        if track is not None:
            await _open_track(services, track, at=received, started=started)
        try:  # the metadata, checked before any scoring work (refusing it costs the team nothing)
            meta = text.check_metadata(**{k: upload.fields.get(k) for k in TEXT_FIELDS})
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
        earlier = await _db(services, crud.identical_submission, team.id, upload.sha256)
        if earlier is not None:  # (the database's unique index decides the races: see the commit)
            raise _identical(earlier)
        try:
            # Metadata only, so a short limit: a file that loops HDF5 there holds a child for seconds, not minutes.
            header = await _in_child(services, "peek", str(upload.path), track,
                                     timeout_s=min(settings.peek_timeout_s, settings.scoring_timeout_s))
        except (InvalidUpload, ScoringFailed) as e:
            raise Refused(422, text.for_terminal(str(e))) from None
        reservation = held.reservation
        if reservation is None:  # the track was not known before the file: its caps are decided now, and charged
            track = header.track
            try:
                phase = await _open_track(services, track, at=received, started=started)
                reservation = await _db(services, crud.reserve_slot, team.id, track, settings.quota_per_day,
                                        _limits(settings).hold_s, phase)
            except HTTPException as e:
                raise Refused(e.status_code, e.detail) from None
            except crud.QuotaExceeded as e:
                raise Refused(429, str(e), headers=_quota_refusal(e).headers) from None
            except crud.TeamRevoked:
                raise HTTPException(401, "this team's token was revoked") from None
            held.reservation = reservation
        await _db(services, _same_basis, services, track)  # never scored on labels the board no longer uses
        try:
            scores = await _in_child(services, "score", str(upload.path), track, header)
        except (InvalidUpload, ScoringFailed) as e:
            raise Refused(422, text.for_terminal(str(e))) from None
        # Keep the file for rescoring: rename into storage, then commit the rows in one transaction.
        stored_as = f"{reservation.created:%Y%m%d}-{uuid.uuid4().hex}.h5"
        settings.storage_dir.mkdir(parents=True, exist_ok=True)
        kept = settings.storage_dir / stored_as
        os.replace(upload.path, kept)
        try:
            return await _db(services, crud.commit_submission, reservation, filename=upload.filename,
                             size=upload.size, sha256=upload.sha256, stored_as=stored_as, scores=scores,
                             # the file's `method` attribute is the fallback (cleaned, never refused)
                             method=meta["method"] or _file_method(header.method),
                             description=meta["description"], url=meta["url"], upload_slot=held.slot_id,
                             token_hash=team.token_hash,
                             check=functools.partial(_same_basis, services=services, track=track, lock=True))
        except BaseException as e:
            kept.unlink(missing_ok=True)
            if isinstance(e, crud.DuplicateSubmission):  # the same bytes, committed meanwhile
                raise _identical(e.earlier) from None
            if isinstance(e, crud.TeamChanged):  # revoked, new token or disqualified meanwhile
                raise HTTPException(e.status, str(e)) from None
            raise
    finally:
        upload.path.unlink(missing_ok=True)


def _same_basis(s, services: Services, track: str, *, lock: bool = False) -> None:
    """503 when the database no longer records the labels of `track` or the split this process
    scores with: `c2seg admin rescore` changed them since the server started, and a score on the
    old ones would sit beside the rescored ones on the board."""
    changed = services.basis and stored.basis_change(s, services.basis, track, lock=lock)
    if changed:
        log.error("%s changed in the database since this server started (c2seg admin rescore): uploads are "
                  "refused until it is restarted with the recorded labels", changed)
        raise HTTPException(503, f"{changed} changed since this server started (an organizer rescored the board): "
                                 "it takes no uploads until it is restarted with them; try again later",
                            headers={"Retry-After": "300"})


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
