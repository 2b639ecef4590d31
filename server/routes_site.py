"""The participants' site under /team: sign in with the team token, upload, follow one's
submissions, edit their metadata, choose final picks, see the quota, the phases and a tile
track's test tiles. Server-side HTML (Jinja, autoescaped), plain forms that work without
JavaScript; /static/site.js improves them where it runs.

Every answer is the API's: the routes call the API's own route functions and submit_service
(the same rules, refusals and words), and turn the outcome into a page. A plain form post is
answered with a 303 back to /team and a one-shot message kept in the session; a post with
``Accept: application/json`` gets ``{"ok", "status", "message", "submission"}`` instead.
Sessions, cookies and CSRF: site_sessions.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from c2seg_kit import text
from c2seg_kit.registry import TRACKS

from . import routes_submissions, routes_teams, site_sessions, submit_service
from .deps import ServicesDep, served_track
from .pages import HERE
from .schemas import FinalPicksIn, MetadataIn, SubmissionOut
from .site_sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, SIGN_IN_PATH, SIGNIN_COOKIE, Member, wants_json
from .submit_service import in_db
from .uploads import TEXT_FIELDS, check_content_length, receive_upload

router = APIRouter(prefix="/team", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape is on for .html


def _utc(d: dt.datetime) -> dt.datetime:
    return (d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)


# <time datetime="..."> gets ISO 8601 in UTC; the text says UTC (site.js adds the viewer's time).
templates.env.filters["iso"] = lambda d: _utc(d).strftime("%Y-%m-%dT%H:%M:%SZ")
templates.env.filters["utc_text"] = lambda d: _utc(d).strftime("%Y-%m-%d %H:%M UTC")
templates.env.globals["limits"] = {"method": text.METHOD_MAX, "description": text.DESCRIPTION_MAX, "url": text.URL_MAX}
MemberDep = Annotated[Member, Depends(site_sessions.member_required)]
#: What the upload form's file input offers (the server takes HDF5 files; it decides anyway).
ACCEPT = ".h5,.hdf5"
#: The upload form's small fields beside the metadata: the CSRF token and the chosen track.
FORM_FIELDS = {**TEXT_FIELDS, CSRF_FIELD: 256, "track": 64}
DASHBOARD = "/team"


def on_site_path(path: str) -> bool:
    return path == DASHBOARD or path.startswith(DASHBOARD + "/")


def on_site(request: Request) -> bool:
    return on_site_path(request.url.path)


def error_response(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
    """A refusal on the site (no session, another origin, a malformed form) in the site's shapes:
    its JSON for scripts, plain words otherwise (a redirect keeps its Location)."""
    if wants_json(request):
        response = JSONResponse({"ok": False, "status": status, "message": message, "submission": None},
                                status_code=status)
    else:
        response = PlainTextResponse(message + "\n", status_code=status)
    for k, v in (headers or {}).items():
        response.headers[k] = v
    return response


def _cookie_args(request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": site_sessions.is_https(request)}


def _plain(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(message + "\n", status_code=status)


def _scores_text(sub: SubmissionOut) -> str:
    sc = sub.scores
    if sc is None:
        return "no public scores"
    parts = [f"{name} {value:.4f}" for name, value in
             (("mIoU", sc.miou), ("OA", sc.oa), ("F1", sc.f1), ("kappa", sc.kappa)) if value is not None]
    return "public " + ", ".join(parts)


async def _answer(request: Request, member: Member, status: int, message: str,
                  submission: SubmissionOut | None = None) -> Response:
    """The outcome of a form post: JSON for scripts, else a one-shot message and back to /team."""
    if wants_json(request):
        return JSONResponse({"ok": status < 400, "status": status, "message": message,
                             "submission": submission.model_dump(mode="json") if submission else None},
                            status_code=status)
    flash = json.dumps({"ok": status < 400, "message": message})
    await in_db(request.app.state.services, site_sessions.set_flash, member.session_row, flash)
    return RedirectResponse(DASHBOARD, status_code=303)


def _forged(request: Request, e: HTTPException) -> Response:
    """A post without the session's CSRF token: 403, with nothing done and no message kept."""
    return error_response(request, 403, e.detail)


def _form_lines(value: str | None) -> str | None:
    """A form's text as the API takes it: browsers send a textarea's line ends as CRLF."""
    return None if value is None else value.replace("\r\n", "\n")


def _refusal_text(e: HTTPException) -> str:
    return str(e.detail)


def _validation_text(e: ValidationError) -> str:
    first = e.errors()[0] if e.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid value')}" if where else first.get("msg", "invalid value")


# --- sign-in and sign-out -----------------------------------------------------------------------

def _sign_in_page(request: Request, status: int = 200, message: str | None = None) -> HTMLResponse:
    pre = request.cookies.get(SIGNIN_COOKIE)
    if not pre or len(pre) > 256:
        pre = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(request, "site_sign_in.html", {"csrf": pre, "message": message},
                                          status_code=status)
    response.set_cookie(SIGNIN_COOKIE, pre, max_age=3600, path=SIGN_IN_PATH, **_cookie_args(request))
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_page(request: Request) -> Response:
    if site_sessions.current_member(request) is not None:
        return RedirectResponse(DASHBOARD, status_code=303)
    return _sign_in_page(request)


@router.post("/sign-in")
def sign_in(request: Request, services: ServicesDep, token: Annotated[str, Form(max_length=512)] = "",
            csrf: Annotated[str, Form(max_length=512)] = "") -> Response:
    pre = request.cookies.get(SIGNIN_COOKIE)
    if not site_sessions.same_origin(request) or not pre or not site_sessions.csrf_matches(pre, csrf):
        return _plain(403, "refused: the sign-in form's security token is missing or wrong; "
                           "open the sign-in page again and paste your token there")
    with services.sessions() as s:
        team = site_sessions.team_for_token(s, token)
        session_id = None if team is None else site_sessions.open_session(s, team, services.settings.site_session_hours)
    if session_id is None:  # one answer for every wrong token: nothing says which teams exist
        return _sign_in_page(request, 401, "That token was not accepted: it is wrong, or it was revoked or "
                                           "replaced. Paste the token your team was given.")
    response = RedirectResponse(DASHBOARD, status_code=303)
    response.set_cookie(COOKIE, session_id, max_age=int(services.settings.site_session_hours * 3600), path="/",
                        **_cookie_args(request))
    response.delete_cookie(SIGNIN_COOKIE, path=SIGN_IN_PATH, **_cookie_args(request))
    return response


@router.post("/sign-out")
def sign_out(request: Request, member: MemberDep, services: ServicesDep,
             csrf: Annotated[str, Form(max_length=512)] = "") -> Response:
    if not site_sessions.csrf_matches(member.csrf, csrf):
        return _forged(request, site_sessions.Forged())
    with services.sessions() as s:
        site_sessions.close_session(s, member.session_row)
    response = RedirectResponse(SIGN_IN_PATH, status_code=303)
    response.delete_cookie(COOKIE, path="/", **_cookie_args(request))
    return response


# --- the dashboard ------------------------------------------------------------------------------

def _dashboard(services, member: Member) -> dict:
    team = member.team
    with services.sessions() as db:
        me = routes_teams.me(team, db, services)
        subs = routes_submissions.list_submissions(team, db)[::-1]  # newest first
        flash = site_sessions.pop_flash(db, member.session_row)
    phases = {q.track: q.phase for q in me.quota}
    return {"me": me, "submissions": subs, "flash": json.loads(flash) if flash else None,
            "tracks": TRACKS, "served": services.tracks, "csrf": member.csrf, "phases": phases,
            "max_bytes": services.settings.max_upload_bytes, "accept": ACCEPT,
            "picks_max": services.settings.final_picks}


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, services: ServicesDep) -> Response:
    member = await run_in_threadpool(site_sessions.current_member, request)
    if member is None:
        return RedirectResponse(SIGN_IN_PATH, status_code=303)
    context = await run_in_threadpool(_dashboard, services, member)
    response = templates.TemplateResponse(request, "site_team.html", context)
    response.headers["cache-control"] = "no-store"
    return response


@router.get("/tiles/{track}", response_class=HTMLResponse)
def tiles_page(request: Request, track: str, services: ServicesDep) -> Response:
    """A tile track's test tiles (public, as GET /api/v1/tracks/{track}/tiles): one per line."""
    try:
        tiles = routes_teams.track_tiles(track[:16], services)
    except HTTPException as e:
        return _plain(e.status_code, _refusal_text(e))
    return templates.TemplateResponse(request, "site_tiles.html", {"tiles": tiles})


# --- the forms ----------------------------------------------------------------------------------

async def _receive(request: Request, member: Member, services, header_csrf: str | None, declared: str | None):
    """The upload's body (uploads.receive_upload) with the form's CSRF token and track checked."""
    settings = services.settings
    upload = await receive_upload(request, spool_dir=settings.spool_dir, limit=settings.max_upload_bytes,
                                  timeout_s=settings.upload_timeout_s, fields=FORM_FIELDS)
    try:
        site_sessions.check_csrf(member, header_csrf or upload.fields.pop(CSRF_FIELD, None))
        upload.fields = {k: _form_lines(v) for k, v in upload.fields.items()}
        chosen = (upload.fields.pop("track", None) or "").strip()
        if chosen:
            upload.track = served_track(chosen[:16], services)
            if declared is not None and upload.track != declared:
                raise HTTPException(422, f"the form chose track {upload.track} but the address names track {declared}")
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    return upload


@router.post("/upload")
async def upload(request: Request, member: MemberDep, services: ServicesDep) -> Response:
    """The site's upload: the session (before the body, see bodies.py), the size from the head,
    then submit_service's steps, as the API's upload route takes them."""
    settings = services.settings
    team = member.team
    header_csrf = request.headers.get(CSRF_HEADER)
    try:
        if header_csrf is not None:  # (a script sends it in the head: checked before the body)
            site_sessions.check_csrf(member, header_csrf)
        routes_submissions._not_disqualified(team)
        nbytes = check_content_length(request, settings.max_upload_bytes)
        query_track = request.query_params.get("track")
        declared = served_track(query_track[:16], services) if query_track else None
        receive = functools.partial(_receive, request, member, services, header_csrf, declared)
        try:
            sub = await submit_service.submit(services, team, declared, nbytes, receive)
        except submit_service.Refusal as e:
            raise HTTPException(e.status, e.detail, headers=e.headers) from None
    except site_sessions.Forged as e:
        return _forged(request, e)
    except HTTPException as e:
        if e.status_code in (413, 400, 408) or (e.headers or {}).get("connection") == "close":
            # the body was not read (or not all of it): answered, and the connection closed
            response = await _answer(request, member, e.status_code, _refusal_text(e))
            response.headers["connection"] = "close"
            return response
        return await _answer(request, member, e.status_code, _refusal_text(e))
    out = await in_db(services, lambda s: routes_submissions.get_submission(sub.id, team, s))
    return await _answer(request, member, 201,
                         f"Submission {out.id} on track {out.track} scored: {_scores_text(out)}.", out)


@router.post("/submissions/{submission_id}/metadata")
async def edit_metadata(request: Request, submission_id: int, member: MemberDep, services: ServicesDep,
                        method: Annotated[str, Form()] = "", description: Annotated[str, Form()] = "",
                        url: Annotated[str, Form()] = "", csrf: Annotated[str, Form(max_length=512)] = "") -> Response:
    if not site_sessions.csrf_matches(member.csrf, csrf):
        return _forged(request, site_sessions.Forged())
    if not 1 <= submission_id <= 2**31 - 1:
        return await _answer(request, member, 404, f"submission {submission_id} not found among yours")
    try:
        body = MetadataIn(method=method, description=_form_lines(description), url=url)
        out = await in_db(services, lambda s: routes_submissions.edit_submission(
            submission_id, body, member.team, s, services))
    except ValidationError as e:
        return await _answer(request, member, 422, _validation_text(e))
    except HTTPException as e:
        return await _answer(request, member, e.status_code, _refusal_text(e))
    return await _answer(request, member, 200, f"Submission {out.id}: method, description and URL saved.", out)


@router.post("/picks/{track}")
async def final_picks(request: Request, track: str, member: MemberDep, services: ServicesDep,
                      ids: Annotated[list[int], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
                      csrf: Annotated[str, Form(max_length=512)] = "") -> Response:
    if not site_sessions.csrf_matches(member.csrf, csrf):
        return _forged(request, site_sessions.Forged())
    try:
        body = FinalPicksIn(ids=ids)
        out = await in_db(services, lambda s: routes_submissions.set_final_picks(
            track[:16], body, member.team, s, services))
    except ValidationError as e:
        return await _answer(request, member, 422, _validation_text(e))
    except HTTPException as e:
        return await _answer(request, member, e.status_code, _refusal_text(e))
    chosen = ", ".join(str(i) for i in out.ids) or "none (your best public submission counts)"
    return await _answer(request, member, 200, f"Final picks on track {out.track}: {chosen} (at most {out.max}).")
