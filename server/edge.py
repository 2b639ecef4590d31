"""The connection edge: uvicorn's h11 protocol with a request-head timeout, a per-client cap and
a bound on connections waiting for a request head.

uvicorn times out idle keep-alive connections but not a request head that never finishes: a
client that opens connections and sends a header line now and then (slowloris) holds each one
for ever, and once `--limit-concurrency` connections are held every other client gets 503.
This protocol

- closes a connection whose request head has not fully arrived within `header_timeout_s` of
  the connection opening (or of the previous response);
- refuses more than `max_connections_per_client` simultaneous connections from one address;
- lets at most `max_waiting_heads` connections (of all addresses together; default: half of
  `--limit-concurrency`) wait for a request head: past that, the one that has waited longest
  is closed. A per-address cap alone does not do: five addresses holding 60 dribbling
  connections each filled the 256 connections of the default limit, and `/healthz` got 503.
  Now attackers only ever displace each other, while a client whose head arrives at once is
  served, and connections with a request in progress are never touched.

Request bodies are bounded by the upload route itself (size cap and `upload_timeout_s`), and
every other route's by bodies.py (the token first, then 32 KiB within the head's time).

Settings come from the environment like the rest (C2SEG_HEADER_TIMEOUT_S, default 10;
C2SEG_MAX_CONNECTIONS_PER_CLIENT, default 64, 0 = no cap: set 0 behind a reverse proxy, where
every connection comes from the proxy's address and the proxy enforces its own limits;
C2SEG_MAX_WAITING_HEADS, 0 = no bound).
"""

from __future__ import annotations

import os
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = float(os.environ.get("C2SEG_HEADER_TIMEOUT_S", "10"))
MAX_CONNECTIONS_PER_CLIENT = int(os.environ.get("C2SEG_MAX_CONNECTIONS_PER_CLIENT", "64"))
#: None: half of the server's --limit-concurrency (128 without one).
MAX_WAITING_HEADS = int(os.environ["C2SEG_MAX_WAITING_HEADS"]) if os.environ.get("C2SEG_MAX_WAITING_HEADS") else None

#: Open connections per client address, in this server process.
_open: Counter[str] = Counter()
#: Connections of this process waiting for a request head, longest-waiting first (a dict keeps
#: insertion order, and removing any one of them is O(1)).
_waiting: dict[GuardedH11Protocol, None] = {}


class GuardedH11Protocol(H11Protocol):
    """`uvicorn.run(..., http=GuardedH11Protocol)`."""

    _head_timer = None
    _peer: str | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._peer = peer[0] if isinstance(peer, tuple) and peer else None
        if self._peer is not None:
            _open[self._peer] += 1
            if MAX_CONNECTIONS_PER_CLIENT and _open[self._peer] > MAX_CONNECTIONS_PER_CLIENT:
                transport.close()  # nothing was read: just hang up
                return
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        _waiting.pop(self, None)
        if self._peer is not None:
            _open[self._peer] -= 1
            if _open[self._peer] <= 0:
                del _open[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request head is complete (or the connection is done)
            _waiting.pop(self, None)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request head on a keep-alive connection gets the same limit

    def _waiting_bound(self) -> int:
        if MAX_WAITING_HEADS is not None:
            return MAX_WAITING_HEADS
        return max(1, (self.limit_concurrency or 256) // 2)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = None
        if self.transport.is_closing():
            return
        if HEADER_TIMEOUT_S > 0:
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)
        if self.conn.their_state is h11.IDLE:
            _waiting.pop(self, None)
            _waiting[self] = None
            bound = self._waiting_bound()
            while bound and len(_waiting) > bound:
                oldest = next(iter(_waiting))
                _waiting.pop(oldest)
                oldest._drop_waiting()

    def _drop_waiting(self) -> None:
        # Only ever a connection with no request in progress: nothing is lost but a slot.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.transport.close()

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # Close only a connection still waiting for a request head, or one whose response is
        # already complete; a request being handled is bounded by the app's own timeouts.
        if self.conn.their_state is h11.IDLE or self.conn.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self.transport.close()
