"""The connection edge: uvicorn's h11 protocol with a request-head timeout and a per-client cap.

uvicorn times out idle keep-alive connections but not a request head that never finishes: a
client that opens connections and sends a header line now and then (slowloris) holds each one
for ever, and once `--limit-concurrency` connections are held every other client gets 503.
This protocol closes a connection whose request head has not fully arrived within
`header_timeout_s` of the connection opening (or of the previous response), and refuses more
than `max_connections_per_client` simultaneous connections from one address. Request bodies
are bounded by the upload route itself (size cap and `upload_timeout_s`).

Both settings come from the environment like the rest (C2SEG_HEADER_TIMEOUT_S, default 10;
C2SEG_MAX_CONNECTIONS_PER_CLIENT, default 64, 0 = no cap: set 0 behind a reverse proxy, where
every connection comes from the proxy's address and the proxy enforces its own limits).
"""

from __future__ import annotations

import os
from collections import Counter

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = float(os.environ.get("C2SEG_HEADER_TIMEOUT_S", "10"))
MAX_CONNECTIONS_PER_CLIENT = int(os.environ.get("C2SEG_MAX_CONNECTIONS_PER_CLIENT", "64"))

#: Open connections per client address, in this server process.
_open: Counter[str] = Counter()


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
        if self._peer is not None:
            _open[self._peer] -= 1
            if _open[self._peer] <= 0:
                del _open[self._peer]
            self._peer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()  # the next request head on a keep-alive connection gets the same limit

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = None
        if HEADER_TIMEOUT_S > 0 and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(HEADER_TIMEOUT_S, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        # Close only a connection still waiting for a request head, or one whose response is
        # already complete; a request being handled is bounded by the app's own timeouts.
        if self.conn.their_state is h11.IDLE or self.conn.our_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
            self.transport.close()
