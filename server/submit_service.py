"""Taking an upload: the service between the submissions route and the layers below it (the
admission's slots, the scoring children, the database).

The route collects what the request brings (the team from its token, the services, the declared
track and body size, a receiver of the body), calls :func:`submit` and answers: the submission,
or the :class:`Refusal` raised here as its HTTP status. The steps, in order:

1. the track, when it is known before the body (declared, or the only one served), and its phase;
2. the admission (admission.admit): an upload slot and, with the track known, its quota slot;
3. the body, streamed to the spool; the phase re-checked when its last byte arrived;
4. the metadata, and the early identical-file check (409, free of charge);
5. the file's admission (the scorer's ``peek``): the track decided once (the declared one, which
   the file must name, or the file's own), its header read in the one open of the file that the
   scoring then reuses; a track known only now has its caps taken and charged here;
6. the scoring basis (labels and split unchanged since the server started), then the scores;
7. the file kept, and the commit under the team's standing and the basis, re-checked under lock
   (a twin committed meanwhile: 409).

Any refusal frees the upload slot and an unused quota slot; a :class:`Refused` one (the file was
read, or the caps could only be decided after that) also counts as one of the team's refused
uploads.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable

import anyio
from fastapi.concurrency import run_in_threadpool

from c2seg_kit import text

from . import admission, crud, phases, stored
from .deps import Services
from .models import Submission, Team, utcnow
from .scoring import Header
from .uploads import FRAMING_BYTES, TEXT_FIELDS, Upload
from .workers import InvalidUpload, ScoringFailed

log = logging.getLogger("c2seg_server")


class Refusal(Exception):
    """The upload is refused: answered with ``status``, ``detail`` and ``headers``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


class Refused(Refusal):
    """A refusal that is recorded as one of the team's refused uploads (the daily cap): the file
    was read by a scoring child, or its track's caps could only be decided after that."""


async def in_db(services: Services, fn, *args, **kwargs):
    """``fn(session, *args, **kwargs)`` in a short session, off the event loop."""
    def run():
        with services.sessions() as s:
            return fn(s, *args, **kwargs)

    return await run_in_threadpool(run)


async def in_child(services: Services, verb: str, *args, timeout_s: float | None = None):
    """A scoring child's ``verb`` (workers.ScoringPool.call), off the event loop, at most one
    waiting thread per child."""
    if services.limiter is None:  # made here, inside the event loop, on first use
        services.limiter = anyio.CapacityLimiter(services.pool.size)
    call = functools.partial(services.pool.call, verb, *args, timeout_s=timeout_s)
    return await anyio.to_thread.run_sync(call, limiter=services.limiter)


def limits(settings) -> admission.Limits:
    return admission.Limits(
        per_team=settings.uploads_per_team, failed_per_day=settings.failed_per_day,
        spool_bytes=settings.spool_budget_mb * 1024 * 1024,
        hold_s=settings.upload_timeout_s + settings.peek_timeout_s + 2 * settings.scoring_timeout_s + 60)


def quota_refusal(e: crud.QuotaExceeded, kind: type[Refusal] = Refusal) -> Refusal:
    retry = {"Retry-After": str(max(1, int((e.resets - utcnow()).total_seconds())))} if e.resets else None
    return kind(429, str(e), headers=retry)


def _revoked() -> Refusal:
    return Refusal(401, "this team's token was revoked")


def _identical(earlier: int | None) -> Refusal:
    # free of charge: the answer would be the same scores
    return Refusal(409, f"identical to submission {earlier} (the same file, byte for byte); "
                        "not scored again and not charged")


async def open_track(services: Services, track: str, at=None, started=None) -> phases.PhaseState:
    """The track's phase (at `at`, default now), which must be open: 403 otherwise (saying so
    when it changed after `started`, while the upload was arriving)."""
    state = await in_db(services, phases.state, track, now=at, default_cap=services.settings.quota_per_phase)
    if state.phase != "open":
        late = (f" (its phase changed at {phases.iso(state.since)}, before the upload had fully arrived)"
                if started is not None and state.since is not None and state.since > started else "")
        raise Refusal(403, f"track {track} is {state.phase}: submissions are not accepted{late}")
    return state


def known_track(services: Services, declared: str | None) -> str | None:
    """The track as far as it is known before the body: the declared one (already checked to be
    served), or the only one served (the file must be for it); None when the file decides."""
    if declared is None and len(services.tracks) == 1:
        return next(iter(services.tracks))
    return declared


def same_basis(s, services: Services, track: str, *, lock: bool = False) -> None:
    """503 when the database no longer records the labels of `track` or the split this process
    scores with: `c2seg admin rescore` changed them since the server started, and a score on the
    old ones would sit beside the rescored ones on the board."""
    changed = services.basis and stored.basis_change(s, services.basis, track, lock=lock)
    if changed:
        log.error("%s changed in the database since this server started (c2seg admin rescore): uploads are "
                  "refused until it is restarted with the recorded labels", changed)
        raise Refusal(503, f"{changed} changed since this server started (an organizer rescored the board): "
                           "it takes no uploads until it is restarted with them; try again later",
                      headers={"Retry-After": "300"})


def file_method(value: str | None) -> str | None:
    """The file's `method` attribute as the fallback method name (cleaned, never refused)."""
    cleaned = text.strip_controls(value or "")[: text.METHOD_MAX].strip()
    return cleaned or None


async def submit(services: Services, team: Team, declared: str | None, nbytes: int | None,
                 receive: Callable[[], Awaitable[Upload]]) -> Submission:
    """Take one upload of ``team`` (the steps of the module docstring): the committed submission,
    or a :class:`Refusal`. ``declared``: the track the upload names, ``nbytes``: its declared
    body size (None: chunked), ``receive``: streams the body to the spool."""
    settings = services.settings
    track = known_track(services, declared)
    if track is not None:
        phase = await open_track(services, track)
    elif not any([(await in_db(services, phases.state, t)).phase == "open" for t in services.tracks]):
        raise Refusal(403, "no track is open: submissions are not accepted")
    else:
        phase = None
    nbytes = nbytes if nbytes is not None else settings.max_upload_bytes + FRAMING_BYTES
    try:
        held = await in_db(services, admission.admit, team.id, nbytes, limits(settings), track=track,
                           quota=settings.quota_per_day, phase=phase)
    except admission.Busy as e:
        raise Refusal(e.status, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    except crud.QuotaExceeded as e:
        raise quota_refusal(e) from None
    except crud.TeamRevoked:
        raise _revoked() from None
    refused, done = None, False
    try:
        sub = await _receive_and_score(services, team, held, track, receive)
        done = True
    except Refused as e:
        refused = e.detail
        raise
    finally:
        if not done:  # the slot (and an unused quota slot) go, with the refusal if there was one
            await in_db(services, admission.finish, held, refused=refused)
    services.boards.invalidate(sub.track)
    return sub


async def _receive_and_score(services: Services, team: Team, held: admission.Admission, track: str | None,
                             receive: Callable[[], Awaitable[Upload]]) -> Submission:
    settings = services.settings
    started = utcnow()
    upload = await receive()
    if track is None and upload.track is not None:  # declared in the body (a form): the file must name it
        track = upload.track
    # The deadline rule: an upload counts in the phase in which its last byte arrived. One whose
    # head came before a close (or the switch to final) and whose body came after is refused.
    received = utcnow()
    try:
        if track is not None:
            await open_track(services, track, at=received, started=started)
        try:  # the metadata, checked before any scoring work (refusing it costs the team nothing)
            meta = text.check_metadata(**{k: upload.fields.get(k) for k in TEXT_FIELDS})
        except ValueError as e:
            raise Refusal(422, str(e)) from None
        earlier = await in_db(services, crud.identical_submission, team.id, upload.sha256)
        if earlier is not None:  # (the database's unique index decides the races: see the commit)
            raise _identical(earlier)
        header = await _admit_file(services, upload, track)
        reservation = held.reservation
        if reservation is None:  # the track was not known before the file: its caps are decided now, and charged
            track = header.track
            try:
                phase = await open_track(services, track, at=received, started=started)
                reservation = await in_db(services, crud.reserve_slot, team.id, track, settings.quota_per_day,
                                          limits(settings).hold_s, phase)
            except Refusal as e:
                raise Refused(e.status, e.detail) from None
            except crud.QuotaExceeded as e:
                raise quota_refusal(e, Refused) from None
            except crud.TeamRevoked:
                raise _revoked() from None
            held.reservation = reservation
        await in_db(services, same_basis, services, track)  # never scored on labels the board no longer uses
        try:
            scores = await in_child(services, "score", str(upload.path), track, header)
        except (InvalidUpload, ScoringFailed) as e:
            raise Refused(422, text.for_terminal(str(e))) from None
        return await _keep_and_commit(services, team, held, reservation, upload, header, meta, scores)
    finally:
        upload.path.unlink(missing_ok=True)


async def _admit_file(services: Services, upload: Upload, track: str | None) -> Header:
    """The file's admission, in a scoring child: its track decided once (``track``, when known,
    must be the file's), its header checked against that track's labels in one open of the file,
    which the child keeps for the scores."""
    settings = services.settings
    try:
        # Metadata only, so a short limit: a file that loops HDF5 there holds a child for seconds, not minutes.
        return await in_child(services, "peek", str(upload.path), track,
                              timeout_s=min(settings.peek_timeout_s, settings.scoring_timeout_s))
    except (InvalidUpload, ScoringFailed) as e:
        raise Refused(422, text.for_terminal(str(e))) from None


async def _keep_and_commit(services: Services, team: Team, held: admission.Admission, reservation,
                           upload: Upload, header: Header, meta: dict, scores: dict) -> Submission:
    """Keep the file for rescoring (renamed into storage), then commit the rows in one transaction."""
    settings = services.settings
    stored_as = f"{reservation.created:%Y%m%d}-{uuid.uuid4().hex}.h5"
    settings.storage_dir.mkdir(parents=True, exist_ok=True)
    kept = settings.storage_dir / stored_as
    os.replace(upload.path, kept)
    try:
        return await in_db(services, crud.commit_submission, reservation, filename=upload.filename,
                           size=upload.size, sha256=upload.sha256, stored_as=stored_as, scores=scores,
                           method=meta["method"] or file_method(header.method),
                           description=meta["description"], url=meta["url"], upload_slot=held.slot_id,
                           token_hash=team.token_hash,
                           check=functools.partial(same_basis, services=services, track=header.track, lock=True))
    except BaseException as e:
        kept.unlink(missing_ok=True)
        if isinstance(e, crud.DuplicateSubmission):  # the same bytes, committed meanwhile
            raise _identical(e.earlier) from None
        if isinstance(e, crud.TeamChanged):  # revoked, new token or disqualified meanwhile
            raise Refusal(e.status, str(e)) from None
        raise
