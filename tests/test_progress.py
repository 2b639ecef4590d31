"""Progress bars only on a terminal, with a --progress/--no-progress override."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

SYNTH = ["synth", "--track", "AB", "--scale", "0.05"]


def run(args, *, tty: bool, tmp_path=None) -> str:
    """stderr of `c2seg ARGS` when stderr is a pipe (tty=False) or a pseudo-terminal (tty=True)."""
    cmd = [sys.executable, "-m", "c2seg_kit", *args]
    # C2SEG_* of the caller's shell stay out: each test names its server and database
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")}, "COLUMNS": "100"}
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    leader, follower = pty.openpty()
    # a terminal of 24 x 100: a fresh pseudo-terminal is 0 columns wide, and a 0-wide bar is empty
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=follower, env=env) as proc:
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=300) == 0
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("flag,tty,bars", [
    (None, False, False),           # a log or a pipe: no bars, no carriage returns
    (None, True, True),             # a terminal: bars
    ("--progress", False, True),    # forced on in a log
    ("--no-progress", True, False),  # forced off on a terminal
    ("--quiet", True, False),        # the old spelling of --no-progress
])
def test_bars_follow_the_terminal_unless_told(tmp_path, flag, tty, bars):
    args = [*SYNTH[:1], str(tmp_path / "out"), *SYNTH[1:], *([flag] if flag else [])]
    err = run(args, tty=tty, tmp_path=tmp_path)
    assert ("row/s" in err and "%|" in err) == bars, err[-500:]
    if not bars:
        assert err == ""


def test_help_documents_the_switch(capsys):
    from c2seg_kit.cli import main

    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--progress / --no-progress, --quiet" in out and "only when stderr is a terminal" in out


# --- the verbs that talk to a server: submit's upload bar, admin rescore's bar --------------------

from live_server import live_server_fixtures, noisy_prediction  # noqa: E402

target, server, client = live_server_fixtures(shape=(64, 96))

CASES = [(None, False, False), (None, True, True), ("--progress", False, True), ("--no-progress", True, False)]


@pytest.fixture(scope="module")
def token(server):
    return server.add_team("progress")


@pytest.mark.parametrize("flag,tty,bars", CASES)
def test_submit_upload_bar_follows_the_terminal_unless_told(server, target, token, tmp_path, flag, tty, bars):
    from c2seg_kit.submission.writers import write_submission

    pred = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, seed=1), "AB",
                            method=f"progress {flag} {tty}")  # new bytes each time: a re-upload is a 409
    err = run(["submit", str(pred), "--server", server.url, "--token", token, *([flag] if flag else [])], tty=tty)
    assert ("uploading (AB)" in err and "%|" in err) == bars, err[-500:]
    if not bars:
        assert err == ""


@pytest.mark.parametrize("flag,tty,bars", CASES)
def test_rescore_bar_follows_the_terminal_unless_told(server, target, token, tmp_path, flag, tty, bars):
    from c2seg_kit.submission.writers import write_submission

    pred = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, seed=2), "AB", method=f"r {flag} {tty}")
    run(["submit", str(pred), "--server", server.url, "--token", token, "--no-progress"], tty=False)
    err = run(["admin", "--db", server.db, "--data-dir", str(server.data_dir), "rescore", "--labels",
               str(target.path), "--scoring-workers", "1", *([flag] if flag else [])], tty=tty)
    assert ("rescoring:" in err and "%|" in err) == bars, err[-500:]
    assert "submission(s) on track(s) AB" in err  # the verb's own report comes either way
    if not tty:
        assert "\r" not in err  # nothing for a log to glue together


def test_help_shows_the_switch_on_every_verb_that_draws_a_bar():
    from c2seg_kit.cli import cli

    admin = cli.get_command(None, "admin")
    for cmd in [*(cli.get_command(None, v) for v in ("synth", "info", "prepare", "pack", "unpack", "submit",
                                                      "demo", "train-baseline", "predict")),
                admin.get_command(None, "rescore")]:
        switch = next((p for p in cmd.params if p.name == "progress"), None)
        assert switch is not None and switch.opts == ["--progress"] and switch.secondary_opts == ["--no-progress",
                                                                                                   "--quiet"], cmd.name


# --- the demo decides for its steps ------------------------------------------------------------


@pytest.mark.parametrize("progress,switch", [(True, "--progress"), (False, "--no-progress")])
def test_demo_passes_its_choice_to_every_step_that_draws_a_bar(tmp_path, progress, switch):
    from c2seg_kit.cli.demo import Demo

    d = Demo(tmp_path, progress=progress)
    for verb in ("synth", "info", "prepare", "submit", "train-baseline", "predict"):
        args = d.command(verb, "x")
        assert args[:2] == [verb, "x"] and args[-1] == switch, args
    for verb in ("validate", "score", "leaderboard", "render", "admin"):  # no bar, no switch
        assert d.command(verb, "x") == [verb, "x"]


def test_demo_piped_into_a_log_gets_no_bars_from_its_steps(tmp_path, monkeypatch):
    """`c2seg demo --no-progress` (what a pipe gets unset) runs each step with --no-progress:
    checked on the first steps, with a command runner that records instead of running."""
    from c2seg_kit.cli import demo as demo_module

    ran = []

    def record(self, verb, *args, capture=False):
        ran.append(self.command(verb, *args))
        raise SystemExit(0)  # stop after the first step

    monkeypatch.setattr(demo_module.Demo, "c2seg", record)
    from click.testing import CliRunner

    result = CliRunner().invoke(demo_module.demo, ["--out", str(tmp_path / "d")])  # CliRunner: not a terminal
    assert result.exit_code == 0 and ran[0][0] == "synth" and ran[0][-1] == "--no-progress"
    ran.clear()
    CliRunner().invoke(demo_module.demo, ["--out", str(tmp_path / "d"), "--progress"])
    assert ran[0][-1] == "--progress"
