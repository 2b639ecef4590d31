"""HTTP client for a C2Seg scoring server: submit predictions, read the leaderboard, and the
team's own account (quota, phase, submissions, final picks, metadata).

Light on purpose (httpx only; no fastapi): this is what participants install. Every failure
a participant can meet (bad token, file too large, quota used up, server unreachable) becomes
a :class:`ServerError` with a one-line explanation.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from c2seg_kit.errors import C2SegError
from c2seg_kit.text import check_metadata


def normalise_newlines(value: str | None) -> str | None:
    """CRLF and CR line ends as LF: the server accepts line feeds only (Windows shells send CRLF)."""
    return None if value is None else value.replace("\r\n", "\n").replace("\r", "\n")

DEFAULT_SERVER = "http://127.0.0.1:8000"
API = "/api/v1"
# Scoring a large city takes a while after the last byte is sent: be patient on reads.
TIMEOUT = httpx.Timeout(30.0, read=600.0)
CHUNK = 256 * 1024

# status -> what it means for the participant; the server's own detail follows it.
EXPLAIN = {
    400: "the server could not read the upload",
    401: "the server refused the token (check --token or C2SEG_TOKEN)",
    403: "not allowed now",
    404: "not found",
    408: "the upload took too long",
    413: "the file is larger than the server accepts",
    422: "the server refused the file",
    429: "quota used up",
}


class ServerError(C2SegError):
    """The server said no, or could not be reached; the message says which and why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def server_url(server: str | None = None) -> str:
    url = (server or os.environ.get("C2SEG_SERVER") or DEFAULT_SERVER).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise C2SegError(f"server URL must start with http:// or https://, got {url!r}")
    return url


def server_token(token: str | None = None) -> str:
    token = (token or os.environ.get("C2SEG_TOKEN") or "").strip()
    if not token:
        raise C2SegError("no token: pass --token or set C2SEG_TOKEN (organizers give one per team)")
    return token


def _detail(resp: httpx.Response) -> str:
    try:
        detail = resp.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = resp.reason_phrase or ""
    return " ".join(detail.split())[:300]


def explain(resp: httpx.Response) -> ServerError:
    what = EXPLAIN.get(resp.status_code, "server error" if resp.status_code >= 500 else "request refused")
    return ServerError(f"{what} ({resp.status_code}): {_detail(resp)}", resp.status_code)


def _network_error(url: str, e: httpx.HTTPError) -> ServerError:
    if isinstance(e, httpx.TimeoutException):
        return ServerError(f"the server at {url} did not answer in time ({type(e).__name__})")
    if isinstance(e, httpx.ConnectError):
        return ServerError(f"cannot reach the server at {url}: is it running, and is the URL right?")
    return ServerError(f"network error talking to {url}: {type(e).__name__}: {e}")


def _request(method: str, url: str, **kwargs) -> httpx.Response:
    try:
        resp = httpx.request(method, url, timeout=kwargs.pop("timeout", TIMEOUT), **kwargs)
    except httpx.HTTPError as e:
        raise _network_error(url, e) from None
    if resp.status_code >= 400:
        raise explain(resp)
    return resp


def health(server: str | None = None) -> dict:
    return _request("GET", f"{server_url(server)}/healthz").json()


def track_tiles(track: str, *, server: str | None = None) -> dict[str, tuple[int, int]]:
    """A tile track's test tiles, id -> (H, W) (`GET /api/v1/tracks/{track}/tiles`)."""
    tiles = _request("GET", f"{server_url(server)}{API}/tracks/{track.upper()}/tiles").json()["tiles"]
    return {str(t): (int(h), int(w)) for t, (h, w) in tiles.items()}


def leaderboard(track: str, *, server: str | None = None, sort: str | None = None) -> dict:
    """The track's leaderboard as the server's JSON (`GET /api/v1/leaderboard?track=...`)."""
    params = {"track": track.upper(), **({"sort": sort} if sort else {})}
    return _request("GET", f"{server_url(server)}{API}/leaderboard", params=params).json()


def combined_leaderboard(*, server: str | None = None) -> dict:
    """Both tracks at once (`GET /api/v1/leaderboard/combined`)."""
    return _request("GET", f"{server_url(server)}{API}/leaderboard/combined").json()


def _authed(method: str, path: str, *, server: str | None, token: str | None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server_token(token)}"}
    return _request(method, f"{server_url(server)}{API}{path}", headers=headers, **kwargs)


def me(*, server: str | None = None, token: str | None = None) -> dict:
    """The team, its quota (used, left, reset time), each track's phase and its end, final picks."""
    return _authed("GET", "/me", server=server, token=token).json()


def my_submissions(*, server: str | None = None, token: str | None = None, track: str | None = None) -> list[dict]:
    """The team's own submissions, oldest first."""
    params = {"track": track.upper()} if track else None
    return _authed("GET", "/submissions", server=server, token=token, params=params).json()


def edit_submission(submission_id: int, fields: dict, *, server: str | None = None, token: str | None = None) -> dict:
    """Change a submission's method, description or url (a None value clears that field)."""
    return _authed("PATCH", f"/submissions/{int(submission_id)}", server=server, token=token, json=fields).json()


def set_final_picks(track: str, ids: list[int], *, server: str | None = None, token: str | None = None) -> dict:
    """Make `ids` the team's final picks on `track` (replacing the previous ones; [] clears)."""
    return _authed("PUT", f"/final-picks/{track.upper()}", server=server, token=token,
                   json={"ids": [int(i) for i in ids]}).json()


def _multipart(path: Path, boundary: str, progress: Callable[[int], None] | None,
               fields: dict[str, str] | None = None) -> tuple[int, Iterator[bytes]]:
    """(Content-Length, body chunks): the small text `fields`, then one `file` field streamed from disk."""
    name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"{key}\"\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode() + value.encode("utf-8") + b"\r\n"
        for key, value in (fields or {}).items() if value is not None)
    head += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
             f"Content-Type: application/x-hdf5\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    size = path.stat().st_size

    def chunks() -> Iterator[bytes]:
        yield head
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                if progress:
                    progress(len(block))
                yield block
        yield tail

    return len(head) + size + len(tail), chunks()


def submit(path: str | os.PathLike, *, server: str | None = None, token: str | None = None,
           progress: Callable[[int], None] | None = None, method: str | None = None,
           description: str | None = None, url: str | None = None) -> dict:
    """Upload a predictions file with optional metadata; returns the server's 201 body (id,
    track, created, scores...). The metadata is checked here first, by the server's own rules.

    The size is sent up front (Content-Length), so an oversized file is refused at once.
    """
    try:
        fields = check_metadata(method, normalise_newlines(description), url)
    except ValueError as e:
        raise C2SegError(str(e)) from None
    token = server_token(token)
    path = Path(path)
    boundary = "c2seg-" + secrets.token_hex(16)
    length, body = _multipart(path, boundary, progress, fields)
    base = server_url(server)
    headers = {"Authorization": f"Bearer {token}", "Content-Length": str(length),
               "Content-Type": f"multipart/form-data; boundary={boundary}"}
    try:
        resp = httpx.post(f"{base}{API}/submissions", content=body, headers=headers, timeout=TIMEOUT)
    except httpx.WriteError as e:
        # The server may answer early (e.g. 413 or 401) and close before the body is sent.
        raise ServerError(f"the server closed the connection during the upload ({type(e).__name__}); "
                          "the file may be too large or the token refused") from None
    except httpx.HTTPError as e:
        raise _network_error(base, e) from None
    if resp.status_code != 201:
        raise explain(resp)
    return resp.json()
