"""`c2seg demo` end to end at a reduced size: every artefact exists and is valid."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from PIL import Image
from split_scores import as_served, scores_by_part

pytest.importorskip("torch")
pytest.importorskip("fastapi")


@pytest.mark.timeout(600)
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "c2seg_kit", "demo", "--out", str(out), "--scale", "0.06",
                           "--steps", "4"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stdout = proc.stdout

    # the submission validates against the hidden labels, and `score` agrees with what the demo printed
    from c2seg_kit.submission.readers import open_labels, open_submission
    from c2seg_kit.submission.score_files import score_files

    with open_labels(out / "data" / "labels.h5") as labels:
        shape = labels.shape
    with open_submission(out / "predictions.h5", track="AB", expected_shape=shape) as sub:
        pred = sub.read()
    assert pred.min() >= 1 and pred.max() <= 13  # never predicts 0
    scores = score_files(out / "predictions.h5", out / "data" / "labels.h5")
    assert f"target (Berlin) mIoU {scores['miou']:.4f}" in stdout
    assert json.loads((out / "report" / "scores.json").read_text())["miou"] == pytest.approx(scores["miou"])

    # the leaderboard has the team with its public mIoU (`c2seg score` on the public part of the
    # split the server recorded in its database: a secret seed made on first start), and the
    # database holds its scored submission
    board = stdout.split("c2seg leaderboard")[1].split("server stopped")[0]
    assert "demo-team" in board and "ranked by public mIoU" in board
    from c2seg_server.scoring import public_mask

    with sqlite3.connect(out / "leaderboard.db") as db:
        recorded = dict(db.execute("select key, value from server_settings").fetchall())
    split = {"seed": int(recorded["split_seed"]), "block": int(recorded["split_block"]),
             "fraction": float(recorded["public_fraction"])}
    with open_labels(out / "data" / "labels.h5") as labels:
        label = labels.read()
    public = as_served(scores_by_part(out / "predictions.h5", label, public_mask(shape, "AB", **split), tmp_path)["public"])
    row = next(line for line in board.splitlines() if "demo-team" in line)
    assert f"{public['miou']:.4f}" in row, (public["miou"], row)
    with sqlite3.connect(out / "leaderboard.db") as db:
        assert db.execute("select count(*) from submissions").fetchone()[0] == 1
        assert db.execute("select name from teams").fetchall() == [("demo-team",)]

    # the PNGs decode, and every file the demo names at the end exists
    for png in ("prediction.png", "labels.png", "report/confusion_matrix.png"):
        with Image.open(out / png) as im:
            im.verify()
    listed = [line.split()[-1] for line in stdout.split("Files:")[-1].strip().splitlines()]
    named = [out / "data", out / "data" / "labels.h5", out / "prepared", out / "run", out / "predictions.h5",
             out / "report", out / "leaderboard.db", out / "server.log", out / "prediction.png", out / "labels.png"]
    assert listed == [str(p) for p in named] and all(p.exists() for p in named)
    assert "server stopped" in stdout
