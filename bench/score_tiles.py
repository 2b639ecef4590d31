"""Benchmark: scoring a Wuhan-size tile submission (850 tiles of 256 px, gzip) beside the scene file.

    python bench/score_tiles.py [--runs 3] [--no-server]

The Wuhan test scene (6225 x 8670) cut as the challenge cut it: 256-px tiles on a grid snapped
to the edges (25 x 34 = 850 tiles, the distributed count; edge tiles overlap), labels and
predictions written by the kit's tile writers (one gzip chunk per tile). Side by side, in one
run, medians of --runs, tiles and scene interleaved so load changes hit both:

- `c2seg score --json`, end to end (a subprocess, interpreter start included);
- `score_files` in-process;
- the server's scoring path in-process (`Scorer.peek` + `Scorer.score`, public/private split,
  what a scoring child runs per upload), labels already loaded as a server holds them;
- through a live `c2seg serve` on loopback: POST the file, wait for the 201 with its scores.

Goal: the tile file under 1.5 s end to end, with `c2seg score` and through the server,
as the scene file is. Needs the server extra for the server rows (skipped with --no-server).
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

from common import C2SEG, WUHAN  # noqa: E402
from score import synthetic_pair  # noqa: E402

from c2seg_kit.submission.score_files import score_files  # noqa: E402
from c2seg_kit.submission.tile_writers import write_tile_labels, write_tile_submission  # noqa: E402
from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402
from c2seg_kit.tiling import window_origins  # noqa: E402

TILE = 256


def tiles_of(raster, tile: int = TILE):
    """(id, tile) pairs of the challenge's grid over ``raster``: ids 0.. in row-major order."""
    origins = window_origins(raster.shape[0], raster.shape[1], tile, tile)
    return [(str(i), raster[r : r + tile, c : c + tile]) for i, (r, c) in enumerate(origins)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def server_paths(files: dict, runs: int) -> dict[str, list[float]]:
    """Per layout: the in-process scoring path of a server and the live upload round trip."""
    import httpx
    from live_server import LiveServer, upload

    from c2seg_server.scoring import Scorer

    times: dict[str, list[float]] = {}
    for layout, (pred, labels) in files.items():
        scorer = Scorer({"BW": str(labels)}, seed=0, block=256, fraction=0.5)
        scorer.warm()

        def one(scorer=scorer, pred=pred) -> None:
            scorer.peek(str(pred))
            scorer.score(str(pred), "BW")

        one()
        times[f"{layout}: server scoring path, in-process"] = [timed(one) for _ in range(runs)]
        root = Path(tempfile.mkdtemp(prefix=f"srv-{layout}-"))
        server = LiveServer(root, [labels], env={"C2SEG_SCORING_TIMEOUT_S": "120", "C2SEG_PEEK_TIMEOUT_S": "60"})
        server.start()
        try:
            token = server.add_team(f"bench-{layout}")
            with httpx.Client(base_url=server.url, timeout=300) as client:
                ok = upload(client, token, pred)
                assert ok.status_code == 201, ok.text
                samples = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    r = upload(client, token, pred)
                    samples.append(time.perf_counter() - t0)
                    assert r.status_code == 201, r.text
            times[f"{layout}: through a live server (upload -> 201)"] = samples
        finally:
            server.stop()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-server", action="store_true", help="Only c2seg score and score_files.")
    args = ap.parse_args()
    label, pred = synthetic_pair(*WUHAN)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lab_tiles, pred_tiles = tiles_of(label), tiles_of(pred)
        files = {
            "tiles": (write_tile_submission(tmp / "pred-tiles.h5", pred_tiles, "BW"),
                      write_tile_labels(tmp / "labels-tiles.h5", lab_tiles, "BW")),
            "scene": (write_submission(tmp / "pred-scene.h5", pred, "BW"), write_labels(tmp / "labels.h5", label, "BW")),
        }
        n_pixels = sum(t.size for _, t in lab_tiles)
        print(f"Wuhan {WUHAN[0]} x {WUHAN[1]}: {len(lab_tiles)} tiles of {TILE} px ({n_pixels:,} pixels, "
              f"{n_pixels / label.size:.3f}x the scene's: edge tiles overlap); files: tile submission "
              f"{files['tiles'][0].stat().st_size / 2**20:.1f} MiB, scene submission "
              f"{files['scene'][0].stat().st_size / 2**20:.1f} MiB (gzip); {os.cpu_count()} CPUs")
        times: dict[str, list[float]] = {}
        for p, lab in files.values():  # warm the page cache and check both score
            score_files(p, lab)
            subprocess.run([*C2SEG, "score", str(p), "--labels", str(lab), "--json"], check=True, capture_output=True)
        for _ in range(args.runs):
            for layout, (p, lab) in files.items():
                cmd = [*C2SEG, "score", str(p), "--labels", str(lab), "--json"]
                times.setdefault(f"{layout}: c2seg score --json, end to end", []).append(
                    timed(lambda cmd=cmd: subprocess.run(cmd, check=True, capture_output=True)))
                times.setdefault(f"{layout}: score_files in-process", []).append(
                    timed(lambda p=p, lab=lab: score_files(p, lab)))
        if not args.no_server:
            times.update(server_paths(files, args.runs))
    print()
    print(f"{'what (median of ' + str(args.runs) + ')':<56} {'tiles':>8} {'scene':>8} {'ratio':>7} {'goal':>8}")
    for what in dict.fromkeys(k.split(": ", 1)[1] for k in times):
        t, s = statistics.median(times[f"tiles: {what}"]), statistics.median(times[f"scene: {what}"])
        goal = "< 1.5s" if "end to end" in what or "live server" in what else ""
        print(f"{what:<56} {t:>7.3f}s {s:>7.3f}s {t / s:>6.2f}x {goal:>8}")


if __name__ == "__main__":
    main()
