"""Attaching a model to a submission: the service behind `PUT /api/v1/submissions/{id}/model`.

A team attaches the model that produced one of its submissions (a kit checkpoint or an ONNX
file, c2seg_kit.model_files), so that organizers can re-run it on the hidden test inputs
(`c2seg admin verify`, in a child process of the organizer's shell). The web process never
loads, unpickles or parses a model: it streams the body to the spool under its own size cap
(Settings.max_model_bytes), takes its sha256 and size on the way, decides the kind from the
first bytes alone (c2seg_kit.model_files.sniff), then renames the file into the storage folder
beside the submissions and records it. What the file holds is checked where it is run: by the
client before it is sent, and by the verifier's child process.

The steps, in order: the token (before the body), the team's standing, the declared size, the
submission (the team's own, with no model yet: 404/409 before the body), an upload slot (the
same per-team concurrency and spool budget as the submissions' uploads), the body, the kind,
the file kept and the row committed (a model attached meanwhile: 409, the file removed).
A model may be attached in any phase: it changes no score.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from c2seg_kit import model_files

from . import admission, crud
from .deps import Services
from .models import AttachedModel, Submission, Team, utcnow
from .submit_service import Refusal, in_db, keep, limits
from .uploads import Upload

SUFFIX = {"checkpoint": ".pt", "onnx": ".onnx"}


def _open_submission(s: Session, submission_id: int, team_id: int) -> Submission:
    """The team's submission `submission_id` without a model yet (404 / 409 otherwise)."""
    try:
        sub = crud.own_submission(s, submission_id, team_id)
    except crud.NotYours as e:
        raise Refusal(404, str(e)) from None
    if sub.model is not None:
        raise Refusal(409, f"submission {submission_id} already has a model attached "
                           f"({sub.model.kind}, sha256 {sub.model.sha256[:12]}...)")
    return sub


def file_kind(path) -> str:
    """The kind of the spooled file, from its first bytes alone (nothing of it is parsed): 422
    when they are neither a zip archive (a kit checkpoint) nor an ONNX ModelProto."""
    with open(path, "rb") as f:
        head = f.read(16)
    kind = model_files.sniff(head)
    if kind is None:
        raise Refusal(422, model_files.refusal(head))
    return kind


def _commit(s: Session, submission_id: int, team_id: int, upload: Upload, kind: str, stored_as: str) -> None:
    _open_submission(s, submission_id, team_id)
    s.add(AttachedModel(submission_id=submission_id, kind=kind, filename=upload.filename, size=upload.size,
                        sha256=upload.sha256, stored_as=stored_as, created=utcnow()))
    try:
        s.commit()
    except IntegrityError:  # attached by another request meanwhile
        s.rollback()
        raise Refusal(409, f"submission {submission_id} already has a model attached") from None


async def attach(services: Services, team: Team, submission_id: int, nbytes: int | None,
                 receive: Callable[[], Awaitable[Upload]]) -> None:
    """Take one model upload for `submission_id` of `team` (the steps of the module docstring),
    or raise a Refusal."""
    settings = services.settings
    await in_db(services, _open_submission, submission_id, team.id)
    nbytes = nbytes if nbytes is not None else settings.max_model_bytes
    try:
        held = await in_db(services, admission.admit, team.id, nbytes, limits(settings))
    except admission.Busy as e:
        raise Refusal(e.status, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    except crud.QuotaExceeded as e:
        raise Refusal(429, str(e)) from None
    except crud.TeamRevoked:
        raise Refusal(401, "this team's token was revoked") from None
    refused, upload = None, None
    try:
        upload = await receive()
        try:
            kind = await run_in_threadpool(file_kind, upload.path)
        except Refusal as e:
            refused = e.detail
            raise
        stored_as = f"{utcnow():%Y%m%d}-{uuid.uuid4().hex}{SUFFIX[kind]}"
        kept = keep(settings, upload, stored_as)
        try:
            await in_db(services, _commit, submission_id, team.id, upload, kind, stored_as)
        except BaseException:
            kept.unlink(missing_ok=True)
            raise
    finally:
        if upload is not None:
            upload.path.unlink(missing_ok=True)
        await in_db(services, admission.finish, held, refused=refused)
