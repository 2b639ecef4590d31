"""A small pool of scoring child processes.

Uploads are parsed by HDF5, a C library: a hostile file could crash it, make it allocate
without bound or loop forever. So parsing and scoring happen in long-lived child processes,
each under an address-space limit (RLIMIT_AS), and every job has a wall-clock timeout. A
child that crashes, runs out of memory or times out is killed and replaced; the request gets
a 422 and the server keeps serving. The pool size bounds how many uploads are scored at once.

An upload is parsed once: the child that admits it (``peek``) keeps the file open, and the
pool hands its ``score`` to that child when it is free (the header's ticket names it); only
when it is busy, or died meanwhile, does another child open the file again.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .scoring import Header

# Threads a numeric library may start in a child: one each, so N children use N cores.
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: How long a child keeps a file it admitted (peek) open for its scoring while no job arrives:
#: between the two the server only takes a few short transactions. A score that comes later
#: opens the file again.
HOLD_S = 30.0


class ScoringFailed(Exception):
    """The child could not finish the job: crashed, hit its memory limit or timed out."""


class InvalidUpload(Exception):
    """The reader refused the file; the message is its one-line reason."""


def _child_main(fd: int) -> None:
    import resource

    conn = Connection(fd)
    # The configuration comes over the socket, not the command line: it holds the secret split
    # seed, and any local user can read a process's command line.
    scorer_kwargs, memory_bytes = conn.recv()
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file behind
    from c2seg_kit.errors import C2SegError

    from .scoring import Scorer

    scorer = Scorer(**scorer_kwargs)
    while True:
        try:
            if scorer.holding() and not conn.poll(HOLD_S):
                scorer.release()  # the upload was refused after its header was read: its file goes
                continue
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        verb, args = msg
        try:
            reply = ("ok", getattr(scorer, verb)(*args))
        except C2SegError as e:
            reply = ("invalid", str(e))
        except MemoryError:
            reply = ("failed", "the file needs more memory than the server allows")
        except Exception as e:  # noqa: BLE001 - reported by type only: messages may carry paths
            reply = ("failed", f"the file could not be read ({type(e).__name__})")
        conn.send(reply)


@dataclass
class _Child:
    """One scoring child: `python -m c2seg_server.workers`, talking over a socket pair.

    A plain subprocess rather than multiprocessing's spawn: spawn re-imports the parent's
    __main__ module, which may be any script that built the app.
    """

    scorer_kwargs: dict
    memory_bytes: int
    proc: subprocess.Popen | None = None
    conn: Connection | None = None

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ, **dict.fromkeys(_THREAD_ENV, "1"))
        self.proc = subprocess.Popen([sys.executable, "-m", "c2seg_server.workers", str(theirs.fileno())],
                                     pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send((self.scorer_kwargs, self.memory_bytes))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            code = self.proc.wait(10)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None
        return code

    def call(self, msg, timeout: float):
        if not self.alive():
            self.kill()
            self.start()
        try:
            self.conn.send(msg)
            if not self.conn.poll(timeout):
                self.kill()
                raise ScoringFailed(f"reading the file took longer than {timeout:g} s")
            status, value = self.conn.recv()
        except (EOFError, OSError):
            code = self.kill()
            raise ScoringFailed(f"the file crashed the reader (exit status {code})") from None
        if status == "ok":
            return value
        if status == "invalid":
            raise InvalidUpload(value)
        raise ScoringFailed(value)


class ScoringPool:
    """N scoring children; `call` blocks until one is free (so at most N jobs run at once)."""

    def __init__(self, scorer_kwargs: dict, *, workers: int = 2, timeout_s: float = 120.0, memory_mb: int = 2048):
        self.timeout_s = timeout_s
        self._children = [_Child(scorer_kwargs, memory_mb * 1024 * 1024) for _ in range(workers)]
        self._idle: list[_Child] = list(self._children)
        self._free = threading.Condition()
        self._tickets: dict[int, str] = {}  # id(child) -> the ticket of the file it keeps open
        self.size = workers

    def start(self, warm: bool = True) -> None:
        for c in self._children:
            c.start()
        if warm:  # load and split the labels now rather than in the first request
            for c in self._children:
                c.call(("warm", ()), self.timeout_s)

    def _take(self, ticket: str | None) -> _Child:
        """The idle child that keeps the file of ``ticket`` open, else an idle one keeping none,
        else any idle one (waiting for one to be free)."""
        with self._free:
            while not self._idle:
                self._free.wait()
            mine = [c for c in self._idle if ticket is not None and self._tickets.get(id(c)) == ticket]
            child = (mine or [c for c in self._idle if id(c) not in self._tickets] or self._idle)[0]
            self._idle.remove(child)
            self._tickets.pop(id(child), None)  # any other job makes it close the file
            return child

    def _give_back(self, child: _Child, ticket: str | None) -> None:
        with self._free:
            if ticket is not None:
                self._tickets[id(child)] = ticket
            self._idle.append(child)
            self._free.notify()

    def call(self, verb: str, *args, timeout_s: float | None = None):
        ticket = next((a.ticket for a in args if isinstance(a, Header)), None)
        child = self._take(ticket)
        kept = None
        try:
            out = child.call((verb, args), timeout_s or self.timeout_s)
            kept = out.ticket if isinstance(out, Header) else None
            return out
        finally:
            self._give_back(child, kept)

    def close(self) -> None:
        for c in self._children:
            if c.conn is not None:
                try:
                    c.conn.send(None)
                except OSError:
                    pass
            if c.proc is not None:
                try:
                    c.proc.wait(2)
                except subprocess.TimeoutExpired:
                    pass
            c.kill()

    def __enter__(self) -> ScoringPool:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
