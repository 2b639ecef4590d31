"""`c2seg demo`: the whole path on synthetic data, step by step, through the public verbs.

Each step runs the same `c2seg` verb a user would type, in a child process, so the demo
exercises exactly the documented interface and shows each verb's own progress.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

from c2seg_kit.cli.options import progress_option
from c2seg_kit.errors import C2SegError
from c2seg_kit.outputs import claim_folder, clear_entries, open_log, write_text

TOTAL_STEPS = 8

#: Written into the demo's folder first; only a folder carrying it is ever cleared, and then only
#: of the entries listed here (what a demo writes), never of anything else a user put there.
MARKER = ".c2seg-demo"
DEMO_ENTRIES = ("data", "prepared", "run", "predictions.h5", "report", "leaderboard.db", "leaderboard.db-wal",
                "leaderboard.db-shm", "server.log", "server-data", "prediction.png", "labels.png")


def shell_line(args) -> str:
    """``c2seg ARGS`` quoted for a POSIX shell, so an echoed step can be pasted and run as it is."""
    return shlex.join(["c2seg", *map(str, args)])


def claim_demo_folder(out: Path) -> None:
    """Make ``out`` ready for a demo without ever deleting a user's files.

    A missing or empty folder is used as it is. A folder a previous demo wrote (it carries
    MARKER) loses only the entries that demo writes (DEMO_ENTRIES); anything else stays. Any
    other non-empty folder is refused.
    """
    if claim_folder(out, verb="demo", marker=MARKER, force=True) == "ours":
        clear_entries(out, DEMO_ENTRIES)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / MARKER, "written by `c2seg demo`; a later demo may clear the entries it writes here\n")


def takes_progress(verb: str) -> bool:
    """Whether `c2seg VERB` has the --progress/--no-progress switch (the verbs that draw bars)."""
    from c2seg_kit.cli import cli

    cmd = cli.get_command(click.Context(cli), verb)
    return cmd is not None and any(p.name == "progress" for p in cmd.params)


class Demo:
    def __init__(self, out: Path, progress: bool):
        self.out = out
        self.progress = progress
        self.step = 0
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for var in ("C2SEG_SERVER", "C2SEG_TOKEN", "C2SEG_DATABASE_URL"):  # the demo uses its own
            self.env.pop(var, None)

    def say(self, title: str) -> None:
        self.step += 1
        click.secho(f"\n[{self.step}/{TOTAL_STEPS}] {title}", bold=True)

    def command(self, verb: str, *args) -> list[str]:
        """The arguments of one step: the demo's own --progress/--no-progress choice goes on to
        every verb that takes it, so a demo piped into a log gets no bars from its steps either."""
        switch = ["--progress" if self.progress else "--no-progress"] if takes_progress(verb) else []
        return [verb, *map(str, args), *switch]

    def c2seg(self, verb: str, *args, capture: bool = False) -> str:
        args = self.command(verb, *args)
        cmd = [sys.executable, "-m", "c2seg_kit", *args]
        click.echo("  $ " + shell_line(args))
        proc = subprocess.run(cmd, env=self.env, text=True, stdout=subprocess.PIPE if capture else None,
                              stderr=None)
        if proc.returncode != 0:
            raise C2SegError(f"demo step failed: `{shell_line(args)}` exited {proc.returncode}")
        return proc.stdout or ""


def chance_miou(labels: Path, seed: int = 0) -> float:
    """mIoU of a uniform random class per pixel: the floor a trained model should clear. Labels of
    either layout (a scene, or tiles: one confusion matrix over all of them, as scoring does)."""
    import numpy as np

    from c2seg_kit.metrics import ConfusionMatrix
    from c2seg_kit.submission.readers import open_labels

    rng = np.random.default_rng(seed)
    cm = ConfusionMatrix()
    with open_labels(labels) as lab:
        for _, block in lab.iter_blocks():
            cm.update(block, rng.integers(1, 14, block.shape, dtype=np.uint8))
    return cm.scores()["miou"]


@dataclass(frozen=True)
class Layout:
    """What differs between the demo on scene files and on the challenge's tiles: data, not branches."""

    scale: float  # the default --scale: small enough for a few CPU minutes
    synth: str  # the step titles
    prepare: str
    predict: str
    render: str
    data_files: str  # the data folder in the closing list of files
    render_like_data: bool  # tiles: draw a mosaic placed by the test tiles' georeferencing


LAYOUTS = {
    "scene": Layout(
        scale=0.25,
        synth="Synthesise a small Augsburg -> Berlin city pair (MATLAB v5 layout, like the real files)",
        prepare="Prepare the window cache (NaN repair, HSI PCA to 10 components fitted on Augsburg, per-band min-max)",
        predict="Predict the whole of Berlin, validate and score the submission file",
        render="Render the predicted map beside the true labels",
        data_files="synthetic scene files", render_like_data=False),
    "tiles": Layout(
        scale=0.15,
        synth="Synthesise a small Augsburg -> Berlin pair as the challenge's GeoTIFF tiles (C2Seg_AB/train: "
              "Augsburg, labelled; C2Seg_AB/test: Berlin, without labels)",
        prepare="Prepare the tile cache (NaN repair within each tile, HSI PCA to 10 components fitted on "
                "Augsburg's tiles, per-band min-max over each city's tiles)",
        predict="Predict every Berlin test tile into one tile-layout submission, validate and score it",
        render="Render the predicted tiles as a mosaic of Berlin (placed by their georeferencing) beside the true "
               "labels",
        data_files="synthetic challenge tiles", render_like_data=True),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise C2SegError(f"the demo server exited with code {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise C2SegError(f"the demo server did not answer on {url} within {timeout:.0f} s")


@click.command()
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-out"),
              show_default=True, help="Folder for everything the demo writes: new, empty, or one a previous demo wrote "
                   "(then only the demo's own files are replaced).")
@click.option("--layout", type=click.Choice(sorted(LAYOUTS)), default="scene", show_default=True,
              help="scene: the RSE scene files; tiles: the WHISPERS challenge's GeoTIFF tiles, trained and "
                   "predicted tile by tile, submitted as a tile-layout file.")
@click.option("--scale", type=click.FloatRange(0.02, 1.0),
              show_default=", ".join(f"{lay.scale} with {name}" for name, lay in LAYOUTS.items()),
              help="Synthetic city size as a fraction of the real Augsburg/Berlin.")
@click.option("--steps", type=click.IntRange(1), default=400, show_default=True, help="Training steps (tiny HighDAN).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the synthetic data, the cache's samples and training.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              show_default="train-baseline's and predict's rule: one less than the usable CPUs",
              help="torch CPU threads for training and prediction (passed on to those steps).")
@progress_option
def demo(out: Path, layout: str, scale: float | None, steps: int, seed: int, threads: int | None,
         progress: bool) -> None:
    """Run the whole C2Seg path on synthetic data, on the CPU, in a few minutes.

    Synthesises a small Augsburg -> Berlin pair, prepares it, trains the tiny HighDAN,
    predicts Berlin, validates and scores the prediction, starts a local leaderboard server
    (SQLite), adds a team, submits, prints the leaderboard, stops the server, and renders the
    predicted map beside the true labels. --layout tiles does the same on the challenge's tiles.
    """
    lay = LAYOUTS[layout]
    scale = lay.scale if scale is None else scale
    claim_demo_folder(out)
    d = Demo(out, progress=progress)
    data, prepared, run = out / "data", out / "prepared", out / "run"
    predictions, labels = out / "predictions.h5", data / "labels.h5"
    t_start = time.monotonic()
    thread_args = ["--threads", threads] if threads is not None else []

    d.say(lay.synth)
    d.c2seg("synth", data, "--track", "AB", *(["--layout", layout] if layout != "scene" else []),
            "--scale", scale, "--seed", seed)
    d.say("Describe it")
    d.c2seg("info", data, "--track", "AB")
    # One PCA fitted on Augsburg and applied to both cities keeps the HSI features comparable
    # across the synthetic shift, which a few hundred CPU steps need (the paper fits per city).
    d.say(lay.prepare)
    d.c2seg("prepare", data, "--track", "AB", "--out", prepared, "--pca-fit", "source", "--seed", seed)
    d.say(f"Train the tiny HighDAN for {steps} steps on the CPU (source: Augsburg labels; target: Berlin, unlabelled)")
    d.c2seg("train-baseline", "--prepared", prepared, "--track", "AB", "--out", run, "--config", "tiny",
            "--steps", steps, "--device", "cpu", "--seed", seed, "--labels", labels, *thread_args)
    checkpoint = run / "best.pt" if (run / "best.pt").is_file() else run / "last.pt"
    d.say(lay.predict)
    d.c2seg("predict", "--checkpoint", checkpoint, "--prepared", prepared, "--track", "AB", "--out", predictions,
            "--device", "cpu", "--method", "HighDAN-tiny (demo)", *thread_args)
    d.c2seg("validate", predictions, "--track", "AB", "--labels", labels)
    scores = json.loads(d.c2seg("score", predictions, "--labels", labels, "--json", "--report", out / "report",
                                capture=True))
    chance = chance_miou(labels)
    click.echo(f"  target (Berlin) mIoU {scores['miou']:.4f}, OA {scores['oa']:.4f}, kappa {scores['kappa']:.4f} "
               f"(a uniform random guess scores mIoU {chance:.4f})")

    d.say("Start a local leaderboard server (SQLite) and add a team")
    db = f"sqlite:///{(out / 'leaderboard.db').resolve()}"
    server_data = out / "server-data"
    # --data-dir here too, so that admin's report of the folder it uses names the server's
    token = d.c2seg("admin", "--db", db, "--data-dir", server_data, "add-team", "demo-team", capture=True).strip()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open_log(out / "server.log") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "c2seg_kit", "serve", "--labels", str(labels), "--db", db, "--port", str(port),
             "--data-dir", str(server_data), "--log-level", "warning"],
            env=d.env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(url, server)
            click.echo(f"  server up at {url}")
            d.say("Submit the prediction and print the leaderboard")
            d.c2seg("submit", predictions, "--server", url, "--token", token)
            d.c2seg("leaderboard", "--server", url, "--track", "AB")
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
    click.echo("  server stopped")

    d.say(lay.render)
    like = ["--like", data] if lay.render_like_data else []
    d.c2seg("render", predictions, *like, "--out", out / "prediction.png")
    d.c2seg("render", labels, *like, "--out", out / "labels.png")

    click.secho(f"\nDone in {time.monotonic() - t_start:.0f} s. Target (Berlin) mIoU {scores['miou']:.4f}, "
                f"against {chance:.4f} for a random guess (synthetic data; real C2Seg numbers need the real "
                f"dataset).", bold=True)
    click.echo("Files:")
    for label, path in [
        (lay.data_files, data),
        ("hidden labels (organizers)", labels),
        ("prepared cache", prepared),
        ("training run (checkpoints, log.jsonl)", run),
        ("submission file", predictions),
        ("score report (JSON, CSV, PNG)", out / "report"),
        ("leaderboard database", out / "leaderboard.db"),
        ("server log", out / "server.log"),
        ("predicted map", out / "prediction.png"),
        ("true labels map", out / "labels.png"),
    ]:
        click.echo(f"  {label:40} {path}")
