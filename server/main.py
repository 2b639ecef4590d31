"""The app factory: `create_app(settings)` builds the FastAPI app (routers, middleware, services).

`app_from_env()` is what uvicorn calls in each worker process (`c2seg serve` passes the
options as C2SEG_* variables).
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from c2seg_kit import __version__
from c2seg_kit.errors import C2SegError

from . import crud, logs, pages, routes_leaderboard, routes_site, routes_submissions, routes_teams, stored
from .board import BoardCache
from .bodies import SmallBodies
from .config import Settings
from .db import init_db, make_engine, make_sessionmaker
from .deps import ServedTrack, Services
from .workers import ScoringPool

log = logging.getLogger("c2seg_server")

#: Sent with every response. The page loads nothing but its own two stylesheets.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; img-src 'self'; "
                                 b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]

#: The participants' site (/team, routes_site.py): its own script (/static/site.js), which may
#: call back to this origin, and forms that post to this origin; nothing else beyond the board's.
SITE_CSP = (b"default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; "
            b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Referrer policy same-origin, not the board's no-referrer: under no-referrer a browser sends
#: "Origin: null" with every form post and fetch POST, which the site's same-origin check refuses;
#: same-origin sends the page's own origin home and nothing to other sites.
SITE_OVERRIDES = {b"content-security-policy": SITE_CSP, b"referrer-policy": b"same-origin"}
SITE_HEADERS = [(k, SITE_OVERRIDES.get(k, v)) for k, v in SECURITY_HEADERS]


#: Largest request head (all header lines) accepted. uvicorn's h11 limit only bounds a head
#: that arrives in pieces; one that arrives whole in a single read is checked here.
MAX_HEADER_BYTES = 16 * 1024


class SecurityHeaders:
    """Pure ASGI middleware (no body buffering): refuses oversized request heads (431) and adds
    SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if sum(len(k) + len(v) + 4 for k, v in scope["headers"]) > MAX_HEADER_BYTES:
            response = JSONResponse({"detail": f"request headers larger than {MAX_HEADER_BYTES // 1024} KiB"},
                                    status_code=431, headers={"connection": "close"})
            scope = {**scope, "headers": []}
            return await response(scope, receive, self._with_headers(send))
        site = routes_site.on_site_path(scope.get("path", ""))
        return await self.app(scope, receive, self._with_headers(send, SITE_HEADERS if site else SECURITY_HEADERS))

    @staticmethod
    def _with_headers(send, headers=SECURITY_HEADERS):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in headers if k not in names]
            await send(message)

        return send_with_headers


def served_tracks(label_paths: list[Path]) -> dict[str, tuple[ServedTrack, str]]:
    """track -> (its layout and shape or tiles, path), read from each labels file's header (scene
    or tile layout); one file per track."""
    from c2seg_kit.submission.formats import LAYOUT_TILES
    from c2seg_kit.submission.readers import open_labels

    tracks: dict[str, tuple[ServedTrack, str]] = {}
    for path in label_paths:
        path = Path(path)
        if not path.is_file():
            raise C2SegError(f"labels file not found: {path}")
        with open_labels(path) as lab:
            if lab.track in tracks:
                raise C2SegError(f"two labels files for track {lab.track}: {tracks[lab.track][1]} and {path}")
            if lab.layout == LAYOUT_TILES:
                served = ServedTrack(LAYOUT_TILES, tiles=dict(lab.shapes))
            else:
                served = ServedTrack(lab.layout, shape=tuple(lab.shape))
            tracks[lab.track] = (served, str(path.resolve()))
    return tracks


def scorer_kwargs(settings: Settings, tracks: dict, split: stored.Split) -> dict:
    return {"labels": {t: p for t, (_, p) in tracks.items()}, **split.scorer_kwargs(),
            "chunk_rows": settings.chunk_rows}


def make_pool(settings: Settings, tracks: dict, split: stored.Split | None = None) -> ScoringPool:
    """A scoring pool on `split` (the database's, see stored.py). Without one (tests that build a
    pool before the app), the split the settings give, or defaults with a fresh secret seed; the
    app then records that split, or refuses if its database holds another."""
    split = split or stored.proposed_split(settings)
    pool = ScoringPool(scorer_kwargs(settings, tracks, split), workers=settings.scoring_workers,
                       timeout_s=settings.scoring_timeout_s, memory_mb=settings.scoring_memory_mb)
    pool.split = split
    return pool


def purge_stale_spool(settings: Settings) -> None:
    """Delete upload spool files left by a killed server (old enough that no live request owns them)."""
    import time

    max_age = settings.upload_timeout_s + 2 * settings.scoring_timeout_s + 60
    if settings.spool_dir.is_dir():
        for f in settings.spool_dir.glob("upload-*.h5"):
            try:
                if time.time() - f.stat().st_mtime > max_age:
                    f.unlink()
            except OSError:
                pass


def create_app(settings: Settings | None = None, *, pool: ScoringPool | None = None) -> FastAPI:
    """Build the app. `pool` may be given (tests); otherwise one is started in the lifespan."""
    settings = settings or Settings()
    logs.install()  # no query string (a pasted token) reaches the access log
    tracks = served_tracks(settings.labels)
    engine = make_engine(settings.db_url, busy_timeout_s=settings.sqlite_busy_timeout_s)
    init_db(engine)
    sessions = make_sessionmaker(engine)
    digests = {t: stored.file_sha256(p) for t, (_, p) in tracks.items()}
    with sessions() as s:  # the split and labels every score of this database is computed on (stored.py)
        split = stored.record_split(s, settings, getattr(pool, "split", None))
        stored.settle_data_dir(s, settings.data_dir)
        stored.check_labels(s, digests, {t: served.layout for t, (served, _) in tracks.items()},
                            {t: p for t, (_, p) in tracks.items()})
    services = Services(settings=settings, sessions=sessions, tracks={t: s for t, (s, _) in tracks.items()},
                        boards=BoardCache(settings.leaderboard_cache_s), pool=pool,
                        basis=stored.Basis(labels=digests, split=split))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        with sessions() as s:
            crud.purge_expired_reservations(s)
        purge_stale_spool(settings)
        own_pool = services.pool is None
        if own_pool:
            services.pool = make_pool(settings, tracks, split)
            from fastapi.concurrency import run_in_threadpool

            await run_in_threadpool(services.pool.start)
        try:
            yield
        finally:
            if own_pool:
                services.pool.close()
                services.pool = services.limiter = None
            engine.dispose()

    app = FastAPI(title="C2Seg scoring server", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # the Swagger page loads scripts from a CDN: CSP forbids it
                  description="Upload predictions.h5 with `c2seg submit`; see the leaderboard at `/`. "
                              "Reference in the kit's repository: docs/api.md (this API, quotas, error codes), "
                              "docs/formats.md (the submission file and the metric).")
    app.state.services = services
    routers = [m.router for m in (routes_submissions, routes_leaderboard, routes_teams, pages, routes_site)]
    routers.append(routes_submissions.picks_router)
    # token, then a capped body, before a route reads one (bodies.py)
    app.add_middleware(SmallBodies, routers=routers)
    app.add_middleware(SecurityHeaders)  # no CORS middleware: browsers on other origins get no access

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        if routes_site.on_site(request):
            return routes_site.error_response(request, 422, f"{where}: {first.get('msg', 'invalid request')}")
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def site_or_api_error(request: Request, exc: StarletteHTTPException):
        # the site's pages answer in its own shapes (plain words, or its JSON for scripts)
        if routes_site.on_site(request):
            return routes_site.error_response(request, exc.status_code, str(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    for router in routers:
        app.include_router(router)

    plain_openapi = app.openapi

    def openapi() -> dict:
        # Validation errors are sent as one line ({"detail": "..."}, see above): say so in the schema.
        if app.openapi_schema is None:
            doc = plain_openapi()
            schemas = doc.get("components", {}).get("schemas", {})
            schemas["HTTPValidationError"] = {
                "title": "HTTPValidationError", "type": "object", "required": ["detail"],
                "properties": {"detail": {"type": "string", "title": "Detail"}}}
            # The number of final picks is a setting: the document states this server's.
            picks = schemas.get("FinalPicksIn", {}).get("properties", {}).get("ids")
            if picks is not None:
                picks["maxItems"] = settings.final_picks
        return app.openapi_schema

    app.openapi = openapi
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: `uvicorn --factory c2seg_server.main:app_from_env` (settings from C2SEG_*)."""
    return create_app(Settings())
