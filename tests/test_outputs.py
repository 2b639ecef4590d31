"""One module writes the files and folders that become the user's own (c2seg_kit/outputs.py): a scan
of the source finds no other module that renames, replaces, links, moves or opens a file for
writing, and the rule it owns holds for every verb (links, folders, special files, half files)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from cli_support import run_cli

from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import claim_file, claim_folder, new_file, publish_folder, temp_dir_in

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("c2seg_kit", "baseline", "server")
OWNER = "c2seg_kit/outputs.py"

#: Modules that write files that never become a user's: each with what it writes and why it may.
ALLOWED = {
    "server/uploads.py": "the server's spool of an upload being received (its own temporary file)",
    "server/folders.py": "a probe file that checks the server's data folder is writable, removed at once",
    "server/submit_service.py": "an accepted upload moved into the server's own storage folder",
    "c2seg_kit/io/safezip.py": "inner zips extracted into a private temporary work folder, removed after",
    "c2seg_kit/io/matfile.py": "MATLAB's header patched into the temporary file outputs.new_file gave it",
}

_MODULE_CALLS = {
    ("os", "replace"), ("os", "rename"), ("os", "renames"), ("os", "link"), ("os", "symlink"), ("os", "fdopen"),
    ("shutil", "move"), ("shutil", "copy"), ("shutil", "copy2"), ("shutil", "copyfile"),
    ("shutil", "copytree"), ("tempfile", "mkstemp"), ("tempfile", "mkdtemp"), ("tempfile", "NamedTemporaryFile"),
}
_PATH_METHODS = {"rename", "write_text", "write_bytes", "symlink_to", "hardlink_to", "link_to"}


def _mode(call: ast.Call) -> str | None:
    """The mode of an open()/Path.open() call when it is written out, else None."""
    args = call.args[1:] if isinstance(call.func, ast.Name) else call.args[:1]
    for node in [*args[:1], *(k.value for k in call.keywords if k.arg == "mode")]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
    return None


def writes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, call) for every call in ``tree`` that writes, renames or links a file by name."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in _MODULE_CALLS:
            found.append((node.lineno, f"{f.value.id}.{f.attr}"))
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) == ("os", "open"):
            flags = {n.attr for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)} if len(node.args) > 1 else set()
            if flags & {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND"}:
                found.append((node.lineno, "os.open(..., O_WRONLY/O_RDWR/O_CREAT)"))
        elif isinstance(f, ast.Attribute) and f.attr in _PATH_METHODS:
            found.append((node.lineno, f".{f.attr}"))
        elif isinstance(f, ast.Attribute) and f.attr == "replace" and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, ".replace"))  # Path.replace (str.replace takes two, dataclasses keywords)
        elif (isinstance(f, ast.Name) and f.id == "open") or (isinstance(f, ast.Attribute) and f.attr == "open"):
            mode = _mode(node)
            if mode is not None and set(mode) & set("wax+"):
                found.append((node.lineno, f"open(..., {mode!r})"))
    return found


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path


def test_no_module_but_the_owner_writes_files():
    strays = []
    for rel, path in _sources():
        if rel == OWNER or rel in ALLOWED:
            continue
        strays += [f"{rel}:{line} {call}" for line, call in writes(ast.parse(path.read_text(), rel))]
    assert not strays, "write outputs through c2seg_kit.outputs:\n" + "\n".join(strays)


def test_the_scan_sees_what_it_looks_for():
    tree = ast.parse("import os, shutil\nos.replace(a, b)\np.rename(q)\nopen(p, 'wb')\np.open('a')\n"
                     "shutil.move(a, b)\np.write_text('x')\ns.replace('a', 'b')\nopen(p)\nopen(p, 'rb')\n"
                     "dataclasses.replace(c, x=1)\nos.open(p, os.O_RDONLY)\nos.open(p, os.O_WRONLY | os.O_CREAT)\n")
    assert [line for line, _ in writes(tree)] == [2, 3, 4, 5, 6, 7, 13]
    assert writes(ast.parse((ROOT / OWNER).read_text()))  # the owner does write


def test_every_allowed_module_still_writes():
    # an entry whose module stopped writing is stale: the allow-list stays as short as it can be
    for rel in ALLOWED:
        assert writes(ast.parse((ROOT / rel).read_text())), rel


# --- the rule, as every verb sees it ---------------------------------------------------------------


@pytest.fixture()
def submission(tmp_path):
    from c2seg_kit.submission.writers import write_labels, write_submission

    rng = np.random.default_rng(0)
    sub = write_submission(tmp_path / "sub.h5", rng.integers(1, 14, (24, 20)).astype(np.uint8), "AB")
    lab = write_labels(tmp_path / "labels.h5", rng.integers(0, 14, (24, 20)).astype(np.uint8), "AB")
    return sub, lab


def _one_line(code: int, err: str, text: str) -> None:
    assert code == 1 and err.count("\n") == 1 and text in err, err


def test_a_core_verb_never_replaces_a_link_even_with_force(submission, tmp_path, capsys):
    sub, _ = submission
    victim = tmp_path / "elsewhere.png"
    victim.write_bytes(b"someone's picture")
    link = tmp_path / "map.png"
    link.symlink_to(victim)
    code, _, err = run_cli(capsys, "render", sub, "--out", link, "--force")
    _one_line(code, err, "map.png is a symbolic link: it is neither written through nor replaced")
    assert link.is_symlink() and victim.read_bytes() == b"someone's picture"


def test_a_report_file_that_is_a_folder_is_one_line_even_with_force(submission, tmp_path, capsys):
    sub, lab = submission
    (tmp_path / "report" / "scores.json").mkdir(parents=True)
    code, _, err = run_cli(capsys, "score", sub, "--labels", lab, "--report", tmp_path / "report", "--force")
    _one_line(code, err, "scores.json is a folder: it is not replaced")
    assert (tmp_path / "report" / "scores.json").is_dir() and len(list((tmp_path / "report").iterdir())) == 1


def test_new_file_publishes_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    with new_file(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError), new_file(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(C2SegError, match="already exists; it was left as it is"), new_file(target, force=False):
        pass
    assert target.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_what_appears_meanwhile_is_checked_again_before_the_rename(tmp_path):
    target = tmp_path / "out.bin"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(b"keep")
    with pytest.raises(C2SegError, match="is a symbolic link"), new_file(target) as tmp:
        tmp.write_bytes(b"new")
        target.symlink_to(elsewhere)  # a link planted while the file was written
    assert target.is_symlink() and elsewhere.read_bytes() == b"keep"
    partial = temp_dir_in(tmp_path, prefix=".folder.partial-")
    (partial / "1.tif").write_bytes(b"tile")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "mine.txt").write_text("mine")  # filled while the tiles were written
    with pytest.raises(C2SegError, match="is not empty"):
        publish_folder(partial, tmp_path / "folder", verb="unpack")
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["mine.txt"]


def test_a_folder_is_new_empty_or_marked_as_ours(tmp_path):
    assert claim_folder(tmp_path / "new", verb="demo") == "new"
    (tmp_path / "empty").mkdir()
    assert claim_folder(tmp_path / "empty", verb="demo") == "empty"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    with pytest.raises(C2SegError, match="was not written by `c2seg demo` .*nothing was changed"):
        claim_folder(mine, verb="demo", marker=".mark")
    (mine / ".mark").write_text("ours")
    assert claim_folder(mine, verb="demo", marker=".mark", force=True) == "ours"
    with pytest.raises(C2SegError, match=r"\.mark already exists"):  # an earlier output: only with --force
        claim_folder(mine, verb="demo", marker=".mark")
    with pytest.raises(C2SegError, match="was not written by"):  # the marker's content is checked when asked
        claim_folder(mine, verb="demo", marker=".mark", ours=lambda p: p.read_text() == "theirs", force=True)
    link = tmp_path / "on-another-disk"
    link.symlink_to(tmp_path / "empty")
    assert claim_folder(link, verb="prepare") == "empty"  # written into through the link
    with pytest.raises(C2SegError, match="exists and is not a folder"):
        claim_folder(link, verb="unpack", follow_link=False)  # a rename would not go through it


def test_an_input_is_never_an_output_through_a_link(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "scene.h5").write_bytes(b"input")
    (tmp_path / "alias").symlink_to(data / "scene.h5")
    with pytest.raises(C2SegError, match="is an input of this command"):
        claim_file(tmp_path / "alias", force=True, inputs=(data,))


def test_a_failed_mat_file_leaves_no_half_file(tmp_path):
    from c2seg_kit.io.matfile import MatV73Writer

    path = tmp_path / "scene.mat"
    with pytest.raises(RuntimeError), MatV73Writer(path) as w:
        w.create("img", (4, 3), np.float32)
        raise RuntimeError("generation failed")
    assert list(tmp_path.iterdir()) == []
    with MatV73Writer(path) as w:
        w.create("img", (4, 3), np.float32)
        w.write_rows("img", 0, np.ones((4, 3), np.float32))
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and [p.name for p in tmp_path.iterdir()] == ["scene.mat"]


def test_the_demo_server_log_is_never_written_through_a_link(tmp_path):
    from c2seg_kit.outputs import open_log

    (tmp_path / "secret").write_text("keep")
    (tmp_path / "server.log").symlink_to(tmp_path / "secret")
    with pytest.raises(C2SegError, match="is a symbolic link"):
        open_log(tmp_path / "server.log")
    assert (tmp_path / "secret").read_text() == "keep"
