"""Progress bars only on a terminal, with a --progress/--no-progress override (issue 15.6)."""

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


def run(args, *, tty: bool, tmp_path) -> str:
    """stderr of `c2seg ARGS` when stderr is a pipe (tty=False) or a pseudo-terminal (tty=True)."""
    cmd = [sys.executable, "-m", "c2seg_kit", *args]
    env = {**os.environ, "COLUMNS": "100"}
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
