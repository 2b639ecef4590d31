"""Load test of the scoring server: Berlin-size submissions from concurrent clients, then
leaderboard reads. One `c2seg serve` process on SQLite (quota raised), on 127.0.0.1.

    python bench/server_load.py                      # 8 clients x 60 s, then 8 readers x 20 s
    python bench/server_load.py --duration 10 --get-duration 5   # a quick look

Prints submissions/s, p50/p99 latency (overall and per 10-s window, with the median of the
windows), checks that every 201 has its submission row and both score rows, and prints
leaderboard GET/s. Goals: >= 20 submissions/s, p99 < 1 s, nothing lost, >= 500 GET/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
from live_server import BERLIN, VARIANT, Variants, free_port  # noqa: E402

from c2seg_kit.submission.writers import write_labels, write_submission  # noqa: E402


def blocky_map(rng, shape, block=24, noise=0.1):
    """A map that looks like a land-cover raster: class blocks plus speckle (compresses like real ones)."""
    h, w = shape
    coarse = rng.integers(1, 14, (-(-h // block), -(-w // block)))
    lab = np.repeat(np.repeat(coarse, block, 0), block, 1)[:h, :w].astype(np.uint8)
    speckle = rng.random(shape) < noise
    lab[speckle] = rng.integers(0, 14, int(speckle.sum()))
    return lab


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of submissions")
    ap.add_argument("--get-duration", type=float, default=20.0, help="seconds of leaderboard reads")
    ap.add_argument("--get-clients", type=int, default=8)
    ap.add_argument("--scoring-workers", type=int, default=2)
    ap.add_argument("--window", type=float, default=10.0, help="seconds per reporting window")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="c2seg-bench-"))
    rng = np.random.default_rng(0)
    labels = blocky_map(rng, BERLIN, noise=0.0)
    labels[rng.random(BERLIN) < 0.3] = 0  # unlabelled
    write_labels(work / "labels.h5", labels, "AB")
    preds = []
    for i in range(4):  # a few different predictions, of different quality
        p = work / f"pred{i}.h5"
        pred = labels.copy()
        noisy = rng.random(BERLIN) < 0.05 * (i + 1)
        pred[noisy] = rng.integers(1, 14, int(noisy.sum()))
        pred[pred == 0] = 1
        write_submission(p, pred, "AB", method=f"bench-{i}", team=VARIANT)
        preds.append(Variants(p.read_bytes()))  # fresh bytes per upload: a team's identical re-upload is a 409
    sizes = [len(v.data) for v in preds]
    print(f"Berlin-size submissions: {BERLIN[0]} x {BERLIN[1]}, files {min(sizes) / 1e3:.0f}-"
          f"{max(sizes) / 1e3:.0f} kB; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")

    data_dir = work / "data"
    db = data_dir / "c2seg.db"
    env = dict(os.environ, C2SEG_QUOTA_PER_DAY="1000000", C2SEG_SCORING_WORKERS=str(args.scoring_workers),
               C2SEG_LEADERBOARD_CACHE_S="1")
    cli = [sys.executable, "-c", "from c2seg_kit.cli import main; main()"]
    tokens = []
    for i in range(args.clients):
        out = subprocess.run([*cli, "admin", "--data-dir", str(data_dir), "add-team", f"bench-team-{i}"],
                             env=env, capture_output=True, text=True, check=True)
        tokens.append(out.stdout.strip())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*cli, "serve", "--labels", str(work / "labels.h5"), "--data-dir", str(data_dir),
                               "--port", str(port), "--log-level", "warning"], env=env)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("server did not start")
        proc = psutil.Process(server.pid)
        before = server_cpu(proc)
        n = run_submissions(url, tokens, preds, args, db)
        used = server_cpu(proc) - before
        print(f"  server CPU (main + scoring children): {used:.1f} s = {used / max(n, 1) * 1e3:.1f} ms per submission "
              f"-> about {n / used if used else float('nan'):.0f} submissions/s per fully free core")
        before = server_cpu(proc)
        n = run_gets(url, args)
        used = server_cpu(proc) - before
        print(f"  server CPU: {used / max(n, 1) * 1e3:.2f} ms per GET -> about {n / used if used else float('nan'):.0f} "
              "GET/s per fully free core")
    finally:
        server.terminate()
        server.wait(20)


def server_cpu(proc) -> float:
    """CPU seconds used so far by the server process and its children (the scoring processes)."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_submissions(url, tokens, preds, args, db) -> int:
    results = []  # (t_start, latency, status, id)
    lock = threading.Lock()
    t0 = time.perf_counter()
    stop = t0 + args.duration

    def client(i):
        with httpx.Client(timeout=120) as c:
            k = i
            while time.perf_counter() < stop:
                body = preds[k % len(preds)].next()
                k += 1
                t = time.perf_counter()
                r = c.post(f"{url}/api/v1/submissions", headers={"Authorization": f"Bearer {tokens[i]}"},
                           files={"file": ("predictions.h5", body, "application/x-hdf5")})
                dt = time.perf_counter() - t
                with lock:
                    results.append((t - t0, dt, r.status_code, r.json().get("id") if r.status_code == 201 else None))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ok = [r for r in results if r[2] == 201]
    lat = [r[1] for r in ok]
    codes = {}
    for r in results:
        codes[r[2]] = codes.get(r[2], 0) + 1

    # every 201 has its row and both score rows
    con = sqlite3.connect(db)
    ids = {r[3] for r in ok}
    rows = {row[0] for row in con.execute("SELECT id FROM submissions")}
    scored = {row[0] for row in con.execute("SELECT submission_id FROM scores GROUP BY submission_id HAVING count(*) = 2")}
    con.close()
    lost = len(ids - rows) + len(ids - scored)

    print(f"\nsubmissions: {args.clients} clients, {elapsed:.1f} s, statuses {codes}")
    print(f"  overall: {len(ok) / elapsed:.1f} submissions/s, p50 {pct(lat, 50) * 1e3:.0f} ms, "
          f"p99 {pct(lat, 99) * 1e3:.0f} ms, max {max(lat) * 1e3:.0f} ms")
    windows = []
    w = 0.0
    while w + args.window <= args.duration + 1e-9:
        inside = [r for r in ok if w <= r[0] < w + args.window]
        wl = [r[1] for r in inside]
        windows.append((len(inside) / args.window, pct(wl, 50), pct(wl, 99)))
        w += args.window
    print(f"  per {args.window:g}-s window (subs/s, p50 ms, p99 ms): "
          + "; ".join(f"{a:.1f}, {b * 1e3:.0f}, {c * 1e3:.0f}" for a, b, c in windows))
    if windows:
        print(f"  median of windows: {statistics.median(x[0] for x in windows):.1f} subs/s, "
              f"p50 {statistics.median(x[1] for x in windows) * 1e3:.0f} ms, "
              f"p99 {statistics.median(x[2] for x in windows) * 1e3:.0f} ms")
    print(f"  acknowledged (201): {len(ids)}; rows found: {len(ids & rows)}; with both scores: {len(ids & scored)}; "
          f"lost: {lost}; rows without a 201: {len(rows - ids)}")
    rate, p99 = len(ok) / elapsed, pct(lat, 99)
    goal = rate >= 20 and p99 < 1.0 and lost == 0
    print(f"  goal (>= 20/s, p99 < 1 s, lost 0): {'met' if goal else 'NOT met'}; "
          f"ratios to goal: rate x{rate / 20:.2f}, p99 x{p99 / 1.0:.2f}")
    return len(ok)


def run_gets(url, args, runs: int = 3) -> int:
    """Leaderboard reads over keep-alive connections from a deliberately cheap client (raw asyncio
    streams, prebuilt request bytes): on a small machine httpx itself would be the bottleneck."""
    host, port = url.removeprefix("http://").split(":")
    request = (f"GET /api/v1/leaderboard?track=AB HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: application/json\r\n\r\n").encode()

    async def reader(stop, lat):
        r, w = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                w.write(request)
                head = await r.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.split(b"\r\n")[0].decode())
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                await r.readexactly(length)
                lat.append(time.perf_counter() - t)
        finally:
            w.close()

    async def one_run(duration):
        lat = []
        t0 = time.perf_counter()
        await asyncio.gather(*(reader(t0 + duration, lat) for _ in range(args.get_clients)))
        return lat, time.perf_counter() - t0

    results = []
    total = 0
    for _ in range(runs):  # several short runs; report the median
        lat, elapsed = asyncio.run(one_run(args.get_duration / runs))
        total += len(lat)
        results.append((len(lat) / elapsed, pct(lat, 50), pct(lat, 99)))
    print(f"\nleaderboard GET /api/v1/leaderboard?track=AB ({args.clients} teams on the board): "
          f"{args.get_clients} concurrent readers, {runs} runs of {args.get_duration / runs:.0f} s")
    print("  runs (GET/s, p50 ms, p99 ms): " + "; ".join(f"{a:.0f}, {b * 1e3:.1f}, {c * 1e3:.1f}" for a, b, c in results))
    med = statistics.median(r[0] for r in results)
    print(f"  median: {med:.0f} GET/s (goal >= 500: {'met' if med >= 500 else 'NOT met'}; x{med / 500:.2f} the goal)")
    return total


if __name__ == "__main__":
    main()
