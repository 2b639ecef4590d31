"""The memory watcher: how much resident memory a process tree takes while something runs.

Used where a stated bound on memory is checked (tests/test_security_files.py refusing a gzip
bomb) or measured (bench/hostile.py):

- `vm_hwm_mb(pid)`: the kernel's high-water mark of one process (what it ever held);
- `RssWatch(pid)`: samples a process and its children every few ms while a `with` block runs;
  `.peak_mb` per pid, `.peak_total_mb` for the tree.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


def vm_hwm_mb(pid: int) -> float | None:
    """The kernel's high-water mark of a process's resident memory (Linux), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssWatch:
    """Samples the RSS of a process and its children every few ms; `.peak_mb` per pid and in sum."""

    def __init__(self, pid: int, every_s: float = 0.005):
        self.pid, self.every_s = pid, every_s
        self.peak_mb: dict[int, float] = {}
        self.peak_total_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            total = 0.0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    mb = p.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    continue
                total += mb
                self.peak_mb[p.pid] = max(self.peak_mb.get(p.pid, 0.0), mb)
            self.peak_total_mb = max(self.peak_total_mb, total)
            time.sleep(self.every_s)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
