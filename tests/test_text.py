"""c2seg_kit.text: the one set of rules for participant text (metadata, member names, reasons)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from c2seg_kit import text

# One representative of every forbidden kind, with its code point.
FORBIDDEN = {"NUL": "\x00", "ESC": "\x1b", "CR": "\r", "TAB": "\t", "DEL": "\x7f", "C1 NEL": "\x85",
             "C1 CSI": "\x9b", "RLO": "\u202e", "LRE": "\u202a", "RLI": "\u2067", "PDI": "\u2069", "LRM": "\u200e",
             "ALM": "\u061c", "ZWSP": "\u200b", "LS": "\u2028", "BOM": "\ufeff", "U+FFFF": "\uffff",
             "surrogate": "\ud800"}


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
@pytest.mark.parametrize("multiline", [False, True])
def test_every_forbidden_kind_is_refused_inside_a_value(name, multiline):
    char = FORBIDDEN[name]
    with pytest.raises(ValueError, match="control character") as info:
        text.check_text(f"High{char}DAN", field="method", max_len=100, multiline=multiline)
    assert "method" in str(info.value) and "\n" not in str(info.value)
    assert char not in text.strip_controls(f"a{char}b", multiline=multiline)


def test_line_feeds_only_where_several_lines_are_allowed():
    assert text.check_text(" two\nlines ", field="d", max_len=50, multiline=True) == "two\nlines"
    with pytest.raises(ValueError, match="line break"):
        text.check_text("two\nlines", field="m", max_len=50)
    assert text.strip_controls("a\nb", multiline=True) == "a\nb" and text.strip_controls("a\nb") == "ab"


def test_lengths_empties_and_trimming():
    assert text.check_text("  x  ", field="m", max_len=1) == "x"
    assert text.check_text("   ", field="m", max_len=1) is None and text.check_text(None, field="m", max_len=1) is None
    with pytest.raises(ValueError, match="at most 3"):
        text.check_text("abcd", field="m", max_len=3)
    with pytest.raises(ValueError, match="must not be empty"):
        text.check_text(" ", field="name", max_len=3, required=True)
    assert text.check_text("Équipe 東京 🚀", field="m", max_len=20) == "Équipe 東京 🚀"  # any script is fine


@pytest.mark.parametrize("url", ["https://example.org", "http://a.b:8080/x?y=1&z=%20#frag", "https://10.0.0.1/p"])
def test_urls_accepted(url):
    assert text.check_url(url) == url


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,x", "ftp://x.org", "//x.org", "https://",
                                 "https://x.org/a b", 'https://x.org/"onmouseover=', "https://x.org/<b>",
                                 "https://user@x.org/", "https://x.org/\u202e", "x" * 10])
def test_urls_refused(url):
    with pytest.raises(ValueError):
        text.check_url(url)


def test_url_length_cap():
    with pytest.raises(ValueError, match="at most"):
        text.check_url("https://x.org/" + "a" * text.URL_MAX)


def test_email_and_metadata_bundle():
    assert text.check_email(" a.b@uni.example ") == "a.b@uni.example"
    for bad in ("nobody", "a@b", "a b@c.d", ""):
        with pytest.raises(ValueError):
            text.check_email(bad)
    assert text.check_metadata() == {"method": None, "description": None, "url": None}


def test_csv_cells_cannot_start_a_formula():
    assert [text.csv_cell(v) for v in ("=1+1", "+x", "-y", "@z", "ok", None, 3)] == ["'=1+1", "'+x", "'-y", "'@z",
                                                                                      "ok", "", "3"]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40), st.booleans())
def test_check_agrees_with_the_exported_pattern_and_leaves_no_control_characters(value, multiline):
    """The OpenAPI document publishes LINE(S)_PATTERN; the server accepts exactly what they match
    (read as Python reads them), and what it keeps has no forbidden code point."""
    pattern = text.LINES_PATTERN if multiline else text.LINE_PATTERN
    matches = re.search(pattern, value) is not None
    try:
        out = text.check_text(value, field="f", max_len=1000, multiline=multiline)
        accepted = True
    except ValueError:
        accepted = False
    # the one rule a portable pattern cannot say: the run of combining marks
    assert accepted == (matches and text.combining_run(value) is None)
    if accepted and out is not None:
        assert out == out.strip() and text.strip_controls(out, multiline=multiline) == out


# --- invisible characters and piled-up marks -------------------------------------------------

#: What made a second team name look exactly like the first: one of each invisible kind.
INVISIBLE = {"ZWJ": "\u200d", "ZWNJ": "\u200c", "soft hyphen": "\u00ad", "tag A": "\U000e0041",
             "cancel tag": "\U000e007f", "Hangul filler": "\u3164", "choseong filler": "\u115f",
             "jungseong filler": "\u1160", "halfwidth filler": "\uffa0", "CGJ": "\u034f", "VS16": "\ufe0f",
             "VS17": "\U000e0100", "Mongolian FVS1": "\u180b", "Khmer inherent AQ": "\u17b4",
             "function application": "\u2061", "Arabic number sign": "\u0600", "interlinear anchor": "\ufff9",
             "shorthand overlap": "\U0001bca0"}


@pytest.mark.parametrize("name", sorted(INVISIBLE))
@pytest.mark.parametrize("multiline", [False, True])
def test_invisible_characters_are_refused(name, multiline):
    char = INVISIBLE[name]
    for value in (f"Alpha{char}", f"Al{char}pha", f"{char}Alpha"):
        with pytest.raises(ValueError, match=rf"invisible character \(U\+{ord(char):04X}\)"):
            text.check_text(value, field="a team name", max_len=100, multiline=multiline)
        assert not re.search(text.LINES_PATTERN if multiline else text.LINE_PATTERN, value)
    assert text.strip_controls(f"Al{char}pha", multiline=multiline) == "Alpha"


def test_every_format_character_python_knows_is_refused():
    """The hand-written ranges hold every code point of category Cf in this Python's Unicode
    data (a newer Unicode that adds one fails here first), and the Hangul-filler and variation
    selector kinds of the default-ignorable set, which are not Cf."""
    import sys
    import unicodedata

    missed = [f"U+{c:04X}" for c in range(sys.maxunicode + 1)
              if unicodedata.category(chr(c)) == "Cf" and re.search(text.LINES_PATTERN, chr(c))]
    assert not missed, f"format characters accepted (Unicode {unicodedata.unidata_version}): {missed}"
    for c in (0x115F, 0x1160, 0x3164, 0xFFA0, 0x034F, 0x17B4, 0x17B5, 0x180B, 0x180F, 0xFE00, 0xFE0F,
              0xE0000, 0xE0FFF, 0x2065, 0xFFF0):
        assert not re.search(text.LINE_PATTERN, chr(c)), f"U+{c:04X}"


@pytest.mark.parametrize("value", ["Tiếng Việt", "e\u0323\u0302", "\u05e9\u05bc\u05c1\u05b8",
                                   "\u0f56\u0f66\u0f92\u0fb2\u0f74\u0f56\u0f66", "ส้ม", "a" + "\u0301" * 4])
def test_real_scripts_with_stacked_marks_are_kept(value):
    assert text.check_text(value, field="m", max_len=100) == value


@pytest.mark.parametrize("value", ["a" + "\u0301" * 5, "Z\u0351\u0352\u0353\u0354\u0355\u0356", "ส" + "\u0e49" * 12,
                                   "x" + "\u20dd" * 5])
def test_piled_up_combining_marks_are_refused(value):
    with pytest.raises(ValueError, match=f"more than {text.MAX_COMBINING_RUN} combining marks in a row"):
        text.check_text(f"team {value}", field="a team name", max_len=100)
    cleaned = text.strip_controls(value)
    assert text.combining_run(cleaned) is None and cleaned[0] == value[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "\u0301", "\u0e49", "\u20dd", "\u0f74"]), max_size=30))
def test_combining_runs_are_refused_exactly_past_the_cap(chars):
    import unicodedata

    value = "".join(chars)
    longest, run = 0, 0
    for c in value:
        run = run + 1 if unicodedata.category(c) in ("Mn", "Me") else 0
        longest = max(longest, run)
    try:
        text.check_text(value, field="m", max_len=100, multiline=True)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (longest <= text.MAX_COMBINING_RUN)
    assert text.combining_run(text.strip_controls(value, multiline=True)) is None
