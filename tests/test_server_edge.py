"""Slow connections from several addresses cannot deny service.

Five loopback addresses (127.0.0.2 ... 127.0.0.6) each hold 60 connections that dribble a
request head (a header line a second, never finished): 300 in all, under the per-address cap
(64) and over the server's 256-connection limit. Before, those held every connection and an
honest client got 503 from `/healthz`. Now at most half the limit may wait for a head: the
longest-waiting are closed as others arrive, and the honest client is served. The head timeout
is raised to a minute here, so that only this bound can be what saves it.
"""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from live_server import VARIANT, Variants, connect, live_server_fixtures, noisy_prediction, upload  # noqa: E402

from c2seg_kit.submission.writers import write_submission  # noqa: E402

ATTACKERS = [f"127.0.0.{i}" for i in range(2, 7)]
PER_ADDRESS = 60
LIMIT = 256  # `c2seg serve --limit-concurrency` default
WAITING = LIMIT // 2  # connections that may wait for a request head

target, server, client = live_server_fixtures(shape=(96, 64), client_timeout=20,
                                              env={"C2SEG_HEADER_TIMEOUT_S": "60"})


def is_closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except OSError:
        return True


def dribble(sockets: list, alive: set) -> None:
    """One more header line on every attacking connection still open."""
    for i in list(alive):
        try:
            sockets[i].sendall(b"X-Slow: 1\r\n")
        except OSError:
            alive.discard(i)


def test_slow_heads_from_five_addresses_do_not_deny_an_honest_client(server, client, target, tmp_path):
    token = server.add_team("honest")
    good = write_submission(tmp_path / "p.h5", noisy_prediction(target.label, 1), "AB", team=VARIANT)
    copies = Variants(good.read_bytes())
    sockets = []
    try:
        for source in ATTACKERS:
            for _ in range(PER_ADDRESS):
                s = connect(server, source, timeout=0.05)
                try:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                except OSError:
                    pass
                sockets.append(s)
        alive = set(range(len(sockets)))
        served = []
        for _ in range(6):  # six seconds of dribbling, bounded
            dribble(sockets, alive)
            with httpx.Client(base_url=server.url, timeout=10) as fresh:  # a new connection each time
                served.append(fresh.get("/healthz").status_code)
            time.sleep(1)
        assert served == [200] * 6
        assert upload(client, token, copies.next()).status_code == 201
        dribble(sockets, alive)
        still_open = [i for i in alive if not is_closed(sockets[i])]
        # the attackers only displaced each other: at most the bound of them is left waiting
        assert len(still_open) <= WAITING, len(still_open)
        assert len(still_open) >= WAITING - 10  # and the bound is what closed the others, not a timeout
    finally:
        for s in sockets:
            s.close()
    assert client.get("/healthz").status_code == 200

