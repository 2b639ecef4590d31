"""Streaming a multipart upload to a spool file, under a size cap and a time limit.

The submissions route takes the raw Request (no `UploadFile` parameter), so FastAPI reads no
body before the token has been checked; then the size is checked from Content-Length, and
the body is streamed through python-multipart's parser straight into a file, counting bytes
as they arrive. Nothing is buffered whole in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from fastapi import HTTPException, Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from c2seg_kit import text

log = logging.getLogger("c2seg_server")

FIELD = "file"
#: Small text fields that may come with the file (the submission's metadata), and the most
#: bytes each may hold (4 per character of its c2seg_kit.text cap, plus room for whitespace).
TEXT_FIELDS = {"method": 4 * text.METHOD_MAX + 64, "description": 4 * text.DESCRIPTION_MAX + 64,
               "url": 4 * text.URL_MAX + 64}
#: Room for the multipart framing and small extra fields on top of the file cap.
FRAMING_BYTES = 64 * 1024


@dataclass
class Upload:
    path: Path
    filename: str
    size: int
    sha256: str
    fields: dict[str, str] = field(default_factory=dict)  # TEXT_FIELDS that came, decoded (not yet checked)
    #: The track a form declared in the body (the site's upload form), checked like a declared one.
    track: str | None = None


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the upload is larger than this server accepts ({limit / 2**20:g} MiB)")


def check_content_length(request: Request, limit: int) -> int | None:
    """The declared body size; 413 from the Content-Length header alone, before a byte of the
    body is read. None when there is none (chunked: the cap is enforced while streaming)."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 20:
        raise HTTPException(400, "invalid Content-Length header")
    if int(raw) > limit + FRAMING_BYTES:
        raise too_large(limit)
    return int(raw)


def clean_filename(raw: bytes) -> str:
    """The uploaded file's name as the team gave it, for its own reference: the last path part,
    without control characters (C0 with NUL, C1, bidi controls: PostgreSQL refuses NUL, and
    organizers read these names in terminals and spreadsheets), at most 255 characters."""
    name = raw.decode("utf-8", "replace").replace("\\", "/")
    name = text.strip_controls(os.path.basename(name))
    return name[:255] or "predictions.h5"


def spool_unwritable(e: OSError) -> HTTPException:
    """503 with Retry-After: the server cannot write the upload now (the cause goes to its log
    only: it names the server's paths)."""
    log.error("cannot write to the upload spool: %s", e)
    return HTTPException(503, "the server cannot store uploads right now (its disk is full or not writable); "
                              "try again later", headers={"Retry-After": "60"})


class _FilePart:
    """python-multipart callbacks that write the `file` field to disk, keep the small TEXT_FIELDS
    (each under its byte cap) and skip everything else."""

    def __init__(self, out, limit: int, fields: dict[str, int] = TEXT_FIELDS):
        self.out, self.limit, self.fields = out, limit, fields
        self.size = 0
        self.digest = hashlib.sha256()
        self.filename: str | None = None
        self.found = self.ended = False
        self._in_file = False
        self._text: str | None = None  # the TEXT_FIELDS name whose value is arriving
        self.texts: dict[str, bytearray] = {}
        self._field = self._value = b""
        self._disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, a, b: self._grow("_field", d[a:b]),
            "on_header_value": lambda d, a, b: self._grow("_value", d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _grow(self, attr: str, chunk: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + chunk)

    def _part_begin(self) -> None:
        self._disposition = b""
        self._in_file = False
        self._text = None

    def _header_end(self) -> None:
        if self._field.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._disposition)
        name = params.get(b"name", b"").decode("latin-1")
        if name in self.fields and b"filename" not in params:
            if name in self.texts:
                raise HTTPException(400, f"the multipart body has the field '{name}' twice")
            self._text = name
            self.texts[name] = bytearray()
        if params.get(b"name") == FIELD.encode() and not self.found:
            self.found = self._in_file = True
            self.filename = clean_filename(params.get(b"filename", b"predictions.h5"))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            buf = self.texts[self._text]
            buf += data[start:end]
            if len(buf) > self.fields[self._text]:
                raise HTTPException(422, f"{self._text}: longer than this server accepts")
            return
        if not self._in_file:
            return
        self.size += end - start
        if self.size > self.limit:
            raise too_large(self.limit)
        chunk = data[start:end]
        self.out.write(chunk)
        self.digest.update(chunk)

    def _part_end(self) -> None:
        self._in_file = False
        self._text = None

    def decoded_texts(self) -> dict[str, str]:
        try:
            return {k: v.decode("utf-8") for k, v in self.texts.items()}
        except UnicodeDecodeError:
            raise HTTPException(422, "a metadata field is not UTF-8 text") from None

    def _end(self) -> None:
        self.ended = True


def _parser(boundary: bytes, callbacks: dict) -> MultipartParser:
    try:  # per-part header limits, where this python-multipart has them
        return MultipartParser(boundary, callbacks, max_header_count=8, max_header_size=4096)
    except TypeError:
        return MultipartParser(boundary, callbacks)


async def receive_upload(request: Request, *, spool_dir: Path, limit: int, timeout_s: float,
                         fields: dict[str, int] = TEXT_FIELDS) -> Upload:
    """Stream the request's multipart body; the `file` field lands in a spool file (caller deletes it).
    ``fields``: the small text fields kept (name -> most bytes), the rest are skipped."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise HTTPException(400, f"send the predictions as multipart/form-data with a field named '{FIELD}'")
    try:
        spool_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="upload-", suffix=".h5", dir=spool_dir)
    except OSError as e:
        raise spool_unwritable(e) from None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            part = _FilePart(out, limit, fields)
            try:
                parser = _parser(boundary, part.callbacks())
            except (ValueError, MultipartParseError):
                raise HTTPException(400, "invalid multipart boundary") from None
            received = 0
            try:
                with anyio.fail_after(timeout_s):
                    async for chunk in request.stream():
                        received += len(chunk)
                        if received > limit + FRAMING_BYTES:
                            raise too_large(limit)
                        parser.write(chunk)
            except TimeoutError:
                raise HTTPException(408, f"the upload did not finish within {timeout_s:g} s") from None
            except MultipartParseError:
                raise HTTPException(400, "the multipart body is malformed") from None
            except ClientDisconnect:
                raise HTTPException(400, "the client went away before the upload finished") from None
            except OSError as e:  # the spool's disk is full (or gone): retryable, never a 500
                raise spool_unwritable(e) from None
        if not part.found:
            raise HTTPException(400, f"the multipart body has no field named '{FIELD}'")
        if not part.ended:
            raise HTTPException(400, "the multipart body ended early (truncated upload)")
        return Upload(path=path, filename=part.filename or "predictions.h5", size=part.size,
                      sha256=part.digest.hexdigest(), fields=part.decoded_texts())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
