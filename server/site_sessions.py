"""The participants' site's sign-in: server-side sessions behind an HttpOnly cookie, and CSRF.

- Sign-in: the team token, pasted into a form (POST, never in a URL), checked like the API's
  bearer token. A session is a random id in the cookie ``c2seg_session`` (HttpOnly,
  SameSite=Strict, Path=/, Max-Age, Secure when the request came over HTTPS, as the server
  sees it behind a proxy through X-Forwarded-Proto); the database keeps only its SHA-256, the
  team, the team's token hash at sign-in and the expiry (Settings.site_session_hours).
- Revocation: every request compares the session's token hash with the team's current one and
  checks the team is not revoked, so `c2seg admin rotate-token` and `revoke` end the team's
  sessions at once, with no list of sessions to clean up.
- CSRF: every state-changing form carries ``csrf``, an HMAC of the session id (so it is per
  session, never stored, and useless with any other session), compared in constant time. The
  sign-in form itself (login CSRF) carries the value of a pre-session cookie ``c2seg_signin``
  (double submit). Any POST whose Origin header names another origin is refused as well.
- Sign-out deletes the session row.

The dependencies read the cookie only (never the body), so bodies.py can check the session
before a byte of a form's body is read, as it does the API's token.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from sqlalchemy import delete, select

from . import crud
from .deps import Services, get_services
from .models import SiteSession, Team, utcnow

COOKIE = "c2seg_session"
SIGNIN_COOKIE = "c2seg_signin"
#: The hidden input every state-changing form carries (JS may send the header instead).
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SIGN_IN_PATH = "/team/sign-in"


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: derived from its id, which only the cookie holds."""
    return hmac.new(session_id.encode("utf-8", "surrogateescape"), b"c2seg-site-csrf", hashlib.sha256).hexdigest()


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and len(given) <= 256 and hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Member:
    """A signed-in browser: its team (as of this request), the session's row id and CSRF token."""

    team: Team
    session_row: int
    csrf: str


def open_session(s, team: Team, hours: float) -> str:
    """A new session for ``team``; returns its id (for the cookie only). Expired rows go too."""
    now = utcnow()
    s.execute(delete(SiteSession).where(SiteSession.expires <= now))
    session_id = secrets.token_urlsafe(32)
    s.add(SiteSession(id_hash=_hash(session_id), team_id=team.id, token_hash=team.token_hash,
                      created=now, expires=now + dt.timedelta(hours=hours)))
    s.commit()
    return session_id


def find_session(s, session_id: str | None) -> tuple[SiteSession, Team] | None:
    """The live session of this id and its team, or None: unknown, expired, or its team's token
    rotated or revoked since sign-in (the row is then deleted)."""
    if not session_id or len(session_id) > 256:
        return None
    row = s.scalar(select(SiteSession).where(SiteSession.id_hash == _hash(session_id)))
    if row is None:
        return None
    team = s.get(Team, row.team_id)
    if (row.expires <= utcnow() or team is None or team.revoked is not None
            or not hmac.compare_digest(team.token_hash, row.token_hash)):
        s.delete(row)
        s.commit()
        return None
    return row, team


def close_session(s, row_id: int) -> None:
    s.execute(delete(SiteSession).where(SiteSession.id == row_id))
    s.commit()


def set_flash(s, row_id: int, message: str) -> None:
    row = s.get(SiteSession, row_id)
    if row is not None:
        row.flash = message
        s.commit()


def pop_flash(s, row_id: int) -> str | None:
    row = s.get(SiteSession, row_id)
    if row is None or row.flash is None:
        return None
    message, row.flash = row.flash, None
    s.commit()
    return message


def team_for_token(s, token: str) -> Team | None:
    """The team of a pasted token, as the API's bearer check finds it (None: wrong or revoked)."""
    token = token.strip()
    if not token or len(token) > 256:
        return None
    return crud.team_by_token(s, token)


def is_https(request: Request) -> bool:
    """Whether the browser reached the server over HTTPS (behind a proxy, uvicorn sets the scheme
    from X-Forwarded-Proto when the proxy is trusted)."""
    return request.url.scheme == "https"


def same_origin(request: Request) -> bool:
    """False when the request's Origin header names another origin than the one it was sent to
    (no Origin header: true; SameSite=Strict and the CSRF token still apply)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    # The port is left out: a proxy forwards the host without it (nginx's $host), and cookies
    # and SameSite ignore ports anyway. "null" (a sandboxed or file: page) never matches.
    sent, own = urlsplit(origin), urlsplit("//" + request.headers.get("host", ""))
    return sent.scheme == request.url.scheme and sent.hostname is not None and sent.hostname == own.hostname


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def current_member(request: Request) -> Member | None:
    """The signed-in browser of this request (from the cookie alone), or None."""
    services: Services = get_services(request)
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    with services.sessions() as s:
        found = find_session(s, session_id)
    if found is None:
        return None
    row, team = found
    return Member(team=team, session_row=row.id, csrf=csrf_token(session_id))


def member_required(request: Request) -> Member:
    """Like current_member, for the site's POSTs: without a live session, 401 (JSON callers) or a
    303 to the sign-in page; a POST from another origin: 403. Reads headers only, so bodies.py
    runs it before the body."""
    if not same_origin(request):
        raise HTTPException(403, "refused: this form was sent from another site")
    member = current_member(request)
    if member is None:
        if wants_json(request):
            raise HTTPException(401, "not signed in (or the session ended): sign in again with your team token")
        raise HTTPException(303, "sign in first", headers={"Location": SIGN_IN_PATH})
    return member


FORGED = "refused: the form's security token is missing or wrong; reload the page and try again"


class Forged(HTTPException):
    """A state-changing post without this session's CSRF token."""

    def __init__(self):
        super().__init__(403, FORGED)


def check_csrf(member: Member, given: str | None) -> None:
    if not csrf_matches(member.csrf, given):
        raise Forged()
