"""Support for the security tests (tests/test_security_*.py) and bench/hostile.py.

- `LiveServer`: the real `c2seg serve` in a subprocess on 127.0.0.1 and a free port, with its
  own data folder and database; it can be stopped, killed with SIGKILL and restarted.
- `Target`: the server's hidden labels (Berlin-sized by default) written the way an organizer
  would, plus what an attacker would need to aim at them (the file's path, the data offset).
- `HOSTILE`: the catalogue of hostile files as data, one row per kind: how to build it, the
  status and the reason the server must answer with.
- `RssWatch`: peak resident memory of a process tree, sampled while something runs.

Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from c2seg_kit.submission import write_submission

BERLIN = (2465, 811)
CLI = [sys.executable, "-c", "import sys; from c2seg_kit.cli import main; sys.exit(main())"]


# ---------------------------------------------------------------------------------------------
# The server's labels
# ---------------------------------------------------------------------------------------------


@dataclass
class Target:
    """The hidden labels a server scores against, and the facts an attacker would aim with."""

    path: Path  # the labels.h5 the server was started with
    label: np.ndarray
    track: str = "AB"
    data_offset: int = 0  # byte offset of the contiguous label raster inside `path`

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.label.shape)  # type: ignore[return-value]


def make_target(folder: Path, shape=BERLIN, seed: int = 0, name: str = "SECRET-labels.h5") -> Target:
    """A labels/1 file with a contiguous raster (so external raw storage can map it exactly)."""
    rng = np.random.default_rng(seed)
    label = rng.integers(1, 14, shape, dtype=np.uint8)
    label[rng.random(shape) < 0.15] = 0
    path = Path(folder) / name
    with h5py.File(path, "w") as f:
        f.attrs["c2seg_format"] = "labels/1"
        f.attrs["track"] = "AB"
        dset = f.create_dataset("label", data=label)
        offset = dset.id.get_offset()
    return Target(path=path.resolve(), label=label, data_offset=int(offset))


def noisy_prediction(label: np.ndarray, seed: int, wrong: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pred = label.copy()
    flip = (rng.random(label.shape) < wrong) | (label == 0)
    pred[flip] = rng.integers(1, 14, int(flip.sum()))
    return pred


# ---------------------------------------------------------------------------------------------
# The live server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Settings for test servers: small pools, short limits, room for many refused uploads.
TEST_ENV = {
    "C2SEG_SCORING_WORKERS": "2",
    "C2SEG_SCORING_TIMEOUT_S": "30",
    "C2SEG_SCORING_MEMORY_MB": "1024",
    "C2SEG_FAILED_PER_DAY": "10000",
    "C2SEG_QUOTA_PER_DAY": "1000",
    "C2SEG_LEADERBOARD_CACHE_S": "0",
}


@dataclass
class LiveServer:
    """`c2seg serve` as a subprocess; `url` is http://127.0.0.1:<port>."""

    root: Path
    labels: list[Path]
    db_url: str | None = None
    env: dict = field(default_factory=dict)
    options: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def db(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'c2seg.db'}"

    def start(self, timeout_s: float = 60) -> LiveServer:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("C2SEG_")}
        env.update(TEST_ENV, **self.env, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        args = [*CLI, "serve", *sum((["--labels", str(p)] for p in self.labels), []),
                "--data-dir", str(self.data_dir), "--port", str(self.port), "--log-level", "warning", *self.options]
        if self.db_url:
            args += ["--db", self.db_url]
        self.starts += 1
        log = open(self.root / f"server-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout_s
        import httpx

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not come up in {timeout_s} s: {self.log()[-2000:]}")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("server-*.log")))

    def children(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        kids = self.children()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        reap(kids)

    def kill9(self) -> list[int]:
        """SIGKILL the server process (not its scoring children: they must notice and exit)."""
        kids = self.children()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        return kids

    # -- organizer actions, straight on the database (what `c2seg admin` does) -------------

    @contextlib.contextmanager
    def session(self):
        from c2seg_server.db import make_engine, make_sessionmaker

        engine = make_engine(self.db)
        try:
            with make_sessionmaker(engine)() as s:
                yield s
        finally:
            engine.dispose()

    def add_team(self, name: str) -> str:
        from c2seg_server import crud

        with self.session() as s:
            _, token = crud.add_team(s, name)
        return token

    def revoke(self, name: str) -> None:
        from c2seg_server import crud

        with self.session() as s:
            crud.revoke_team(s, name)

    def set_phase(self, track: str, phase: str) -> None:
        from c2seg_server import crud

        with self.session() as s:
            crud.set_phase(s, track, phase)


def reap(pids: list[int], timeout_s: float = 15) -> list[int]:
    """Wait for processes we started (the server's scoring children) to exit; SIGKILL stragglers.
    Returns the pids that had to be killed."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    return [p.pid for p in alive]


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def upload(client, token: str, path_or_bytes, name: str = "predictions.h5"):
    """POST one file as multipart `file`; returns the httpx response."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return client.post("/api/v1/submissions", headers=auth(token),
                       files={"file": (name, data, "application/x-hdf5")})


# ---------------------------------------------------------------------------------------------
# Peak memory of a process tree
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Hostile files
# ---------------------------------------------------------------------------------------------


def _base(path: Path, track: str = "AB", fmt: str = "submission/1") -> h5py.File:
    f = h5py.File(path, "w")
    if fmt is not None:
        f.attrs["c2seg_format"] = fmt
    if track is not None:
        f.attrs["track"] = track
    return f


def _honest(path: Path, t: Target, **kw) -> Path:
    return write_submission(path, noisy_prediction(t.label, 1), t.track, **kw)


def _dataset(path: Path, t: Target, data=None, *, attrs: dict | None = None, **kw) -> Path:
    attrs = {"c2seg_format": "submission/1", "track": t.track} if attrs is None else attrs
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        if data is not None:
            kw["data"] = data
        f.create_dataset("prediction", **kw)
    return path


def _pred(t: Target, dtype="u1") -> np.ndarray:
    return noisy_prediction(t.label, 2).astype(dtype)


# -- links and storage that reach outside the file (promise 1) ------------------------------


def external_link_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f["prediction"] = h5py.ExternalLink(str(t.path), "/label")
    return p


def external_link_parent_group(p: Path, t: Target) -> Path:
    # /prediction is a soft link into /secret, an external link to the labels file's root.
    with _base(p) as f:
        f["secret"] = h5py.ExternalLink(str(t.path), "/")
        f["prediction"] = h5py.SoftLink("/secret/label")
    return p


def external_link_beside(p: Path, t: Target) -> Path:
    # An honest prediction, plus a group link to the labels file that a careless reader may follow.
    _honest(p, t)
    with h5py.File(p, "a") as f:
        f["extra"] = h5py.ExternalLink(str(t.path), "/")
    return p


def external_link_in_group(p: Path, t: Target) -> Path:
    # The external link sits one level down, in a hard group, where visititems would skip it.
    _honest(p, t)
    with h5py.File(p, "a") as f:
        f.create_group("g")["labels"] = h5py.ExternalLink(str(t.path), "/label")
    return p


def soft_link_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_dataset("hidden", data=_pred(t))
        f["prediction"] = h5py.SoftLink("/hidden")
    return p


def virtual_dataset(p: Path, t: Target) -> Path:
    with _base(p) as f:
        layout = h5py.VirtualLayout(t.shape, "u1")
        layout[...] = h5py.VirtualSource(str(t.path), "label", t.shape)
        f.create_virtual_dataset("prediction", layout)
    return p


def external_raw_storage(p: Path, t: Target) -> Path:
    with _base(p) as f:
        n = t.label.size
        f.create_dataset("prediction", shape=t.shape, dtype="u1", external=[(str(t.path), t.data_offset, n)])
    return p


def unknown_filter(p: Path, t: Target, code: int = 32004) -> Path:
    # 32004 is LZ4's registered id: no plugin of that id is built in, HDF5 would search for one.
    pred = _pred(t)
    with _base(p) as f:
        d = f.create_dataset("prediction", shape=t.shape, dtype="u1", chunks=(512, t.shape[1]),
                             compression=code, allow_unknown_filter=True)
        for r0 in range(0, t.shape[0], 512):
            block = np.zeros((512, t.shape[1]), np.uint8)
            rows = pred[r0:r0 + 512]
            block[: rows.shape[0]] = rows
            d.id.write_direct_chunk((r0, 0), block.tobytes())
    return p


# -- bad files (promise 2) --------------------------------------------------------------------


def not_hdf5(p: Path, t: Target) -> Path:
    p.write_bytes(b"PK\x03\x04" + os.urandom(4096))
    return p


def zero_bytes(p: Path, t: Target) -> Path:
    p.write_bytes(b"")
    return p


def truncated(p: Path, t: Target) -> Path:
    data = _honest(p, t).read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def header_only(p: Path, t: Target) -> Path:
    data = _honest(p, t).read_bytes()
    p.write_bytes(data[:96])
    return p


def bomb_declared_shape(p: Path, t: Target) -> Path:
    # A few KiB declaring 10^10 pixels (10 GB once read).
    return _dataset(p, t, shape=(100_000, 100_000), dtype="u1", chunks=(256, 256), compression="gzip")


def _zeros_stream(mib: int) -> bytes:
    comp = zlib.compressobj(6)
    zeros = bytes(1 << 20)
    return b"".join(comp.compress(zeros) for _ in range(mib)) + comp.flush()


def bomb_chunk(p: Path, t: Target, mib: int = 256) -> Path:
    """Correct shape, one chunk for the whole raster (2 MB); its gzip stream (~mib KiB, smaller
    than the chunk) inflates to `mib` MiB of zeros."""
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=t.shape, compression="gzip")
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), _zeros_stream(mib))
    return p


def bomb_chunk_oversized(p: Path, t: Target, mib: int = 512) -> Path:
    """Correct shape, 256-row chunks; the first one is stored as ~0.5 MiB (more than its own
    raw size) and inflates to `mib` MiB."""
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=(256, t.shape[1]), compression="gzip")
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), _zeros_stream(mib))
    return p


def gigantic_chunk(p: Path, t: Target) -> Path:
    # Right shape, but a finite maxshape 8x larger lets one int64 chunk declare 2x the dataset.
    h, w = t.shape
    return _dataset(p, t, shape=t.shape, dtype="i8", maxshape=(8 * h, 8 * w), chunks=(2 * h, 2 * w))


def tiny_chunks(p: Path, t: Target) -> Path:
    # 1 x 16 chunks: a chunk index of ~125,000 entries for a Berlin raster, each a step to read.
    return _dataset(p, t, shape=t.shape, dtype="u1", chunks=(1, 16), compression="gzip")


def unlimited_maxshape(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), maxshape=(None, None), chunks=(256, 256))


def subarray_dtype(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=t.shape, dtype=np.dtype(("u1", (16,))), chunks=(64, 64))


def long_strings(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=t.shape, dtype="S100000", chunks=(1, 1))


def vlen_strings(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=(4, 4), dtype=h5py.string_dtype())


def enum_dtype(p: Path, t: Target) -> Path:
    e = h5py.enum_dtype({f"c{i}": i for i in range(14)}, basetype="u1")
    return _dataset(p, t, _pred(t), dtype=e)


def bool_dtype(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t) > 5)


def compound_dtype(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=t.shape, dtype=np.dtype([("cls", "u1"), ("p", "f4")]))


def opaque_dtype(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=t.shape, dtype=np.dtype("V2"))


def odd_precision(p: Path, t: Target) -> Path:
    # A 16-bit container declaring 12 significant bits: values would be read through a conversion.
    with _base(p) as f:
        tid = h5py.h5t.STD_U16LE.copy()
        tid.set_precision(12)
        space = h5py.h5s.create_simple(t.shape)
        h5py.h5d.create(f.id, b"prediction", tid, space)
    return p


def empty_dataspace(p: Path, t: Target) -> Path:
    return _dataset(p, t, h5py.Empty("u1"))


def zero_rows(p: Path, t: Target) -> Path:
    return _dataset(p, t, shape=(0, t.shape[1]), dtype="u1")


def scalar(p: Path, t: Target) -> Path:
    return _dataset(p, t, np.uint8(3))


def many_objects(p: Path, t: Target) -> Path:
    _honest(p, t)
    with h5py.File(p, "a") as f:
        for i in range(5000):
            f.create_group(f"g{i}")
    return p


def many_attributes(p: Path, t: Target) -> Path:
    _honest(p, t)
    with h5py.File(p, "a") as f:
        for i in range(2000):
            f["prediction"].attrs[f"a{i}"] = i
    return p


def deep_nesting(p: Path, t: Target) -> Path:
    _honest(p, t)
    with h5py.File(p, "a") as f:
        f.create_group("/".join(f"d{i}" for i in range(60)))
    return p


def float_nan_inf(p: Path, t: Target) -> Path:
    data = _pred(t, "f4")
    data[0, 0], data[0, 1], data[0, 2] = np.nan, np.inf, -np.inf
    return _dataset(p, t, data)


def float_whole_numbers(p: Path, t: Target) -> Path:
    # 0.0..13.0 exactly: still refused, a reader must not cast floats to class ids.
    return _dataset(p, t, _pred(t, "f4"))


def wrong_rank(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t)[None])


def wrong_shape(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t)[:, :-1])


def transposed(p: Path, t: Target) -> Path:
    return _dataset(p, t, np.ascontiguousarray(_pred(t).T))


def value_14(p: Path, t: Target) -> Path:
    data = _pred(t)
    data[7, 7] = 14
    return _dataset(p, t, data)


def value_256_in_int16(p: Path, t: Target) -> Path:
    # 256 would wrap to class 0 in a uint8 cast: it must be refused, not silently cast.
    data = _pred(t, "i2")
    data[-1, -1] = 256
    return _dataset(p, t, data)


def negative_int8(p: Path, t: Target) -> Path:
    data = _pred(t, "i1")
    data[3, 3] = -1
    return _dataset(p, t, data)


def track_unserved(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "submission/1", "track": "BW"})


def track_missing(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "submission/1"})


def track_unknown(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "submission/1", "track": "XY"})


def track_not_text(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "submission/1", "track": np.arange(3)})


def format_missing(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"track": t.track})


def format_labels(p: Path, t: Target) -> Path:
    # The hidden labels' own format: a labels file is not a submission.
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "labels/1", "track": t.track})


def long_attribute(p: Path, t: Target) -> Path:
    return _dataset(p, t, _pred(t), attrs={"c2seg_format": "submission/1", "track": t.track, "method": "x" * 20000})


def no_prediction(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_dataset("predictions", data=_pred(t))
    return p


def prediction_is_group(p: Path, t: Target) -> Path:
    with _base(p) as f:
        f.create_group("prediction").create_dataset("data", data=_pred(t))
    return p


def corrupt_checksum(p: Path, t: Target) -> Path:
    _dataset(p, t, _pred(t), chunks=(256, t.shape[1]), fletcher32=True)
    with h5py.File(p, "r") as f:
        offset = f["prediction"].id.get_chunk_info(0).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(offset + 100)
        b = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([b[0] ^ 0xFF]))
    return p


def truncated_chunk(p: Path, t: Target) -> Path:
    _dataset(p, t, shape=t.shape, dtype="u1", chunks=(256, t.shape[1]), compression="gzip")
    stream = zlib.compress(_pred(t)[:256].tobytes())
    with h5py.File(p, "a") as f:
        f["prediction"].id.write_direct_chunk((0, 0), stream[: len(stream) // 2])
    return p


def global_heap_loop(p: Path, t: Target) -> Path:
    """Text attributes live in the file's global heap; an object of size 0 followed by a zeroed
    object header makes HDF5 (2.0.0) loop for ever when the attribute is read. Found by
    tests/test_security_fuzz.py; only the scoring child's time limit stops it."""
    _dataset(p, t, _pred(t))
    data = bytearray(p.read_bytes())
    at = data.index(b"GCOL")
    data[at + 24:at + 48] = bytes(24)
    p.write_bytes(bytes(data))
    return p


@dataclass(frozen=True)
class Hostile:
    name: str
    build: Callable[[Path, Target], Path]
    reason: str  # a regular expression the one-line detail must match
    leaks: bool = False  # read naively (h5py following links), the file yields the hidden labels
    status: int = 422


#: Promise 1: files that reach outside themselves, aimed at the server's own labels file.
LINKS = [
    Hostile("external link on the dataset", external_link_dataset, r"'/prediction' is an external link", leaks=True),
    Hostile("external link on a parent group", external_link_parent_group, r"'/prediction' is a soft link", leaks=True),
    Hostile("external link beside an honest dataset", external_link_beside, r"'/extra' is an external link"),
    Hostile("external link inside a group", external_link_in_group, r"'/g/labels' is an external link"),
    Hostile("soft link", soft_link_dataset, r"'/prediction' is a soft link"),
    Hostile("virtual dataset mapped to the labels", virtual_dataset, r"virtual dataset", leaks=True),
    Hostile("external raw storage in the labels file", external_raw_storage, r"external raw storage", leaks=True),
    Hostile("unknown filter (plugin id 32004)", unknown_filter, r"filter id 32004, which is not built in"),
]

#: Promise 2: files that are broken, lie about their size or hide dimensions.
BAD_FILES = [
    Hostile("non-HDF5 bytes", not_hdf5, r"not an HDF5 file"),
    Hostile("zero-byte file", zero_bytes, r"is empty \(0 bytes\)"),
    Hostile("truncated file", truncated, r"truncated"),
    Hostile("header only", header_only, r"truncated|not a readable HDF5"),
    Hostile("gzip bomb: declares 10^10 pixels", bomb_declared_shape, r"100000 x 100000 (pixels, far more than the target|, expected)"),
    Hostile("gzip bomb: 2 MB chunk inflates to 256 MiB", bomb_chunk, r"inflates beyond its declared .* \(a compression bomb\)"),
    Hostile("gzip bomb: chunk stored larger than itself", bomb_chunk_oversized, r"chunk stored larger than its own size"),
    Hostile("gigantic chunk (finite maxshape)", gigantic_chunk, r"chunks .* larger than the dataset"),
    Hostile("125,000 tiny chunks", tiny_chunks, r"is split into \d+ chunks of 1 x 16"),
    Hostile("unlimited maxshape", unlimited_maxshape, r"unlimited maxshape"),
    Hostile("sub-array dtype", subarray_dtype, r"array \(a sub-array dtype hides extra dimensions\)"),
    Hostile("long fixed strings", long_strings, r"got string data"),
    Hostile("variable-length strings", vlen_strings, r"got string data"),
    Hostile("enum dtype", enum_dtype, r"got enum"),
    Hostile("bool dtype", bool_dtype, r"got enum \(booleans"),
    Hostile("compound dtype", compound_dtype, r"got compound data"),
    Hostile("opaque dtype", opaque_dtype, r"got opaque data"),
    Hostile("12-bit integer in 16 bits", odd_precision, r"unusual integer type"),
    Hostile("empty dataspace", empty_dataspace, r"is empty \(no dataspace\)"),
    Hostile("zero rows", zero_rows, r"is empty \(shape 0 x"),
    Hostile("scalar", scalar, r"got a scalar"),
    Hostile("5000 groups", many_objects, r"too many objects"),
    Hostile("2000 attributes", many_attributes, r"too many attributes"),
    Hostile("60 nested groups", deep_nesting, r"nested too deeply"),
    Hostile("float with NaN/inf", float_nan_inf, r"got floating point data"),
    Hostile("float holding whole numbers", float_whole_numbers, r"got floating point data"),
    Hostile("3-D", wrong_rank, r"must be 2-D \(H x W\), got 3-D"),
    Hostile("one column short", wrong_shape, r"has shape 2465 x 810, expected 2465 x 811"),
    Hostile("transposed", transposed, r"has shape 811 x 2465, expected 2465 x 811"),
    Hostile("value 14", value_14, r"1 values outside 0\.\.13 \(seen: 14\)"),
    Hostile("256 in int16 (would wrap to 0)", value_256_in_int16, r"1 values outside 0\.\.13 \(seen: 256\)"),
    Hostile("-1 in int8", negative_int8, r"1 values outside 0\.\.13 \(seen: -1\)"),
    Hostile("track not served", track_unserved, r"does not score track 'BW'"),
    Hostile("track missing", track_missing, r"missing root attribute 'track'"),
    Hostile("track unknown", track_unknown, r"unknown track"),
    Hostile("track not text", track_not_text, r"attribute 'track' must be a text string"),
    Hostile("format missing", format_missing, r"missing root attribute 'c2seg_format'"),
    Hostile("labels format", format_labels, r"'c2seg_format' is labels/1, expected 'submission/1'"),
    Hostile("20000-character attribute", long_attribute, r"attribute 'method' is too long"),
    Hostile("no prediction dataset", no_prediction, r"missing dataset 'prediction'"),
    Hostile("prediction is a group", prediction_is_group, r"must be a dataset, got a group"),
    Hostile("corrupt checksum", corrupt_checksum, r"could not be read: the file is truncated or corrupt"),
    Hostile("truncated compressed chunk", truncated_chunk, r"truncated compressed chunk"),
    # refused by the reader before HDF5 parses the heap; the peek timeout is the second line of defence
    Hostile("global heap that loops HDF5", global_heap_loop,
            r"damaged global heap|reading the file took longer than \d+ s"),
]


def naive_read(path: Path) -> np.ndarray | None:
    """What a careless reader gets: h5py following every link; None when it cannot read."""
    try:
        with h5py.File(path, "r") as f:
            return f["prediction"][...]
    except Exception:  # noqa: BLE001 - any failure means "nothing read"
        return None


def leaks_labels(path: Path, t: Target) -> bool:
    """Whether a naive reader of `path` would get exactly the hidden labels."""
    got = naive_read(path)
    return got is not None and got.dtype == t.label.dtype and got.shape == t.shape and bool((got == t.label).all())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def live_server_fixtures(*, shape=BERLIN, env: dict | None = None, options: list[str] | None = None,
                         client_timeout: float = 60):
    """Module-scoped `target`, `server` and `client` fixtures: one live server with these settings.

    In a test module: ``target, server, client = live_server_fixtures(env={...})``.
    """
    import httpx
    import pytest

    @pytest.fixture(scope="module")
    def target(tmp_path_factory):
        return make_target(tmp_path_factory.mktemp("labels"), shape=shape)

    @pytest.fixture(scope="module")
    def server(tmp_path_factory, target):
        srv = LiveServer(tmp_path_factory.mktemp("server"), [target.path], env=dict(env or {}),
                         options=list(options or []))
        srv.start()
        yield srv
        srv.stop()

    @pytest.fixture(scope="module")
    def client(server):
        with httpx.Client(base_url=server.url, timeout=client_timeout) as c:
            yield c

    return target, server, client
