"""Benchmark: uploading from the participant site (/team) against `c2seg submit`, the same files.

    python bench/site_upload.py [--runs 5] [--scale 1]

One live `c2seg serve` on loopback serving track AB on a Berlin-size scene (2465 x 811) and
track BW on a Wuhan-size tile set (the 6225 x 8670 scene cut into 256-px tiles on the challenge's
grid: 850 tiles). Labels and predictions are written by the kit's writers at full size (the same
synthetic maps as bench/score.py; `c2seg synth` at scale 1 would also write gigabytes of sensor
data this benchmark never reads). Each upload sends fresh bytes of the same prediction (an
identical re-upload is answered 409).

Per file, interleaved so load changes hit both, median of --runs:
- the page: Playwright drives the installed Chromium, signed in; the file is already chosen in the
  form; timed from pressing Upload to the score shown in the page (#upload-result), which
  includes the page's refresh of the submissions table;
- `c2seg submit --json`, end to end (a fresh interpreter, the local checks, the upload, the answer);
- the bare API call for reference: POST /api/v1/submissions from this process (httpx), the file's
  bytes already in memory, to the 201 with the scores.

Goal: the page adds under 20 % to `c2seg submit`. --scale < 1 shrinks both files (a quick look).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser_support import chromium_path, launch, sign_in  # noqa: E402
from common import C2SEG, WUHAN  # noqa: E402
from live_server import BERLIN, VARIANT, LiveServer, Variants, upload  # noqa: E402
from score import synthetic_pair  # noqa: E402
from score_tiles import tiles_of  # noqa: E402

from c2seg_kit.submission.tile_readers import PREDICTION_GROUP  # noqa: E402
from c2seg_kit.submission.tile_writers import write_tile_labels, write_tile_submission  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402


def files(folder: Path, scale: float) -> dict[str, tuple[str, Path, Path]]:
    """name -> (track, labels file, prediction file written with team=VARIANT)."""
    berlin = tuple(max(64, int(d * scale)) for d in BERLIN)
    wuhan = tuple(max(512, int(d * scale)) for d in WUHAN)
    # class 0 (no class) is refused in tile files by `c2seg submit`: the predictions hold 1..13 only
    label, pred = synthetic_pair(*berlin, seed=1)
    pred[pred == 0] = 1
    out = {"scene": ("AB", write_labels(folder / "labels-AB.h5", label, "AB"),
                     write_submission(folder / "pred-AB.h5", pred, "AB", team=VARIANT))}
    label, pred = synthetic_pair(*wuhan, seed=2)
    pred[pred == 0] = 1
    out["tiles"] = ("BW", write_tile_labels(folder / "labels-BW.h5", tiles_of(label), "BW"),
                    write_tile_submission(folder / "pred-BW.h5", tiles_of(pred), "BW", team=VARIANT))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="file sizes x SCALE (1: Berlin and Wuhan size)")
    args = ap.parse_args()
    if chromium_path() is None:
        sys.exit("error: Chromium is not installed (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="c2seg-site-bench-"))
    made = files(work, args.scale)
    for name, (_, _, pred) in made.items():
        n = tile_count(pred)
        print(f"{name}: {pred.stat().st_size / 2**20:.1f} MiB{f', {n} tiles' if n else ''}")
    server = LiveServer(work / "server", [lab for _, lab, _ in made.values()],
                        env={"C2SEG_SCORING_TIMEOUT_S": "300", "C2SEG_PEEK_TIMEOUT_S": "120",
                             "C2SEG_UPLOAD_TIMEOUT_S": "300"})
    (work / "server").mkdir()
    server.start(timeout_s=180)
    times: dict[tuple[str, str], list[float]] = {}
    try:
        token = server.add_team("bench-site")
        variants = {name: Variants(pred.read_bytes()) for name, (_, _, pred) in made.items()}
        env = {**os.environ, "C2SEG_SERVER": server.url, "C2SEG_TOKEN": token}
        import httpx

        with sync_playwright() as pw, httpx.Client(base_url=server.url, timeout=900) as client:
            browser = launch(pw)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            sign_in(page, server.url, token)
            for run in range(args.runs + 1):  # the first round warms both paths and is not counted
                for name, (track, _, _) in made.items():
                    path = work / f"{name}-{run}.h5"
                    path.write_bytes(variants[name].next())
                    t0 = time.perf_counter()
                    r = subprocess.run([*C2SEG, "submit", str(path), "--json"], env=env, capture_output=True,
                                       text=True, timeout=900)
                    cli = time.perf_counter() - t0
                    if r.returncode != 0:
                        sys.exit(f"error: c2seg submit failed: {r.stderr.strip()}")
                    path.write_bytes(variants[name].next())
                    page.select_option("#track", track)
                    page.set_input_files("#file", str(path))
                    page.evaluate("document.getElementById('upload-result').className = ''")
                    t0 = time.perf_counter()
                    page.click("#upload-button")
                    page.wait_for_function(
                        "() => { const r = document.getElementById('upload-result');"
                        " return r.classList.contains('ok') || r.classList.contains('refused'); }",
                        timeout=900_000, polling=10)
                    shown = time.perf_counter() - t0
                    text = page.inner_text("#upload-result")
                    if "mIoU" not in text:
                        sys.exit(f"error: the page did not show a score: {text}")
                    path.unlink()
                    data = variants[name].next()
                    t0 = time.perf_counter()
                    r = upload(client, token, data, name=f"{name}.h5")
                    api = time.perf_counter() - t0
                    if r.status_code != 201:
                        sys.exit(f"error: the API answered {r.status_code}: {r.text}")
                    if run:
                        times.setdefault((name, "page"), []).append(shown)
                        times.setdefault((name, "cli"), []).append(cli)
                        times.setdefault((name, "api"), []).append(api)
            browser.close()
    finally:
        server.stop()
    print(f"\n{'file (median of ' + str(args.runs) + ')':<20} {'page':>8} {'c2seg submit':>13} {'page / cli':>11}"
          f" {'goal':>7} {'bare API':>9} {'page / API':>11}")
    for name in made:
        page_s, cli_s, api_s = (statistics.median(times[(name, w)]) for w in ("page", "cli", "api"))
        print(f"{name:<20} {page_s:>7.3f}s {cli_s:>12.3f}s {page_s / cli_s:>10.2f}x {'< 1.20x':>7}"
              f" {api_s:>8.3f}s {page_s / api_s:>10.2f}x")
    print(f"({os.cpu_count()} CPUs; runs: " + "; ".join(
        f"{n} {w}: " + " ".join(f"{t:.2f}" for t in v) for (n, w), v in times.items()) + ")")


def tile_count(path: Path) -> int:
    """The tiles a tile-layout file holds (0 for a scene file)."""
    import h5py

    with h5py.File(path, "r") as f:
        group = f.get(PREDICTION_GROUP)
        return len(group) if isinstance(group, h5py.Group) else 0


if __name__ == "__main__":
    main()
