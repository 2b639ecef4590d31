"""`c2seg admin fetch --out` and `c2seg admin export --out` write regular files only: never
through a symbolic link, never over a device, pipe or folder (not even with --force), and an
existing regular file only with --force. Refusals are one line, exit 1, before anything is
written."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

pytest.importorskip("fastapi")

from cli_support import run_cli  # noqa: E402

SECRET = b"the organizer's own file\n"


@pytest.fixture
def db(tmp_path):
    """A database with one team and one scored submission whose file is stored."""
    from c2seg_server import crud
    from c2seg_server.db import init_db, make_engine, make_sessionmaker
    from c2seg_server.models import Score, Submission

    data = tmp_path / "data"
    url = f"sqlite:///{data / 'c2seg.db'}"
    engine = make_engine(url)
    init_db(engine)
    stored = b"\x89HDF\r\n\x1a\n stored prediction"
    (data / "submissions").mkdir(parents=True)
    (data / "submissions" / "s1.h5").write_bytes(stored)
    with make_sessionmaker(engine)() as s:
        team, _ = crud.add_team(s, "alpha")
        sub = Submission(team_id=team.id, track="AB", filename="p.h5", size=len(stored),
                         sha256=hashlib.sha256(stored).hexdigest(), stored_as="s1.h5")
        for split in ("public", "private"):
            sub.scores.append(Score(split=split, oa=0.5, miou=0.25, f1=0.3, kappa=0.2, per_class_iou={}, n_pixels=10))
        s.add(sub)
        s.commit()
    engine.dispose()
    return ["admin", "--db", url, "--data-dir", data], stored


def one_line_error(result, words):
    code, out, err = result
    assert code == 1 and out == "", (code, out, err)
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err


VERBS = {"fetch": ["fetch", "1"], "export": ["export"]}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_symlink_is_neither_written_through_nor_replaced(db, tmp_path, capsys, verb, force):
    admin, _ = db
    victim = tmp_path / "victim.txt"
    victim.write_bytes(SECRET)
    link = tmp_path / "out.link"
    link.symlink_to(victim)
    result = run_cli(capsys, *admin, *VERBS[verb], "--out", link, *(["--force"] if force else []))
    one_line_error(result, "is a symbolic link")
    assert link.is_symlink() and os.readlink(link) == str(victim) and victim.read_bytes() == SECRET


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_special_file_is_never_replaced_even_with_force(db, tmp_path, capsys, verb):
    """A named pipe stands for every special file (a device node is the same case, but a test
    must never aim at a real one: on a defective build, as root, it would replace it)."""
    admin, _ = db
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    one_line_error(run_cli(capsys, *admin, *VERBS[verb], "--out", fifo, "--force"), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    folder = tmp_path / "folder"
    folder.mkdir()
    code, _, err = run_cli(capsys, *admin, *VERBS[verb], "--out", folder, "--force")
    assert code in (1, 2) and "is a directory" in err or "is a folder" in err, err  # (click's check, or ours)
    assert folder.is_dir() and not any(folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "folder", "out.fifo"]  # no temporary left


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_an_existing_file_is_replaced_only_with_force(db, tmp_path, capsys, verb):
    admin, stored = db
    out = tmp_path / "out.file"
    out.write_bytes(SECRET)
    one_line_error(run_cli(capsys, *admin, *VERBS[verb], "--out", out), "already exists; it was left as it is (choose another --out, or --force)")
    assert out.read_bytes() == SECRET
    code, _, err = run_cli(capsys, *admin, *VERBS[verb], "--out", out, "--force")
    assert code == 0, err
    written = out.read_bytes()
    assert written == stored if verb == "fetch" else written.startswith(b"id,team,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out.file"]  # no temporary left
    # a fresh name needs no --force; the file gets the umask's mode, like any other output
    fresh = tmp_path / "fresh.out"
    code, _, err = run_cli(capsys, *admin, *VERBS[verb], "--out", fresh)
    assert code == 0, err
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
