"""Hostile input, faults and load against a real `c2seg serve` on loopback (the figures in SECURITY.md).

    python bench/hostile.py catalogue              # every hostile file kind over HTTP; bomb memory
    python bench/hostile.py fuzz --minutes 10      # byte-mutation fuzzing of the reader in a scoring child
    python bench/hostile.py api --examples 500     # schemathesis over HTTP, many examples per operation
    python bench/hostile.py kill9 --rounds 3       # SIGKILL under 8 clients: acknowledged vs found
    python bench/hostile.py load --clients 8 --seconds 60   # Berlin-size uploads: rate, p50/p99, lost
    python bench/hostile.py caps                   # junk bursts, one team filling the spool, slow heads
    python bench/hostile.py all

The test suite runs the same things at CI size (tests/test_security_*.py); this runs them at
length. Only 127.0.0.1 is used. Needs the server and dev extras.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx  # noqa: E402
from hostile_files import BAD_FILES, LINKS, bomb_chunk, leaks_labels  # noqa: E402
from live_server import VARIANT, LiveServer, Variants, auth, make_target, noisy_prediction, reap, upload  # noqa: E402
from memory_watch import RssWatch, vm_hwm_mb  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402


def catalogue(args, tmp: Path) -> None:
    target = make_target(tmp)
    (tmp / "srv").mkdir()
    server = LiveServer(tmp / "srv", [target.path]).start()
    try:
        token = server.add_team("catalogue")
        refused = leaking = 0
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for i, kind in enumerate(LINKS + BAD_FILES):
                path = kind.build(tmp / f"h{i}.h5", target)
                leaks = leaks_labels(path, target)
                r = upload(c, token, path)
                ok = r.status_code == kind.status and re.search(kind.reason, r.json().get("detail", ""))
                alive = c.get("/healthz").status_code == 200
                refused += bool(ok and alive)
                leaking += leaks
                print(f"{'refused' if ok else 'FAILED '} {r.status_code} {'leaks-if-followed ' if leaks else ''}"
                      f"{kind.name}: {r.json().get('detail')}")
            print(f"\n{refused} of {len(LINKS) + len(BAD_FILES)} hostile kinds refused with their reason "
                  f"({leaking} of them would have handed over the hidden labels to a naive reader)")

            bomb = bomb_chunk(tmp / "bomb.h5", target, mib=args.bomb_mib)
            kids = server.children()
            before = {p: vm_hwm_mb(p) for p in kids}
            with RssWatch(server.proc.pid) as w:
                for _ in range(5):
                    r = upload(c, token, bomb)
                    assert r.status_code == 422, r.text
            growth = max(vm_hwm_mb(p) - before[p] for p in kids)
            print(f"gzip bomb ({bomb.stat().st_size / 2**10:.0f} KiB inflating to {args.bomb_mib} MiB) refused 5x: "
                  f"server process peak RSS {w.peak_mb[server.proc.pid]:.0f} MiB, whole tree peak "
                  f"{w.peak_total_mb:.0f} MiB, scoring-child high-water growth {growth:.1f} MiB")
    finally:
        server.stop()


def caps(args, tmp: Path) -> None:
    """The caps decided before the work (second hardening round), at the server's default caps (20 refused uploads a day, 2 uploads of
    a team at once, a 2 GiB spool): a burst of junk, one team filling the spool, slow heads."""
    import socket
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    target = make_target(tmp, shape=(600, 400))
    (tmp / "srv").mkdir()
    env = {"C2SEG_FAILED_PER_DAY": "20", "C2SEG_HEADER_TIMEOUT_S": "60", "C2SEG_UPLOAD_TIMEOUT_S": "120"}
    server = LiveServer(tmp / "srv", [target.path], env=env).start()
    try:
        token = server.add_team("junk")

        def junk(_):
            with httpx.Client(base_url=server.url, timeout=120) as c:
                return upload(c, token, b"not HDF5 " * 1000).status_code

        for burst in (1, 2):
            with ThreadPoolExecutor(args.burst) as ex:
                codes = Counter(ex.map(junk, range(args.burst)))
            print(f"caps: junk burst {burst}: {args.burst} uploads at once from one team: {dict(codes)} "
                  f"(422 = read by a scoring child and refused)")
        with httpx.Client(base_url=server.url) as c:
            print(f"caps: refused uploads recorded for the team: {c.get('/api/v1/me', headers=auth(token)).json()['failed_today']}")

        filler = server.add_team("filler")
        big = random.randbytes(args.spool_mib * 2**20)
        spool, peak, done = server.data_dir / "spool", [0], threading.Event()

        def watch():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], sum(f.stat().st_size for f in spool.glob("upload-*")))
                except OSError:
                    pass
                time.sleep(0.005)

        def fill(_):
            try:
                with httpx.Client(base_url=server.url, timeout=300) as c:
                    return upload(c, filler, big).status_code
            except httpx.HTTPError as e:
                return type(e).__name__

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.fillers) as ex:
            codes = Counter(ex.map(fill, range(args.fillers)))
        done.set()
        watcher.join()
        print(f"caps: one team sends {args.fillers} uploads of {args.spool_mib} MiB at once: {dict(codes)} in "
              f"{time.perf_counter() - t0:.1f} s; spool peak {peak[0] / 2**20:.0f} MiB")

        sockets = []
        for source in [f"127.0.0.{i}" for i in range(2, 7)]:
            for _ in range(60):
                s = socket.create_connection(("127.0.0.1", server.port), timeout=0.05, source_address=(source, 0))
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                sockets.append(s)
        seen = []
        for _ in range(6):
            for s in sockets:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            with httpx.Client(base_url=server.url, timeout=10) as c:
                seen.append(c.get("/healthz").status_code)
            time.sleep(1)
        open_ = 0
        for s in sockets:
            try:
                open_ += s.recv(1) != b""
            except (TimeoutError, BlockingIOError):
                open_ += 1
            except OSError:
                pass
            s.close()
        print(f"caps: 5 addresses x 60 dribbling heads (limit 256 connections): /healthz answers {seen}; "
              f"attacking connections still open {open_}")
    finally:
        server.stop()


LAYOUTS = {
    "gzip": dict(chunks=(256, 256), compression="gzip", shuffle=True),
    "contiguous": {},
    "fletcher32": dict(chunks=(128, 811), fletcher32=True),
    "lzf": dict(chunks=(64, 811), compression="lzf"),
}


def fuzz(args, tmp: Path) -> None:
    import h5py

    from c2seg_server.workers import InvalidUpload, ScoringFailed, ScoringPool

    target = make_target(tmp, shape=(args.rows, 811))
    seeds = []
    for name, kw in LAYOUTS.items():
        p = tmp / f"{name}.h5"
        with h5py.File(p, "w") as f:
            f.attrs["c2seg_format"], f.attrs["track"] = "submission/1", "AB"
            f.create_dataset("prediction", data=noisy_prediction(target.label, 1), **kw)
        seeds.append(p.read_bytes())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    counts = {"ok": 0, "refused": 0, "hang": 0, "crash": 0, "unexpected": 0}
    reasons: dict[str, int] = {}
    path = tmp / "mutant.h5"
    deadline = time.monotonic() + 60 * args.minutes
    kwargs = {"labels": {"AB": str(target.path)}, "seed": 1, "block": 64, "fraction": 0.5, "chunk_rows": 256}
    with ScoringPool(kwargs, workers=1, timeout_s=args.timeout, memory_mb=1024) as pool:
        n = 0
        while time.monotonic() < deadline:
            base = rng.choice(seeds)
            b = bytearray(base)
            for _ in range(rng.randint(1, 8)):
                at = rng.randrange(len(b))
                kind = rng.random()
                if kind < 0.6:
                    b[at] ^= rng.randint(1, 255)
                elif kind < 0.8:
                    ln = rng.randint(1, 64)
                    b[at:at + ln] = bytes(rng.choice((0, 255)) for _ in b[at:at + ln])
                else:
                    src, ln = rng.randrange(len(base)), rng.randint(1, 256)
                    seg = base[src:src + ln]
                    b[at:at + len(seg)] = seg[: len(b) - at]
            if rng.random() < 0.1:
                del b[rng.randint(1, len(b)):]
            path.write_bytes(b)
            try:
                info = pool.call("peek", str(path))
                pool.call("score", str(path), info["track"])
                counts["ok"] += 1
            except InvalidUpload as e:
                counts["refused"] += 1
                key = re.sub(r"\d+", "N", str(e))[:90]
                reasons[key] = reasons.get(key, 0) + 1
            except ScoringFailed as e:
                # HDF5 hangs and crashes are contained by the child's limits; anything else is a
                # reader bug (an unexpected exception instead of a one-line refusal).
                kind = "hang" if "took longer" in str(e) else "crash" if "crashed" in str(e) else "unexpected"
                counts[kind] += 1
                keep = out / f"{kind}-{counts[kind]}.h5"
                keep.write_bytes(b)
                print(f"{kind} ({e}): kept as {keep}", flush=True)
            n += 1
            if n % 500 == 0:
                print(f"{n} files: {counts}", flush=True)
    print(f"\nfuzz: {n} mutated files in {args.minutes} min: {counts}")
    for reason, k in sorted(reasons.items(), key=lambda x: -x[1])[:15]:
        print(f"  {k:>6}  {reason}")


def hammer(server, tokens, files, seconds, stop=None):
    """len(files) client threads uploading for `seconds`; returns (acked, latencies, other codes)."""
    acked, lat, other = [], [], []
    stop = stop or threading.Event()

    def run(i):
        copies = Variants(files[i].read_bytes())  # fresh bytes per upload: an identical re-upload is a 409
        with httpx.Client(base_url=server.url, timeout=300) as c:
            while not stop.is_set():
                data = copies.next()
                t0 = time.perf_counter()
                try:
                    r = upload(c, tokens[i % len(tokens)], data)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    lat.append(time.perf_counter() - t0)
                    acked.append((tokens[i % len(tokens)], r.json()))
                else:
                    other.append(r.status_code)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(files))]
    for t in threads:
        t.start()
    if seconds:
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(300)
    return acked, lat, other, threads


def found_after(server, tokens) -> dict:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        return {s["id"]: s for t in tokens for s in c.get("/api/v1/submissions", headers=auth(t)).json()}


def berlin_files(tmp: Path, target, n: int):
    return [write_submission(tmp / f"p{i}.h5", noisy_prediction(target.label, i), "AB", team=VARIANT) for i in range(n)]


def load(args, tmp: Path) -> None:
    target = make_target(tmp)
    files = berlin_files(tmp, target, args.clients)
    env = {"C2SEG_QUOTA_PER_DAY": "1000000", "C2SEG_SCORING_WORKERS": str(args.scoring_workers)}
    (tmp / "srv").mkdir()
    server = LiveServer(tmp / "srv", [target.path], db_url=args.db, env=env).start()
    try:
        tokens = [server.add_team(f"load{i}") for i in range(args.clients)]
        t0 = time.perf_counter()
        acked, lat, other, _ = hammer(server, tokens, files, args.seconds)
        wall = time.perf_counter() - t0
        found = found_after(server, tokens)
        lost = [s["id"] for _, s in acked if s["id"] not in found or found[s["id"]]["scores"] != s["scores"]]
        q = statistics.quantiles(lat, n=100)
        print(f"load: {args.clients} clients, {wall:.0f} s, Berlin {target.shape[0]}x{target.shape[1]} uploads "
              f"({files[0].stat().st_size / 2**20:.2f} MiB each), {args.scoring_workers} scoring children: "
              f"{len(acked)} accepted = {len(acked) / wall:.2f} submissions/s; latency p50 {q[49]:.2f} s, "
              f"p99 {q[98]:.2f} s, max {max(lat):.2f} s; other answers {sorted(set(other))}; "
              f"lost {len(lost)} (of {len(acked)} acknowledged, {len(found)} in the database)")
    finally:
        server.stop()


def kill9(args, tmp: Path) -> None:
    target = make_target(tmp, shape=(1200, 811))
    files = berlin_files(tmp, target, 8)
    (tmp / "srv").mkdir()
    server = LiveServer(tmp / "srv", [target.path], db_url=args.db).start()
    tokens = [server.add_team(f"k{i}") for i in range(4)]
    total_acked = 0
    try:
        for rnd in range(args.rounds):
            stop = threading.Event()
            acked, _, other, threads = hammer(server, tokens, files, 0, stop)
            time.sleep(rng_delay := random.uniform(3, 8))
            kids = server.kill9()
            n = len(acked)
            stop.set()
            for t in threads:
                t.join(60)
            stray = reap(kids, 30)
            server.start()
            found = found_after(server, tokens)
            lost = [s["id"] for _, s in acked if s["id"] not in found or found[s["id"]]["scores"] != s["scores"]]
            total_acked += n
            print(f"kill -9 round {rnd + 1} after {rng_delay:.1f} s: {n} acknowledged, {len(found)} in the "
                  f"database in all, lost {len(lost)}, scoring children left behind {len(stray)}, other answers {other}")
    finally:
        server.stop()


def api(args, tmp: Path) -> None:
    """schemathesis over HTTP at length: the suite's own test with many more examples per operation."""
    import subprocess

    env = dict(os.environ, C2SEG_FUZZ_EXAMPLES=str(args.examples))
    test = Path(__file__).resolve().parents[1] / "tests" / "test_security_fuzz.py"
    rc = subprocess.call([sys.executable, "-m", "pytest", str(test), "-q", "-k", "schemathesis", "-p", "no:cacheprovider"],
                         env=env)
    print(f"api fuzz: {args.examples} examples per operation and mode: {'passed' if rc == 0 else 'FAILED'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["catalogue", "fuzz", "api", "kill9", "load", "caps", "all"])
    ap.add_argument("--burst", type=int, default=40, help="caps: junk uploads fired at once")
    ap.add_argument("--fillers", type=int, default=20, help="caps: large uploads one team fires at once")
    ap.add_argument("--spool-mib", type=int, default=48, help="caps: size of each large upload")
    ap.add_argument("--examples", type=int, default=500, help="api: schemathesis examples per operation")
    ap.add_argument("--minutes", type=float, default=10, help="fuzz: how long")
    ap.add_argument("--rows", type=int, default=512, help="fuzz: rows of the seed rasters (811 columns)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10, help="fuzz: seconds a scoring child may take per file")
    ap.add_argument("--out", default="fuzz-failures", help="fuzz: where files that fail the reader are kept")
    ap.add_argument("--bomb-mib", type=int, default=1024, help="catalogue: how far the gzip bomb inflates")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--scoring-workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="kill9: how many kills")
    ap.add_argument("--db", help="SQLAlchemy URL (default: SQLite in the server's data folder)")
    args = ap.parse_args()
    for what in (["catalogue", "kill9", "load", "caps", "api", "fuzz"] if args.what == "all" else [args.what]):
        before = os.getloadavg()[0]  # the machine may be shared: the figures say how busy it was
        with tempfile.TemporaryDirectory(prefix=f"c2seg-{what}-") as tmp:
            globals()[what](args, Path(tmp))
        print(f"{what}: load average {before:.1f} before, {os.getloadavg()[0]:.1f} after "
              f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
