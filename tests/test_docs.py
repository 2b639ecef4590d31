"""The repository carries its own specification and refers to nothing outside itself.

- No tracked file names a file that is not in the repository (the old internal facts sheet), and
  none names an internal tracker number ("issue 13", "item 3", "issue 15.5"): users have no
  tracker; the text says what the thing does instead.
- Every relative link in README.md, SECURITY.md and docs/ points to a file of the repository (and,
  with a #fragment, to a heading of that file).
- The README stays short and links a page per reader (participants, organizers, reproducing the
  paper) and the references; the contributors' tree (docs/contributing.md) matches the code.
- docs/ states what the code does: the class table and band counts (docs/data.md), the reader's
  bounds (docs/formats.md), and the HTTP routes (docs/api.md) against the app's OpenAPI document,
  whose description points at docs/api.md.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Folders never searched when git cannot list the tracked files (a copy without .git).
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".sh", ".html", ".css", ".js", ".json",
                 ".conf", ".yml", ".yaml", ".mako", ".in", ""}

# Built from pieces so that this file does not match its own patterns.
OUTSIDE_FILE = re.compile(re.escape("C2SEG" + ".md"), re.IGNORECASE)
ISSUE_NUMBER = re.compile(r"\b(?:issue" + r"s?\s*#?\d|item" + r"s?\s+\d)", re.IGNORECASE)
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def tracked_text_files() -> list[Path]:
    """The repository's tracked files that read as UTF-8 text (git's list; a walk without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
        paths = [ROOT / p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]
    except (OSError, subprocess.SubprocessError):
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not SKIP_DIRS & set(p.relative_to(ROOT).parts)]
    files = []
    for p in paths:
        if p.suffix.lower() not in TEXT_SUFFIXES or not p.is_file():
            continue
        try:
            p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(p)
    return files


def _hits(pattern: re.Pattern, files: list[Path]) -> list[str]:
    me = Path(__file__).resolve()
    return [f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
            for p in files if p.resolve() != me
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]


@pytest.fixture(scope="module")
def text_files() -> list[Path]:
    files = tracked_text_files()
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".py" for p in files)
    return files


def test_no_file_refers_to_the_internal_facts_sheet(text_files):
    assert _hits(OUTSIDE_FILE, text_files) == []


def test_no_file_names_an_internal_issue_number(text_files):
    assert _hits(ISSUE_NUMBER, text_files) == []


def test_the_patterns_catch_what_they_are_for():
    for text in ("see issue 13", "(issue 15.5)", "Issue 13 items 7 and 4", "item 10: the split", "issues 10-15"):
        assert ISSUE_NUMBER.search(text), text
    for text in ("a public issue", "the items listed", "one line per item"):
        assert not ISSUE_NUMBER.search(text), text
    assert OUTSIDE_FILE.search("see " + "c2seg" + ".MD section 4")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted(DOCS.rglob("*.md"))]


def test_relative_links_point_into_the_repository():
    broken = []
    checked = 0
    for page in markdown_pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in MD_LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
                continue
            file_part, _, fragment = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            checked += 1
            if ROOT.resolve() not in dest.parents and dest != ROOT.resolve():
                broken.append(f"{page.name}: {target} leaves the repository")
            elif not dest.exists():
                broken.append(f"{page.name}: {target} does not exist")
            elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
                broken.append(f"{page.name}: {target} names no heading of {dest.name}")
    assert broken == []
    assert checked >= 10  # the reference pages link to each other


READER_PAGES = ("docs/participants.md", "docs/organizers.md", "docs/reproducing.md")
REFERENCE_PAGES = ("docs/formats.md", "docs/data.md", "docs/api.md", "SECURITY.md", "docs/contributing.md")


def test_the_readme_lists_the_reader_and_reference_pages():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in READER_PAGES + REFERENCE_PAGES:
        assert (ROOT / page).is_file(), page
        assert f"]({page})" in readme, page


def test_the_readme_stays_short_and_starts_with_the_two_commands():
    """The README is the front door (what the kit is, the two commands, install, one example per
    reader, links); everything else lives on the reader pages. CI greps it for `make test`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 200
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]
    assert readme.index("## Two commands") < readme.index("## Install")
    for heading in ("## For participants", "## For organizers", "## Reproducing the paper"):
        section = readme.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "```bash" in section, heading  # one example per reader


def test_security_md_says_how_to_report_a_vulnerability():
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    assert "## Reporting a vulnerability" in text


def test_security_md_is_ordered_by_threat_and_its_cross_references_resolve():
    """SECURITY.md follows its threat model: numbered sections by who attacks (the port, a team,
    hostile files, a misbehaving server, crashes and the organizers' mistakes), then the figures,
    the tests and how to report; every "section N.M" it cites is one of its headings."""
    text = (ROOT / "SECURITY.md").read_text(encoding="utf-8")
    tops = re.findall(r"^## (.+)$", text, re.M)
    numbered = [t for t in tops if re.match(r"\d+\. ", t)]
    assert len(numbered) >= 5
    assert [int(t.split(".")[0]) for t in numbered] == list(range(1, len(numbered) + 1))
    assert numbered[0].startswith("1. Anyone who can reach the port")
    assert tops[:2] == ["Threat model", numbered[0]]
    assert tops[-3:] == ["Figures", "Running the security tests", "Reporting a vulnerability"]
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))
    number = r"\d+(?:\.\d+)?"
    lists = re.findall(rf"\bsections? ({number}(?:(?:,| and|, and) {number})*)", " ".join(text.split()))
    cited = {n for found in lists for n in re.findall(number, found)}
    assert cited and cited <= headings, sorted(cited - headings)
    assert not re.search(r"\bpromise \d", text)  # the old numbering is gone


# ---- the pages state what the code does ----------------------------------------------------------


def test_data_md_class_table_and_band_counts_match_the_code():
    from c2seg_kit.classes import CLASSES
    from c2seg_kit.registry import TRACKS

    text = (DOCS / "data.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| ([^|]+?) \| `(#[0-9A-F]{6})` \|$", text, re.M)
    assert [(int(i), name, display, colour) for i, name, display, colour in rows] == [
        (c.id, c.name, c.display, c.colour) for c in CLASSES]
    for track in TRACKS.values():
        b = track.bands
        row = re.search(rf"^\| `{track.name}` \| {track.source.display} \| {track.target.display} \| "
                        rf"{b['hsi']} \| {b['msi']} \| {b['sar']} \|", text, re.M)
        assert row, track.name
        h, w = track.target.nominal_shape
        assert f"{track.target.display} {h} x {w}" in text.replace("\n", " ")
        assert f"`{track.source.scene_file}`" in text and f"`{track.target.scene_file}`" in text


def _mib(n: int) -> str:
    return f"{n >> 20} MiB"


def test_formats_md_states_the_readers_bounds():
    from c2seg_kit import h5safe
    from c2seg_kit.io.geotiff import MAX_TILE_SIDE
    from c2seg_kit.submission.formats import LABELS_FORMAT, MAX_SIZE_FACTOR, SUBMISSION_FORMAT
    from c2seg_kit.submission.tile_readers import MAX_TILE_ID_BYTES

    lim = h5safe.DEFAULT_LIMITS
    text = " ".join((DOCS / "formats.md").read_text(encoding="utf-8").split())
    expected = [
        f"`{SUBMISSION_FORMAT}`", f"`{LABELS_FORMAT}`",
        f"at most {lim.max_attr_bytes} bytes",
        f"at most {_mib(lim.max_chunk_bytes)} per chunk",
        f"at most {lim.max_chunks:,} chunks",
        f"lzf chunks of at most {_mib(lim.max_lzf_chunk_bytes)}",
        f"At most {lim.max_objects} objects",
        f"at most {lim.max_depth} levels deep",
        f"at most {lim.max_attrs} attributes",
        f"at most {lim.max_heap_collections} global heap collections and {lim.max_heap_objects:,} heap objects",
        f"at most {lim.max_group_members:,} members",
        f"their number + {lim.max_objects}",
        f"at most {MAX_TILE_ID_BYTES} bytes in UTF-8",
        f"At most {MAX_TILE_SIDE:,} pixels a side",
        "twice the target city's nominal pixel count",
    ]
    assert MAX_SIZE_FACTOR == 2
    assert sorted(h5safe.ALLOWED_FILTERS.values()) == ["fletcher32", "gzip", "lzf", "shuffle"]
    missing = [e for e in expected if e not in text]
    assert missing == []


def test_api_md_lists_exactly_the_served_routes(tmp_path):
    pytest.importorskip("fastapi")
    import numpy as np

    from c2seg_kit.submission.writers import write_labels
    from c2seg_server.config import Settings
    from c2seg_server.main import create_app

    write_labels(tmp_path / "labels.h5", np.ones((8, 6), np.uint8), "AB")
    settings = Settings(labels=[tmp_path / "labels.h5"], data_dir=tmp_path / "data", scoring_workers=1)
    app = create_app(settings, pool=object())  # never started: only the OpenAPI document is read
    doc = app.openapi()
    served = {(m.upper(), re.sub(r"\{[^}]+\}", "{}", p)) for p, ops in doc["paths"].items() for m in ops}
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    table = {(m, re.sub(r"\{[^}]+\}", "{}", p.split("?")[0]))
             for m, p in re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", text, re.M)}
    assert served <= table, f"routes missing from docs/api.md: {sorted(served - table)}"
    extra = table - served - {("GET", "/"), ("GET", "/openapi.json")}
    assert extra == set(), f"docs/api.md lists routes the server does not serve: {sorted(extra)}"
    assert "docs/api.md" in doc["info"]["description"] and "docs/formats.md" in doc["info"]["description"]
    # every error code a route declares is explained on the page
    codes = {c for ops in doc["paths"].values() for op in ops.values() for c in op.get("responses", {})}
    errors = {c for c in codes if c[0] in "45"}
    assert {"401", "409", "413", "422", "429"} <= errors
    assert errors - set(re.findall(r"\b([45]\d\d)\b", text)) == set()


def _contributors_tree() -> str:
    page = (DOCS / "contributing.md").read_text(encoding="utf-8")
    section = page[page.index("## The tree"):]
    return section[section.index("```") + 3: section.index("```", section.index("```") + 3)]


def test_the_contributors_tree_matches_the_code():
    tree = _contributors_tree()
    words = set(re.findall(r"[\w/.]+", tree))
    # every module of the core, the baseline and the server is named (by its path, or by its name in
    # prose); the server's Alembic revisions are the migrations/ folder's own business
    unnamed = [str(p.relative_to(ROOT)) for pkg in ("c2seg_kit", "baseline", "server") for p in sorted((ROOT / pkg).rglob("*.py"))
               if p.name != "__init__.py" and "migrations" not in p.relative_to(ROOT / pkg).parts
               and not {str(p.relative_to(ROOT / pkg)), p.name, p.stem} & words]
    assert unnamed == []
    # every package of the core is listed as a folder of the tree
    packages = sorted(p.parent.name for p in (ROOT / "c2seg_kit").glob("*/__init__.py"))
    assert packages and [name for name in packages if not any(w.startswith(f"{name}/") for w in words)] == []
    # every file or folder the tree lists at the start of a line exists
    listed = re.findall(r"^(\S+)\s", tree, re.M) + re.findall(r"^  (\S+\.py|\S+/)\s", tree, re.M)
    assert listed
    missing = [name for name in listed
               if not (ROOT / name).exists() and not (ROOT / "c2seg_kit" / name).exists()]
    assert missing == []
