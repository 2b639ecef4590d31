"""`c2seg serve` on a port that is already taken: one line naming host:port and the OS reason,
exit 1, before it claims to be serving and before it creates its data folder."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from c2seg_kit.submission.writers import write_labels  # noqa: E402


def test_serve_on_a_port_in_use_is_one_line_and_exit_1(tmp_path):
    labels = write_labels(tmp_path / "labels.h5", np.ones((8, 6), np.uint8), "AB")
    data_dir = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "c2seg_kit", "serve", "--labels", str(labels), "--port", str(port),
             "--data-dir", str(data_dir)],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")})
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert proc.stderr == f"error: cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}\n"
    assert "Traceback" not in proc.stderr and "serving" not in proc.stderr
    assert not data_dir.exists()  # nothing was set up for a server that cannot run
