"""`c2seg demo --out DIR` never deletes a user's files."""

from __future__ import annotations

from cli_support import run_cli as run

from c2seg_kit.cli.demo import DEMO_ENTRIES, MARKER, claim_demo_folder


def test_refuses_a_folder_holding_user_files(capsys, tmp_path):
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("three years of work")
    (tmp_path / "figures").mkdir()
    code, out, err = run(capsys, "demo", "--out", str(tmp_path))
    assert code == 1
    assert err.count("\n") == 1 and "not empty" in err and "nothing was changed" in err
    assert thesis.read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "thesis.tex"]


def test_refuses_a_file(capsys, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep")
    code, _, err = run(capsys, "demo", "--out", str(target))
    assert code == 2 and "is a file" in err and target.read_text() == "keep"  # click's usage error


def test_a_previous_demo_folder_loses_only_the_demo_entries(tmp_path):
    claim_demo_folder(tmp_path / "d")
    out = tmp_path / "d"
    assert (out / MARKER).is_file()
    (out / "data").mkdir()
    (out / "data" / "labels.h5").write_bytes(b"x")
    (out / "predictions.h5").write_bytes(b"x")
    (out / "my-notes.md").write_text("mine")
    claim_demo_folder(out)
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "my-notes.md"])
    assert (out / "my-notes.md").read_text() == "mine"


def test_new_and_empty_folders_are_used(tmp_path):
    claim_demo_folder(tmp_path / "new" / "nested")
    assert (tmp_path / "new" / "nested" / MARKER).is_file()
    (tmp_path / "empty").mkdir()
    claim_demo_folder(tmp_path / "empty")
    assert (tmp_path / "empty" / MARKER).is_file()


def test_demo_entries_cover_what_the_demo_lists():
    # every top-level name the demo writes must be in DEMO_ENTRIES, or a rerun would refuse its own folder
    import inspect

    from c2seg_kit.cli import demo as demo_module

    source = inspect.getsource(demo_module.demo.callback)
    for name in ("predictions.h5", "report", "leaderboard.db", "server.log", "server-data", "prediction.png",
                 "labels.png"):
        assert f'"{name}"' in source or f"'{name}'" in source
        assert name in DEMO_ENTRIES


def test_echoed_commands_paste_into_a_shell(tmp_path):
    """The demo echoes each step quoted for a shell: a method name with spaces and parentheses,
    a folder with a space, survive a round trip through shlex (what a shell does)."""
    import shlex

    from c2seg_kit.cli.demo import shell_line

    args = ["predict", "--out", tmp_path / "my demo" / "predictions.h5", "--method", "HighDAN-tiny (demo)"]
    line = shell_line(args)
    assert shlex.split(line) == ["c2seg", *map(str, args)]
    assert "'HighDAN-tiny (demo)'" in line
