"""Participant-supplied text (method names, descriptions, URLs, member names): one set of rules.

Whatever a participant types ends up on a public page, in CSV exports and in organizers'
terminals, so it is checked at the door, by the client before sending and by the server on
arrival, with the same rules from here:

- no control characters: C0 (a description may keep line feeds), DEL, C1, the Unicode bidi
  controls that reorder what a reader sees (U+202A..U+202E, U+2066..U+2069, U+200E/F, U+061C),
  line/paragraph separators, invisible zero-width marks, and noncharacters;
- a length cap per field, counted in characters after trimming surrounding whitespace;
- a URL is http(s), with a plain host name or address, and nothing a page could misread.

`check_text` refuses (ValueError naming the field); `strip_controls` removes, for fallbacks
that must not fail (e.g. a `method` attribute read from an uploaded file). The patterns are
exported for the OpenAPI document, so generated clients and fuzzers know the rule too.
"""

from __future__ import annotations

import re

# Code points refused everywhere, as a regex character-class body (valid in Python, Rust and
# ECMA-262 regular expressions alike, so the same text serves the OpenAPI `pattern`).
_FORBIDDEN_BODY = (
    r"\x00-\x09\x0b-\x1f"  # C0 except line feed (handled per field)
    r"\x7f-\x9f"  # DEL and C1
    r"\u061c\u200b\u200e\u200f"  # Arabic letter mark, zero-width space, LRM, RLM
    r"\u2028-\u202e"  # line/paragraph separators, bidi embeddings and overrides
    r"\u2060\u2066-\u2069"  # word joiner, bidi isolates
    r"\ufeff\ufffe\uffff"  # byte-order mark (zero-width no-break space), noncharacters
)
#: One line of text: no control characters at all.
LINE_PATTERN = rf"^[^\n{_FORBIDDEN_BODY}]*$"
#: Several lines: line feeds allowed, nothing else.
LINES_PATTERN = rf"^[^{_FORBIDDEN_BODY}]*$"
#: An http(s) URL: scheme, host[:port], then an optional path/query/fragment without spaces,
#: quotes, angle brackets or control characters.
URL_PATTERN = (r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"
               rf"([/?#][^\s\"'<>\\`{_FORBIDDEN_BODY}]*)?$")

_FORBIDDEN = re.compile(rf"[{_FORBIDDEN_BODY}\ud800-\udfff]")
_FORBIDDEN_LINE = re.compile(rf"[\n{_FORBIDDEN_BODY}\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # not in the exported patterns: JSON Schema tools choke on them
# Python's `$` also matches before one final line feed, as the fuzzers that read these patterns
# do; the checks below use the same reading and then trim, so both sides agree on every value.
_LINE = re.compile(LINE_PATTERN)
_LINES = re.compile(LINES_PATTERN)
_URL = re.compile(URL_PATTERN)

#: Length caps (characters) of the participant-facing fields.
METHOD_MAX = 100
DESCRIPTION_MAX = 1000
URL_MAX = 300
NAME_MAX = 100
AFFILIATION_MAX = 200
EMAIL_MAX = 254
REASON_MAX = 300

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def strip_controls(text: str, *, multiline: bool = False) -> str:
    """`text` without the forbidden code points (line feeds kept when `multiline`), trimmed."""
    return (_FORBIDDEN if multiline else _FORBIDDEN_LINE).sub("", text).strip()


def check_text(value: str | None, *, field: str, max_len: int, multiline: bool = False,
               required: bool = False) -> str | None:
    """The trimmed value, or None when empty (and not required); ValueError names what is wrong."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{field} must be text")
    if not (_LINES if multiline else _LINE).search(value) or _SURROGATE.search(value):
        bad = (_FORBIDDEN if multiline else _FORBIDDEN_LINE).search(value.strip())
        what = ("a line break" if bad and bad.group() == "\n" else
                f"a control character (U+{ord(bad.group()):04X})" if bad else "a control character")
        raise ValueError(f"{field} contains {what}; use {'plain text' if multiline else 'one line of plain text'}")
    value = value.strip()
    if len(value) > max_len:
        raise ValueError(f"{field} is {len(value)} characters long; at most {max_len} are allowed")
    if not value:
        if required:
            raise ValueError(f"{field} must not be empty")
        return None
    return value


def check_url(value: str | None, *, field: str = "url", max_len: int = URL_MAX) -> str | None:
    """An http(s) URL (see URL_PATTERN), or None when empty."""
    value = check_text(value, field=field, max_len=max_len)
    if value is not None and not _URL.search(value):
        raise ValueError(f"{field} must be an http:// or https:// address with a plain host name, "
                         "without spaces or quotes")
    return value


def check_email(value: str | None, *, field: str = "email") -> str:
    value = check_text(value, field=field, max_len=EMAIL_MAX, required=True)
    if not _EMAIL.match(value):
        raise ValueError(f"{field} {value!r} is not an e-mail address")
    return value


def check_metadata(method: str | None = None, description: str | None = None, url: str | None = None) -> dict:
    """A submission's metadata, checked: {"method", "description", "url"} (None where empty)."""
    return {"method": check_text(method, field="method", max_len=METHOD_MAX),
            "description": check_text(description, field="description", max_len=DESCRIPTION_MAX, multiline=True),
            "url": check_url(url)}


def csv_cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (participant text goes into exports)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
