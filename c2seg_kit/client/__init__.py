"""HTTP client for a C2Seg scoring server: submit predictions, read the leaderboard, and the
team's own account (quota, phase, submissions, final picks, metadata).

Light on purpose (httpx only; no fastapi): this is what participants install. Every failure
a participant can meet (bad token, file too large, quota used up, server unreachable, a proxy
or a server that answers something else) becomes a :class:`ServerError` with a one-line
explanation. Each call has an overall deadline and a cap on the answer's size, follows no
redirect (the token goes to the configured server only), and checks the answer's shape before
anything reads it (client_http.py, client_shapes.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import httpx

from c2seg_kit.client import shapes
from c2seg_kit.client.transport import EXPLAIN, ServerError, exchange
from c2seg_kit.client.transport import explain as _explain
from c2seg_kit.errors import C2SegError
from c2seg_kit.registry import get_track
from c2seg_kit.text import check_metadata

__all__ = ["EXPLAIN", "ServerError", "attach_model", "combined_leaderboard", "edit_submission", "explain", "health", "leaderboard",
           "me", "my_submissions", "server_token", "server_url", "set_final_picks", "submit"]


def normalise_newlines(value: str | None) -> str | None:
    """CRLF and CR line ends as LF: the server accepts line feeds only (Windows shells send CRLF)."""
    return None if value is None else value.replace("\r\n", "\n").replace("\r", "\n")


DEFAULT_SERVER = "http://127.0.0.1:8000"
API = "/api/v1"
#: The longest token the server accepts (security.bearer_token).
TOKEN_MAX = 256
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space


def server_url(server: str | None = None) -> str:
    url = (server or os.environ.get("C2SEG_SERVER") or DEFAULT_SERVER).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise C2SegError(f"server URL must start with http:// or https://, got {url!r}")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        parsed = None
    if parsed is None or not parsed.host or not url.isascii() or not url.isprintable() or " " in url:
        raise C2SegError(f"not a server URL: {url!r} (e.g. https://board.example.org)")
    if parsed.userinfo:
        raise C2SegError("the server URL must not hold a user name or password: give the team token with --token")
    return url


def server_token(token: str | None = None) -> str:
    """The team's token, checked before any request: one line of printable ASCII (never printed)."""
    token = (token or os.environ.get("C2SEG_TOKEN") or "").strip()
    if not token:
        raise C2SegError("no token: pass --token or set C2SEG_TOKEN (organizers give one per team)")
    if not _TOKEN.match(token):
        what = ("a line break" if "\n" in token or "\r" in token else
                "a non-ASCII character" if not token.isascii() else "a space or control character")
        raise C2SegError(f"the token contains {what}: copy it again, exactly as the organizers sent it "
                         "(the token itself is not shown here)")
    if len(token) > TOKEN_MAX:
        raise C2SegError(f"the token is {len(token)} characters long; tokens have at most {TOKEN_MAX}: "
                         "copy it again, exactly as the organizers sent it (the token itself is not shown here)")
    return token


def explain(resp: httpx.Response) -> ServerError:
    """A ServerError for an error answer (for callers holding a whole httpx.Response)."""
    return _explain(resp.status_code, resp.content, resp.reason_phrase, resp.headers.get("retry-after"))


def _get(path: str, shape, *, server: str | None, token: str | None = None, authed: bool = False, **kwargs):
    base = server_url(server)
    headers = {"Authorization": f"Bearer {server_token(token)}"} if authed else None
    return shapes.checked(exchange(kwargs.pop("method", "GET"), f"{base}{path}", base=base, headers=headers,
                                   **kwargs), shape, base)


def health(server: str | None = None) -> dict:
    return _get("/healthz", shapes.HEALTH, server=server)


def track_tiles(track: str, *, server: str | None = None) -> dict[str, tuple[int, int]]:
    """A tile track's test tiles, id -> (H, W) (`GET /api/v1/tracks/{track}/tiles`): plain tile
    ids, two positive sides each, at most as many as the track has test tiles."""
    limit = get_track(track).test_tiles
    tiles = _get(f"{API}/tracks/{track.upper()}/tiles", shapes.TILES, server=server)["tiles"]
    if not tiles or len(tiles) > limit:
        raise ServerError(f"the server at {server_url(server)} lists {len(tiles)} test tiles for track "
                          f"{track.upper()}, which has 1 to {limit}: is the URL that of a C2Seg server of this version?")
    return {t: (h, w) for t, (h, w) in tiles.items()}


def leaderboard(track: str, *, server: str | None = None, sort: str | None = None) -> dict:
    """The track's leaderboard as the server's JSON (`GET /api/v1/leaderboard?track=...`)."""
    params = {"track": track.upper(), **({"sort": sort} if sort else {})}
    return _get(f"{API}/leaderboard", shapes.BOARD, server=server, params=params)


def combined_leaderboard(*, server: str | None = None) -> dict:
    """Both tracks at once (`GET /api/v1/leaderboard/combined`)."""
    return _get(f"{API}/leaderboard/combined", shapes.COMBINED, server=server)


def me(*, server: str | None = None, token: str | None = None) -> dict:
    """The team, its quota (used, left, reset time), each track's phase and its end, final picks."""
    return _get(f"{API}/me", shapes.ME, server=server, token=token, authed=True)


def my_submissions(*, server: str | None = None, token: str | None = None, track: str | None = None) -> list[dict]:
    """The team's own submissions, oldest first."""
    params = {"track": track.upper()} if track else None
    return _get(f"{API}/submissions", shapes.SUBMISSIONS, server=server, token=token, authed=True, params=params)


def edit_submission(submission_id: int, fields: dict, *, server: str | None = None, token: str | None = None) -> dict:
    """Change a submission's method, description or url (a None value clears that field)."""
    return _get(f"{API}/submissions/{int(submission_id)}", shapes.SUBMISSION, server=server, token=token,
                authed=True, method="PATCH", json_body=fields)


def set_final_picks(track: str, ids: list[int], *, server: str | None = None, token: str | None = None) -> dict:
    """Make `ids` the team's final picks on `track` (replacing the previous ones; [] clears)."""
    return _get(f"{API}/final-picks/{track.upper()}", shapes.PICKS, server=server, token=token, authed=True,
                method="PUT", json_body={"ids": [int(i) for i in ids]})


class CountingReader:
    """The file being uploaded, as httpx's multipart streaming reads it (block by block, never
    whole): each block read is reported to ``progress`` (bytes). ``fileno``/``seek``/``tell`` are
    the file's own, so httpx learns the size up front and sends a Content-Length."""

    def __init__(self, fh: BinaryIO, progress: Callable[[int], None] | None):
        self._fh, self._progress = fh, progress

    def read(self, size: int = -1) -> bytes:
        block = self._fh.read(size)
        if block and self._progress is not None:
            self._progress(len(block))
        return block

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


def upload_filename(path: Path) -> str:
    """The file name sent with an upload: quotes and line breaks replaced (the server reads it as text)."""
    return path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")


def upload_deadline(size: int) -> float:
    """Overall deadline of an upload: 10 minutes for scoring and slack, plus the time to send the
    file at 100 kB/s (the server's own limit on receiving it is 120 s by default)."""
    return 600.0 + size / 100_000


def submit(path: str | os.PathLike, *, server: str | None = None, token: str | None = None,
           progress: Callable[[int], None] | None = None, method: str | None = None,
           description: str | None = None, url: str | None = None, track: str | None = None) -> dict:
    """Upload a predictions file with optional metadata; returns the server's 201 body (id,
    track, created, scores...). The metadata is checked here first, by the server's own rules.

    The size is sent up front (Content-Length), so an oversized file is refused at once; the
    file's `track`, when given, is declared in the query, so a closed track or a used-up quota
    is refused before the file is sent. An identical re-upload is answered 409, free of charge.
    """
    try:
        fields = check_metadata(method, normalise_newlines(description), url)
    except ValueError as e:
        raise C2SegError(str(e)) from None
    token = server_token(token)
    base = server_url(server)
    path = Path(path)
    data = {key: value for key, value in fields.items() if value is not None}
    with open(path, "rb") as fh:
        # httpx streams the multipart body from the file (Content-Length computed up front).
        upload = {"file": (upload_filename(path), CountingReader(fh, progress), "application/x-hdf5")}
        result = exchange("POST", f"{base}{API}/submissions", base=base, headers={"Authorization": f"Bearer {token}"},
                          files=upload, data=data, params={"track": track.upper()} if track else None,
                          expect=(201,), deadline_s=upload_deadline(os.fstat(fh.fileno()).st_size),
                          # The server may answer early (e.g. 413 or 401) and close before the body is sent.
                          on_write_error="the server closed the connection during the upload; "
                                         "the file may be too large or the token refused")
    return shapes.checked(result, shapes.SUBMISSION, base)


def attach_model(submission_id: int, path: str | os.PathLike, *, server: str | None = None, token: str | None = None,
                 progress: Callable[[int], None] | None = None) -> dict:
    """Attach the model file at `path` (a kit checkpoint or an ONNX file, checked here first:
    c2seg_kit.model_files.inspect_model) to the team's submission `submission_id`; returns the
    submission as the server shows it, with its `model`. The server stores the file for the
    organizers to re-run (`c2seg admin verify`); it never runs it."""
    from c2seg_kit import model_files

    token = server_token(token)
    base = server_url(server)
    path = Path(path)
    found = model_files.inspect_model(path)
    with open(path, "rb") as fh:
        upload = {"file": (upload_filename(path), CountingReader(fh, progress), "application/octet-stream")}
        result = exchange("PUT", f"{base}{API}/submissions/{int(submission_id)}/model", base=base,
                          headers={"Authorization": f"Bearer {token}"}, files=upload, expect=(200,),
                          deadline_s=upload_deadline(found.size),
                          on_write_error="the server closed the connection during the upload; "
                                         "the model may be too large or the token refused")
    return shapes.checked(result, shapes.SUBMISSION, base)
