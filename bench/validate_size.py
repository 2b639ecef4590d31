"""Benchmark: CPU time to validate a submission against its file size, for crafted files up to the
server's upload cap (the global heap walk must stay linear; the figure in SECURITY.md).

    python bench/validate_size.py [--sizes 1 2 4 ... 256] [--runs 3] [--kinds random interleaved ...]
    PYTHONPATH=/path/to/an/older/checkout python bench/validate_size.py --sizes 1.0625 1.125 1.25 --cpu-limit 60

Each file is an honest Berlin-size submission (2465 x 811, gzip, about 1.1 MB) followed by a
crafted tail of global heap collections (tests/hostile_heaps.py): "random" (no structure: the scan
alone), "interleaved" (a valid collection starting every 32 bytes, each running to the end of the
file: the tail that made the old walk quadratic), "one-long-chain" (one collection of tiny
objects), "other-versions" (a "GCOL" magic every 16 bytes) and "spread-1000" (1000 valid nested
collections over random bytes). It is validated in this process as `c2seg validate` does
(open_submission + check_values); the time is the CPU time of the process (all threads), the
median of --runs. A run past --cpu-limit CPU seconds is stopped and shown as "> LIMIT". The goal:
every file under the cap accepted or refused in under 2 s of CPU.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hostile_heaps import TAILS  # noqa: E402

from c2seg_kit.errors import C2SegError  # noqa: E402
from c2seg_kit.submission.readers import open_submission  # noqa: E402

MB = 1 << 20
try:  # the server's upload cap, when the server package is installed
    from c2seg_server.config import Settings

    UPLOAD_CAP = Settings.model_fields["max_upload_bytes"].default
except ImportError:  # pragma: no cover - core-only install
    UPLOAD_CAP = 256 * MB


def honest_submission(path: Path) -> bytes:
    """A Berlin-size submission in the kit's layout, written with h5py alone (so this script also
    runs against older checkouts of the kit, for a side-by-side figure)."""
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 14, (2465, 811), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs.update({"c2seg_format": "submission/1", "track": "AB", "team": "bench", "method": "random"})
        f.create_dataset("prediction", data=pred, chunks=(256, 811), compression="gzip", compression_opts=4)
    return path.read_bytes()


class CpuLimit(Exception):
    pass


def _on_limit(signum, frame):
    raise CpuLimit


def validate_cpu(path: Path, limit: float) -> tuple[float, str]:
    """CPU seconds to validate ``path`` and the outcome: "accepted" or the refusal, shortened."""
    signal.signal(signal.SIGPROF, _on_limit)
    signal.setitimer(signal.ITIMER_PROF, limit)  # counts this process's CPU time
    t0 = time.process_time()
    try:
        with open_submission(path) as sub:
            sub.check_values()
        outcome = "accepted"
    except C2SegError as e:
        outcome = "refused: " + str(e).split(" (")[0].replace("submission ", "")
    except CpuLimit:
        outcome = "stopped"
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return time.process_time() - t0, outcome


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = [1.25] + [2.0**k for k in range(1, 30) if 2**k * MB <= UPLOAD_CAP]
    ap.add_argument("--sizes", type=float, nargs="+", default=sizes, help="file sizes in MiB (default: 1.25, 2, 4 .. the cap)")
    ap.add_argument("--kinds", nargs="+", default=list(TAILS), choices=list(TAILS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cpu-limit", type=float, default=60.0, help="stop a validation after this many CPU seconds")
    ap.add_argument("--tmp", type=Path, help="folder for the crafted files (default: a temporary folder)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        honest = honest_submission(Path(tmp) / "honest.h5")
        print(f"honest part {len(honest) / MB:.2f} MiB; upload cap {UPLOAD_CAP / MB:.0f} MiB; "
              f"CPU seconds, median of {args.runs}")
        print(f"{'tail':<16} {'file MiB':>9} {'CPU s':>8}  outcome")
        for kind in args.kinds:
            for size in args.sizes:
                tail = int(size * MB) - len(honest)
                if tail <= 0:
                    continue
                path = Path(tmp) / "crafted.h5"
                path.write_bytes(honest + TAILS[kind](tail))
                runs = [validate_cpu(path, args.cpu_limit)]
                while len(runs) < args.runs and runs[0][1] != "stopped":
                    runs.append(validate_cpu(path, args.cpu_limit))
                cpu = statistics.median(t for t, _ in runs)
                shown = f"> {args.cpu_limit:.0f}" if runs[0][1] == "stopped" else f"{cpu:.3f}"
                print(f"{kind:<16} {path.stat().st_size / MB:>9.2f} {shown:>8}  {runs[0][1]}", flush=True)
                path.unlink()
                if runs[0][1] == "stopped":
                    break  # larger files of this kind only take longer


if __name__ == "__main__":
    main()
