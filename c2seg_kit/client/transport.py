"""One bounded HTTP exchange with a scoring server, for c2seg_kit.client.

A participant's CLI must not be at the mercy of whatever answers at the configured URL (a proxy,
a captive portal, a broken or hostile server). Every call here:

- has an overall deadline, start to finish: a watchdog shuts the call's sockets down when it
  passes, so a server that drips one byte at a time (which no per-read timeout ever catches)
  costs at most the deadline;
- reads at most `max_body` bytes of the answer (after decompression), streaming: a 400 MB answer
  is refused after the first few MB, never read into memory;
- follows no redirect: the token goes to the configured host only. A redirect from http to
  https on the same host (a proxy that upgrades) is explained in one line with the URL to use;
- turns every failure (unreachable, timed out, malformed HTTP, an error status with an HTML
  page, a body that is not JSON, JSON of the wrong shape) into one ServerError line.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator

import httpx

from c2seg_kit.errors import C2SegError

#: Most bytes of an answer read (a leaderboard of a thousand teams is well under 2 MiB).
MAX_BODY = 16 * 1024 * 1024
#: Overall deadline of an ordinary call (an upload gets more: see client.upload_deadline).
DEADLINE_S = 60.0

# status -> what it means for the participant; the server's own detail follows it.
EXPLAIN = {
    400: "the server could not read the upload",
    401: "the server refused the token (check --token or C2SEG_TOKEN)",
    403: "not allowed now",
    404: "not found",
    408: "the upload took too long",
    409: "already submitted",
    413: "the file is larger than the server accepts",
    422: "the server refused the file",
    429: "limit reached",
    503: "the server is busy or unavailable",
}


class ServerError(C2SegError):
    """The server said no, could not be reached, or answered something unusable; the message
    (one line) says which and why."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Watchdog:
    """Shuts the sockets of one call down when its deadline passes (a blocked read returns at
    once). The sockets are learnt from httpcore's `trace` extension, a public hook."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict) -> None:
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is None:
            return
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def detail_of(body: bytes, reason: str) -> str:
    """The server's one-line reason: `detail` of a JSON error body, else the HTTP reason phrase."""
    detail = None
    try:
        parsed = json.loads(body)
        detail = parsed.get("detail") if isinstance(parsed, dict) else None
    except ValueError:
        pass
    if not isinstance(detail, str):
        detail = reason or ""
    return " ".join(detail.split())[:300]


def explain(status: int, body: bytes, reason: str = "", retry_after: str | None = None) -> ServerError:
    what = EXPLAIN.get(status, "server error" if status >= 500 else "request refused")
    more = f" (retry after {retry_after} s)" if retry_after and retry_after.isascii() and retry_after.isdigit() and "retry" not in what else ""
    return ServerError(f"{what} ({status}): {detail_of(body, reason)}{more}", status)


def _redirect(url: str, resp: httpx.Response) -> ServerError:
    target = resp.headers.get("location", "")
    try:
        to = resp.request.url.join(target)
    except (httpx.InvalidURL, ValueError):
        to = None
    here = resp.request.url
    if to is not None and to.host == here.host and here.scheme == "http" and to.scheme == "https":
        base = f"https://{to.netloc.decode('ascii', 'replace')}"
        return ServerError(f"the server at {url} redirects to https: use --server {base} (or C2SEG_SERVER={base})",
                           resp.status_code)
    where = f"{to.scheme}://{to.netloc.decode('ascii', 'replace')}" if to is not None else "an invalid address"
    return ServerError(f"the server at {url} answered with a redirect ({resp.status_code}) to {where}; not followed "
                       "(your token goes to the configured server only): check --server", resp.status_code)


def _network_error(url: str, e: Exception, deadline_s: float, expired: bool) -> ServerError:
    if expired or isinstance(e, httpx.TimeoutException):
        return ServerError(f"the server at {url} did not complete its answer within {deadline_s:g} s")
    if isinstance(e, httpx.ConnectError):
        return ServerError(f"cannot reach the server at {url}: is it running, and is the URL right?")
    if isinstance(e, (httpx.RemoteProtocolError, httpx.DecodingError)):
        return ServerError(f"the server at {url} sent a malformed HTTP answer ({type(e).__name__}): "
                           "is the URL that of a C2Seg server?")
    return ServerError(f"network error talking to {url}: {type(e).__name__}")


def _read_capped(resp: httpx.Response, url: str, max_body: int) -> bytes:
    declared = resp.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_body:
        raise ServerError(f"the server at {url} sent an answer of {int(declared) / 2**20:.0f} MiB; "
                          f"refusing to read more than {max_body // 2**20} MiB", resp.status_code)
    parts, size = [], 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > max_body:
            raise ServerError(f"the server at {url} sent an answer larger than {max_body // 2**20} MiB; "
                              "stopped reading it", resp.status_code)
        parts.append(chunk)
    return b"".join(parts)


def exchange(method: str, url: str, *, base: str, deadline_s: float | None = None, max_body: int | None = None,
             expect: tuple[int, ...] = (200,), headers: dict | None = None, params: dict | None = None,
             json_body=None, content: Iterable[bytes] | Iterator[bytes] | None = None,
             files: dict | None = None, data: dict | None = None, on_write_error: str | None = None):
    """One request to `url` (on the server `base`, named in messages); the decoded JSON of an
    answer whose status is in `expect`, else ServerError."""
    deadline_s = deadline_s or DEADLINE_S
    max_body = max_body or MAX_BODY
    started = time.monotonic()
    timeout = httpx.Timeout(connect=min(10.0, deadline_s), read=deadline_s, write=deadline_s, pool=deadline_s)
    with _Watchdog(deadline_s) as watchdog:
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client, client.stream(
                    method, url, headers=headers, params=params, json=json_body, content=content,
                    files=files, data=data,
                    extensions={"trace": watchdog.trace}) as resp:
                if 300 <= resp.status_code < 400:
                    raise _redirect(base, resp)
                body = _read_capped(resp, base, max_body)
                status, reason = resp.status_code, resp.reason_phrase
                retry_after = resp.headers.get("retry-after")
                ctype = resp.headers.get("content-type", "")
        except ServerError:
            raise
        except httpx.WriteError as e:
            if on_write_error and not watchdog.expired:
                raise ServerError(on_write_error) from None
            raise _network_error(base, e, deadline_s, watchdog.expired) from None
        except (httpx.HTTPError, OSError) as e:
            raise _network_error(base, e, deadline_s, watchdog.expired or
                                 time.monotonic() - started >= deadline_s) from None
    if status not in expect:
        raise explain(status, body, reason, retry_after)
    try:
        return json.loads(body)
    except ValueError:
        kind = ctype.split(";")[0].strip() or "no content type"
        raise ServerError(f"the server at {base} did not answer with JSON ({kind}, {len(body)} bytes): "
                          "is the URL that of a C2Seg server?", status) from None
