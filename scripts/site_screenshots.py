"""Screenshots of the participant site (/team) for the docs, made with the kit's own commands.

    .venv/bin/python scripts/site_screenshots.py [--out docs]

`c2seg synth` writes a small Augsburg -> Berlin scene pair (track AB) and a Beijing -> Wuhan tile
set (track BW); `c2seg serve` serves both on loopback; `c2seg admin add-team` makes a team and
`c2seg admin phase` schedules AB's end; `c2seg submit` uploads two predictions (written from the
hidden labels with noise, as a model that is right most of the time would) and
`c2seg submissions select` picks one. Then Playwright drives the installed Chromium, in the
Europe/Berlin time zone: the sign-in page, the team's page after an upload from the page itself,
and the "My submissions" table, each at 1700 px and at 500 px. The PNGs are reduced to a small
palette (tens of KB each):

    docs/site-sign-in-1700.png      docs/site-sign-in-500.png
    docs/site-upload-1700.png       docs/site-upload-500.png
    docs/site-submissions-1700.png  docs/site-submissions-500.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser_support import chromium_path, launch, sign_in, upload  # noqa: E402

from c2seg_kit.submission.tile_writers import write_tile_submission  # noqa: E402
from c2seg_kit.submission.writers import write_submission  # noqa: E402

C2SEG = [sys.executable, "-c", "import sys; from c2seg_kit.cli import main; sys.exit(main())"]
WIDTHS = (1700, 500)


def c2seg(*args: str, env: dict | None = None) -> str:
    r = subprocess.run([*C2SEG, *args], capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        sys.exit(f"error: c2seg {' '.join(args[:2])} failed: {r.stderr.strip()}")
    return r.stdout


def noisy(label: np.ndarray, seed: int, wrong: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    flip = (rng.random(label.shape) < wrong) | (label == 0)
    return np.where(flip, rng.integers(1, 14, label.shape), label).astype(np.uint8)


def scene_prediction(labels: Path, out: Path, seed: int, wrong: float) -> Path:
    with h5py.File(labels, "r") as f:
        label = f["label"][()]
    return write_submission(out, noisy(label, seed, wrong), "AB")


def tile_prediction(labels: Path, out: Path, seed: int, wrong: float) -> Path:
    with h5py.File(labels, "r") as f:
        tiles = [(tid, noisy(f["label"][tid][()], seed + i, wrong)) for i, tid in enumerate(f["label"])]
    return write_tile_submission(out, tiles, "BW")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_png(path: Path) -> int:
    """Reduce the screenshot to a 48-colour palette (text and flat colours survive it); its size."""
    from PIL import Image

    with Image.open(path) as im:
        reduced = im.convert("RGB").quantize(colors=48, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    reduced.save(path, optimize=True)
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs")
    args = ap.parse_args()
    if chromium_path() is None:
        sys.exit("error: Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="c2seg-site-shots-"))
    c2seg("synth", str(work / "ab"), "--track", "AB", "--scale", "0.1", "--quiet")
    c2seg("synth", str(work / "bw"), "--track", "BW", "--layout", "tiles", "--scale", "0.05", "--quiet")
    ab_labels, bw_labels = work / "ab" / "labels.h5", work / "bw" / "labels.h5"
    db = f"sqlite:///{work / 'site.db'}"
    admin = ["admin", "--db", db, "--data-dir", str(work / "data")]
    token = c2seg(*admin, "add-team", "Lakeside Mappers").strip()
    ends = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=9)).strftime("%Y-%m-%dT18:00Z")
    c2seg(*admin, "phase", "AB", "closed", "--at", ends)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(work / "serve.log", "wb") as log:
        server = subprocess.Popen([*C2SEG, "serve", "--labels", str(ab_labels), "--labels", str(bw_labels),
                                   "--db", db, "--data-dir", str(work / "data"), "--port", str(port),
                                   "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
    try:
        import httpx

        for _ in range(240):
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        else:
            sys.exit(f"error: c2seg serve did not start: {(work / 'serve.log').read_text()[-2000:]}")
        env = {**os.environ, "C2SEG_SERVER": url, "C2SEG_TOKEN": token}
        first = json.loads(c2seg("submit", str(scene_prediction(ab_labels, work / "p1.h5", 1, 0.35)), "--method",
                                 "HighDAN (baseline recipe)", "--url", "https://example.org/highdan", "--json", env=env))
        c2seg("submit", str(tile_prediction(bw_labels, work / "p2.h5", 2, 0.3)), "--method", "HighDAN on tiles",
              "--description", "HSI + MSI + SAR, trained on Beijing tiles", "--json", env=env)
        c2seg("submissions", "select", str(first["id"]), env=env)
        shots = {}
        with sync_playwright() as pw:
            browser = launch(pw)
            for n, width in enumerate(WIDTHS):
                context = browser.new_context(viewport={"width": width, "height": 420}, timezone_id="Europe/Berlin",
                                              locale="en-GB", device_scale_factor=1)
                page = context.new_page()
                page.goto(url + "/team/sign-in")
                shots[f"site-sign-in-{width}.png"] = page.screenshot(full_page=True)
                page.set_viewport_size({"width": width, "height": 900})
                sign_in(page, url, token)
                # an upload from the page itself: its answer and progress bar stay on screen
                upload(page, scene_prediction(ab_labels, work / f"p{3 + n}.h5", 3 + n, 0.25), "AB",
                       method="HighDAN + test-time augmentation")
                page.evaluate("window.scrollTo(0, document.getElementById('submit').getBoundingClientRect().top"
                              " + window.scrollY - (innerWidth < 1000 ? 8 : 140))")
                shots[f"site-upload-{width}.png"] = page.screenshot(full_page=False)
                shots[f"site-submissions-{width}.png"] = page.locator("#submissions").screenshot()
                context.close()
            browser.close()
        args.out.mkdir(parents=True, exist_ok=True)
        for name, data in shots.items():
            path = args.out / name
            path.write_bytes(data)
            print(f"wrote {path} ({small_png(path) / 1024:.0f} KiB)")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
