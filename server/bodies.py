"""Small request bodies (metadata edits, final picks): the token first, then a capped body.

FastAPI reads and parses a route's body before it runs the route's dependencies, the token
check among them, and it reads the whole body into memory: without this gate a client with no
token at all could send a 300 MB JSON body to `PATCH /api/v1/submissions/1`, and the server
held all of it before answering 401. This pure ASGI middleware wraps the connection's `receive`
of every request whose route takes a body (FastAPI body parameters; the upload is not one: it
streams its own body to a spool file under its own caps, see uploads.py). When the route first
asks for the body, before a byte of it is read:

- a route that needs a team's token gets it checked, from the header alone: 401 (a page of the
  participants' site: its session, from the cookie alone; see site_sessions.py);
- a declared Content-Length over MAX_BODY_BYTES: 413;

then, while the body arrives, bytes are counted (declared or chunked alike): past
MAX_BODY_BYTES, 413 at once; a body that has not arrived within the time a request head gets
(C2SEG_HEADER_TIMEOUT_S, see edge.py): 408. Each refusal is an HTTPException raised from
`receive`, which FastAPI passes on as the answer; it closes the connection, whose unread body is
never drained.
"""

from __future__ import annotations

import anyio
from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette.requests import Request

from . import edge
from .deps import current_team
from .site_sessions import member_required

#: The largest body a route other than the upload takes. The largest valid one (every metadata
#: field at its cap, each character written as a JSON surrogate-pair escape) is about 17 KiB.
MAX_BODY_BYTES = 32 * 1024


def body_timeout_s() -> float:
    """Seconds a small body may take to arrive: the request head's limit (10 s when that is off)."""
    return edge.HEADER_TIMEOUT_S if edge.HEADER_TIMEOUT_S > 0 else 10.0


#: The header-only checks a route's body waits for: the API's token, the site's session.
GATES = (current_team, member_required)


def _gate(dependant):
    """The first of GATES the route depends on (directly or through a dependency), or None."""
    for d in dependant.dependencies:
        found = d.call if d.call in GATES else _gate(d)
        if found is not None:
            return found
    return None


#: Every refusal here closes the connection: the unread body is never drained.
CLOSE = {"connection": "close"}


def too_large() -> HTTPException:
    return HTTPException(413, f"the request body is larger than this server accepts here "
                              f"({MAX_BODY_BYTES // 1024} KiB)", headers=CLOSE)


class SmallBodies:
    """`app.add_middleware(SmallBodies, routers=[...])`: gates the body of every route of
    `routers` that takes one (see the module's docstring)."""

    def __init__(self, app, routers=()):
        self.app = app
        self.body_routes = {route.endpoint: route for router in routers for route in router.routes
                            if isinstance(route, APIRoute) and route.body_field is not None}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        return await self.app(scope, _Gate(scope, receive, self.body_routes).receive, send)


class _Gate:
    """The `receive` of one request: passed through, unless its route (known once the router has
    matched it: `scope["endpoint"]`) takes a body."""

    def __init__(self, scope, receive, body_routes):
        self.scope, self._receive, self.body_routes = scope, receive, body_routes
        self.gated: bool | None = None  # decided at the first call
        self.size, self.done, self.deadline = 0, False, 0.0

    async def receive(self):
        if self.gated is None:
            route = self.body_routes.get(self.scope.get("endpoint"))
            self.gated = route is not None
            if self.gated:
                await self._admit(route)
        if not self.gated or self.done:  # (after the body, only a disconnect can come)
            return await self._receive()
        try:
            with anyio.fail_after(max(0.0, self.deadline - anyio.current_time())):
                message = await self._receive()
        except TimeoutError:
            raise HTTPException(408, f"the request body did not arrive within {body_timeout_s():g} s",
                                headers=CLOSE) from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > MAX_BODY_BYTES:
                raise too_large()
            self.done = not message.get("more_body", False)
        return message

    async def _admit(self, route) -> None:
        """Before the first byte of the body: the token (from the header), the declared size."""
        self.deadline = anyio.current_time() + body_timeout_s()
        request = Request(self.scope)
        app = self.scope["app"]
        # (a test that overrides the token check with app.dependency_overrides gets its override)
        gate = _gate(route.dependant)
        if gate is not None and gate not in app.dependency_overrides:
            args = (request, app.state.services) if gate is current_team else (request,)
            try:
                await run_in_threadpool(gate, *args)
            except HTTPException as e:
                raise HTTPException(e.status_code, e.detail, headers={**(e.headers or {}), **CLOSE}) from None
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 20:
                raise HTTPException(400, "invalid Content-Length header", headers=CLOSE)
            if int(declared) > MAX_BODY_BYTES:
                raise too_large()
