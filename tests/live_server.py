"""The live-server harness: the real `c2seg serve` in a subprocess, for the security tests
(tests/test_security_*.py) and bench/hostile.py.

- `Target`: the server's hidden labels (Berlin-sized by default) written the way an organizer
  would, plus what an attacker would need to aim at them (the file's path, the data offset);
  `noisy_prediction` makes an honest, imperfect prediction of them.
- `LiveServer`: `c2seg serve` on 127.0.0.1 and a free port, with its own data folder and
  database; it can be stopped, killed with SIGKILL and restarted, and acts as the organizer
  (teams, revocations, phases) straight on its database.
- `live_server_fixtures`: module-scoped `target`, `server` and `client` pytest fixtures.
- `auth`, `upload`: a participant's requests; `free_port`, `reap`: ports and child processes;
  `Variants`: fresh bytes of one prediction per upload (an identical re-upload is a 409);
  `connect`, `post_head`, `read_response`: raw sockets, for requests sent a piece at a time.

The hostile files live in hostile_files.py, the memory watcher in memory_watch.py. Nothing here
talks to anything but loopback.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

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


#: Write a submission with team=VARIANT, and Variants(bytes) gives the same prediction in new bytes
#: at every call: a team's byte-identical re-upload is answered 409 (not scored, not charged), so
#: load that re-sends one prediction needs a fresh copy each time.
VARIANT = "variant-0000000000"


class Variants:
    """Copies of one submission file's bytes, each with another number in its `team` attribute
    (same length, so the file stays valid). The numbers come from one counter for the whole
    process (itertools.count: thread-safe), so no two copies are alike, even of two Variants of
    the same file (e.g. a client that starts again after a restart)."""

    _numbers = itertools.count(1)

    def __init__(self, data: bytes):
        if data.count(VARIANT.encode()) != 1:
            raise ValueError(f"write the file with team={VARIANT!r}")
        self.data = data

    def next(self) -> bytes:
        return self.data.replace(VARIANT.encode(), f"variant-{next(Variants._numbers):010d}".encode())


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


def wait_for(predicate, timeout_s: float = 15, what: str = "", every_s: float = 0.05) -> None:
    """Poll `predicate` until it holds (instead of sleeping for a guessed time); fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(every_s)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def upload(client, token: str, path_or_bytes, name: str = "predictions.h5"):
    """POST one file as multipart `file`; returns the httpx response."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return client.post("/api/v1/submissions", headers=auth(token),
                       files={"file": (name, data, "application/x-hdf5")})



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


# ---------------------------------------------------------------------------------------------
# Raw sockets: requests sent a piece at a time (a head without its body, a body that stalls)
# ---------------------------------------------------------------------------------------------


def connect(server, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """A TCP connection to the server from `source` (any 127.x.y.z address is loopback on Linux)."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", server.port))
    return s


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """(status, whole response bytes) until the server closes or the response is complete."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
                      if k.strip().lower() == b"content-length"]
            if length and len(body) >= length[0]:
                break
    return (int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0), data


def post_head(token: str | None, length: int | None, boundary: str = "b0undary",
              target: str = "/api/v1/submissions") -> bytes:
    """The head of an upload (Content-Length `length`, or chunked when None), without its body."""
    lines = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Type: multipart/form-data; boundary={boundary}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
