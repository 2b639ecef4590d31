"""The HTML leaderboard at `/` (server-side Jinja, autoescaped) and its class-colour stylesheet."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from c2seg_kit.classes import EVAL_CLASSES
from c2seg_kit.registry import TRACKS

from .deps import ServicesDep

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape is on for .html
router = APIRouter(include_in_schema=False)


def _text_colour(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def classes_css() -> str:
    """One rule per class: column headers in the class colour (a stylesheet, so the CSP needs no inline styles)."""
    return "".join(f".board th.cls.c{c.id}{{background:{c.colour};color:{_text_colour(c.colour)}}}\n"
                   for c in EVAL_CLASSES)


@router.get("/classes.css")
def classes_stylesheet() -> Response:
    return Response(classes_css(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/", response_class=HTMLResponse)
async def leaderboard_page(request: Request, services: ServicesDep) -> HTMLResponse:
    boards = [(services.boards.fresh(t) or await run_in_threadpool(services.boards.get, services.sessions, t)).board
              for t in sorted(services.tracks)]
    return templates.TemplateResponse(request, "leaderboard.html", {
        "boards": boards, "classes": EVAL_CLASSES, "tracks": TRACKS,
        "quota": services.settings.quota_per_day,
    })
