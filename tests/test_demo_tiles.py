"""`c2seg demo --layout tiles` end to end at a tiny size: the newcomer path on the
challenge's tiles, through the same public verbs as the default demo."""

from __future__ import annotations

import json
import sqlite3
import sys

import pytest
from cli_support import cli_in_process
from PIL import Image
from split_scores import as_served

pytest.importorskip("torch")
pytest.importorskip("fastapi")


def in_process_step(self, verb: str, *args, capture: bool = False) -> str:
    """`Demo.c2seg`, each step's `c2seg VERB` run in this interpreter instead of a child process
    (the default demo's test runs them as children): same command line, same output, same errors."""
    import click

    from c2seg_kit.cli.demo import shell_line
    from c2seg_kit.errors import C2SegError

    args = self.command(verb, *args)
    click.echo("  $ " + shell_line(args))
    proc = cli_in_process(args, env=self.env)
    sys.stderr.write(proc.stderr)
    if not capture:
        sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise C2SegError(f"demo step failed: `{shell_line(args)}` exited {proc.returncode}")
    return proc.stdout if capture else ""


@pytest.mark.timeout(600)
def test_demo_on_tiles_runs_end_to_end(tmp_path, monkeypatch):
    from c2seg_kit.cli.demo import Demo

    out = tmp_path / "demo"
    # The demo's own process is this one, and so are its steps: the scene demo's test (test_demo.py)
    # runs it all in child processes, as a user does; this one covers the tiles path.
    monkeypatch.setattr(Demo, "c2seg", in_process_step)
    proc = cli_in_process(["demo", "--layout", "tiles", "--out", out, "--scale", "0.05", "--steps", "4"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stdout = proc.stdout
    # piped into a log: the demo runs its steps with --no-progress, so no bar's carriage returns
    assert "\r" not in proc.stderr and "--layout tiles" in stdout

    from c2seg_kit.submission.formats import LAYOUT_TILES
    from c2seg_kit.submission.readers import open_labels, open_submission
    from c2seg_kit.submission.score_files import score_files
    from c2seg_kit.submission.tile_writers import write_tile_labels, write_tile_submission

    # the synthetic data is the challenge's tile layout, and the submission is a tile-layout file
    # holding exactly the hidden labels' tiles, each of its label tile's shape, never class 0
    data = out / "data"
    assert sorted(p.name for p in (data / "C2Seg_AB" / "test").iterdir()) == ["hsi", "msi", "sar"]
    labels_path = data / "labels.h5"
    with open_labels(labels_path) as lab:
        assert lab.layout == LAYOUT_TILES
        expected = lab.expectation()
        hidden = dict(lab.iter_blocks())
    with open_submission(out / "predictions.h5", track="AB", **expected) as sub:
        sub.check_values()
        assert sub.layout == LAYOUT_TILES
        pred = dict(sub.iter_blocks())
    assert set(pred) == set(hidden) and len(hidden) >= 2
    assert all(p.shape == hidden[t].shape and p.min() >= 1 and p.max() <= 13 for t, p in pred.items())

    # `c2seg score` (score_files) is what the demo printed and wrote to its report
    scores = score_files(out / "predictions.h5", labels_path)
    assert f"target (Berlin) mIoU {scores['miou']:.4f}" in stdout
    assert json.loads((out / "report" / "scores.json").read_text())["miou"] == pytest.approx(scores["miou"])
    assert scores["n_tiles"] == len(hidden)

    # the server ranked it: first on the board, with the public part's scores (whole tiles, by the
    # split seed it recorded in its database), as `c2seg score` gives on those tiles alone
    from c2seg_server.scoring import public_tiles

    board = stdout.split("c2seg leaderboard")[1].split("server stopped")[0]
    row = next(line for line in board.splitlines() if "demo-team" in line)
    assert row.split()[0] == "1", row
    with sqlite3.connect(out / "leaderboard.db") as db:
        recorded = dict(db.execute("select key, value from server_settings").fetchall())
        assert db.execute("select count(*) from submissions").fetchone()[0] == 1
    public = public_tiles(sorted(hidden), "AB", seed=int(recorded["split_seed"]),
                          fraction=float(recorded["public_fraction"]))
    part_labels = write_tile_labels(tmp_path / "public-labels.h5", [(t, hidden[t]) for t in sorted(public)], "AB")
    part_pred = write_tile_submission(tmp_path / "public-pred.h5", [(t, pred[t]) for t in sorted(public)], "AB")
    want = as_served(score_files(part_pred, part_labels))
    assert f"{want['miou']:.4f}" in row, (want["miou"], row)

    # the maps are mosaics of Berlin placed by the test tiles' georeferencing; every listed file exists
    assert "mosaic of" in stdout
    for png in ("prediction.png", "labels.png", "report/confusion_matrix.png"):
        with Image.open(out / png) as im:
            im.verify()
    listed = [line.split()[-1] for line in stdout.split("Files:")[-1].strip().splitlines()]
    named = [data, labels_path, out / "prepared", out / "run", out / "predictions.h5", out / "report",
             out / "leaderboard.db", out / "server.log", out / "prediction.png", out / "labels.png"]
    assert listed == [str(p) for p in named] and all(p.exists() for p in named)


def test_demo_on_tiles_keeps_a_users_files(tmp_path, capsys):
    """The folder-safety rule holds for both layouts: a folder of someone else's files is refused
    before anything is written."""
    from c2seg_kit.cli import main

    (tmp_path / "thesis.tex").write_text("three years of work")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--layout", "tiles", "--out", str(tmp_path)])
    assert exc.value.code == 1 and "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]
