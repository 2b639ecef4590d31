"""Participant-supplied text (method names, descriptions, URLs, member names): one set of rules.

Whatever a participant types ends up on a public page, in CSV exports and in organizers'
terminals, so it is checked at the door, by the client before sending and by the server on
arrival, with the same rules from here:

- no control characters: C0 (a description may keep line feeds), DEL, C1, the Unicode bidi
  controls that reorder what a reader sees (U+202A..U+202E, U+2066..U+2069, U+200E/F, U+061C),
  line/paragraph separators, and noncharacters;
- no invisible characters: every format character (category Cf: zero-width space and joiners,
  soft hyphen, tags, ...) and every default-ignorable code point of the Unicode standard (the
  Hangul fillers, variation selectors, the combining grapheme joiner, ...), so that no name can
  look exactly like another with something invisible added;
- at most MAX_COMBINING_RUN combining marks (categories Mn, Me) in a row: enough for every
  script's stacked vowels and accents, not for marks piled up over the lines around them;
- a length cap per field, counted in characters after trimming surrounding whitespace;
- a URL is http(s), with a plain host name or address, and nothing a page could misread.

`check_text` refuses (ValueError naming the field); `strip_controls` removes, for fallbacks
that must not fail (e.g. a `method` attribute read from an uploaded file). The patterns are
exported for the OpenAPI document, so generated clients and fuzzers know the rule too (all of it
but the run of combining marks, which a portable pattern cannot say).
"""

from __future__ import annotations

import re
import unicodedata

# Code points refused everywhere, as a regex character-class body (valid in Python, Rust and
# ECMA-262 regular expressions alike, so the same text serves the OpenAPI `pattern`).
_CONTROL_BODY = (
    r"\x00-\x09\x0b-\x1f"  # C0 except line feed (handled per field)
    r"\x7f-\x9f"  # DEL and C1
    r"\u061c\u200b\u200e\u200f"  # Arabic letter mark, zero-width space, LRM, RLM
    r"\u2028-\u202e"  # line/paragraph separators, bidi embeddings and overrides
    r"\u2060\u2066-\u2069"  # word joiner, bidi isolates
    r"\ufeff\ufffe\uffff"  # byte-order mark (zero-width no-break space), noncharacters
)
#: Invisible code points: the format characters (general category Cf) and the
#: Default_Ignorable_Code_Point property of the Unicode standard (DerivedCoreProperties.txt), as
#: inclusive ranges; tests/test_text.py checks that every Cf code point Python knows is here.
INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD), (0x070F, 0x070F),  # Arabic/Syriac format marks
    (0x0890, 0x0891), (0x08E2, 0x08E2),
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x200B, 0x200F),  # zero-width space, non-joiner, joiner, LRM, RLM
    (0x202A, 0x202E),  # bidi embeddings and overrides
    (0x2060, 0x206F),  # word joiner, invisible operators, bidi isolates, deprecated format marks
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (byte-order mark)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFFB),  # reserved default-ignorables, interlinear annotation marks
    (0x110BD, 0x110BD), (0x110CD, 0x110CD),  # Kaithi number signs
    (0x13430, 0x1343F),  # Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol beam and phrase controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors 17-256, reserved
)


def _class_range(lo: int, hi: int) -> str:
    # BMP code points as \uXXXX escapes (read alike by Python, Rust and ECMA-262); beyond it the
    # characters themselves (ECMA-262 with the u flag, as JSON Schema validators use it).
    one = (lambda c: f"\\u{c:04x}") if hi <= 0xFFFF else chr
    return one(lo) if lo == hi else f"{one(lo)}-{one(hi)}"


_INVISIBLE_BODY = "".join(_class_range(lo, hi) for lo, hi in INVISIBLE_RANGES)
_FORBIDDEN_BODY = _CONTROL_BODY + _INVISIBLE_BODY
#: The most combining marks (categories Mn, Me) allowed in a row. Real text stacks at most three
#: or four (Vietnamese two, Hebrew points with cantillation, Tibetan stacks); more only pile up
#: over the neighbouring lines.
MAX_COMBINING_RUN = 4
#: One line of text: no control characters at all.
LINE_PATTERN = rf"^[^\n{_FORBIDDEN_BODY}]*$"
#: Several lines: line feeds allowed, nothing else.
LINES_PATTERN = rf"^[^{_FORBIDDEN_BODY}]*$"
#: An http(s) URL: scheme, host[:port], then an optional path/query/fragment without spaces,
#: quotes, angle brackets or control characters.
URL_PATTERN = (r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?"
               rf"([/?#][^\s\"'<>\\`{_FORBIDDEN_BODY}]*)?$")

_FORBIDDEN = re.compile(rf"[{_FORBIDDEN_BODY}\ud800-\udfff]")
_CONTROL = re.compile(rf"[\n{_CONTROL_BODY}\ud800-\udfff]")
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
    """`text` without the forbidden code points (line feeds kept when `multiline`) and without the
    combining marks past MAX_COMBINING_RUN in a row, trimmed."""
    text = (_FORBIDDEN if multiline else _FORBIDDEN_LINE).sub("", text)
    if combining_run(text) is not None:
        kept, run = [], 0
        for c in text:
            run = run + 1 if unicodedata.category(c) in ("Mn", "Me") else 0
            if run <= MAX_COMBINING_RUN:
                kept.append(c)
        text = "".join(kept)
    return text.strip()


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
                "a control character" if not bad else
                f"a control character (U+{ord(bad.group()):04X})" if _CONTROL.match(bad.group()) else
                f"an invisible character (U+{ord(bad.group()):04X})")
        raise ValueError(f"{field} contains {what}; use {'plain text' if multiline else 'one line of plain text'}")
    run = combining_run(value)
    if run is not None:
        raise ValueError(f"{field} has more than {MAX_COMBINING_RUN} combining marks in a row (from U+{ord(run):04X}); "
                         "use plain text")
    value = value.strip()
    if len(value) > max_len:
        raise ValueError(f"{field} is {len(value)} characters long; at most {max_len} are allowed")
    if not value:
        if required:
            raise ValueError(f"{field} must not be empty")
        return None
    return value


def combining_run(value: str) -> str | None:
    """The first combining mark of a run longer than MAX_COMBINING_RUN in `value`, or None."""
    run = 0
    for i, c in enumerate(value):
        if not c.isascii() and unicodedata.category(c) in ("Mn", "Me"):  # (ASCII: no lookup)
            run += 1
            if run > MAX_COMBINING_RUN:
                return value[i - MAX_COMBINING_RUN]
        else:
            run = 0
    return None


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
    """A CSV cell that a spreadsheet will not run as a formula and that carries no control
    character (participant text goes into exports that organizers open and print): the forbidden
    code points are removed (rows stored before they were refused at the door included), and a
    cell that then starts like a formula (= + - @) gets a leading apostrophe."""
    text = strip_controls("" if value is None else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def for_terminal(value) -> str:
    """`value` as text that is safe to print on a terminal: every character Python does not call
    printable (control characters with ESC, C1, bidi controls, line and paragraph separators,
    zero-width and format marks, lone surrogates, unassigned code points) and every character
    this module refuses is written as a visible escape (\\x1b, \\u202e), so text from a server or
    a file can neither move the cursor, recolour or retitle the terminal, nor reorder what the
    reader sees. The CLI passes every piece of such text through here before printing it."""
    text = "" if value is None else str(value)
    if text.isprintable() and not _FORBIDDEN.search(text):
        return text
    return "".join(c if c.isprintable() and not _FORBIDDEN.match(c) else _escape(c) for c in text)
