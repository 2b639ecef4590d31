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
    assert accepted == matches
    if accepted and out is not None:
        assert out == out.strip() and text.strip_controls(out, multiline=multiline) == out
