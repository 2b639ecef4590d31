"""The HTML leaderboard at `/` (server-side Jinja, autoescaped) and its class-colour stylesheet.

The page runs no script (the content security policy allows none): one view at a time, chosen
by links (`?track=AB`, `?view=combined`), and sorting is a link on each column header
(`?track=AB&sort=oa&dir=desc`) that the server answers with the rows in that order. Unknown
query values fall back to the defaults; nothing from the query is echoed but validated keys.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from c2seg_kit.classes import EVAL_CLASSES
from c2seg_kit.registry import TRACKS

from .deps import ServicesDep
from .ranking import BOARD_COLUMNS, combined, sort_board, sort_combined
from .schemas import COMBINED_SORTS

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


class SortLinks:
    """Header links of one table: `href(key)` sorts by that column (its natural direction first,
    flipped when it is already the sorted column); `aria(key)` marks the sorted column."""

    def __init__(self, base: dict, sort: str, direction: str, natural):
        self.base, self.sort, self.direction, self.natural = base, sort, direction, natural

    def href(self, key: str) -> str:
        if key == self.sort:
            direction = "desc" if self.direction == "asc" else "asc"
        else:
            direction = self.natural(key)
        return "?" + urlencode({**self.base, "sort": key, "dir": direction})

    def aria(self, key: str) -> str:
        if key != self.sort:
            return "none"
        return "ascending" if self.direction == "asc" else "descending"

    def arrow(self, key: str) -> str:
        return ("▲" if self.direction == "asc" else "▼") if key == self.sort else ""


def _combined_natural(key: str) -> str:
    return "desc" if key.startswith("miou_") else "asc"


async def _board(services, track: str):
    return (services.boards.fresh(track) or await run_in_threadpool(services.boards.get, services.sessions, track)).board


@router.get("/", response_class=HTMLResponse)
async def leaderboard_page(request: Request, services: ServicesDep) -> HTMLResponse:
    q = request.query_params
    served = sorted(services.tracks)
    view = "combined" if q.get("view") == "combined" and len(served) > 1 else "track"
    track = q.get("track", "").upper()
    track = track if track in served else (served[0] if served else None)
    direction = q.get("dir") if q.get("dir") in ("asc", "desc") else None
    context = {"classes": EVAL_CLASSES, "tracks": TRACKS, "served": served, "view": view, "track": track,
               "quota": services.settings.quota_per_day, "picks": services.settings.final_picks,
               "board": None, "combined": None}
    if view == "combined":
        sort = q.get("sort") if q.get("sort") in COMBINED_SORTS else "rank"
        board = sort_combined(combined([await _board(services, t) for t in served]), sort, direction)
        context["combined"] = board
        context["links"] = SortLinks({"view": "combined"}, board.sort, board.dir, _combined_natural)
    elif track is not None:
        sort = q.get("sort") if q.get("sort") in BOARD_COLUMNS else "rank"
        board = sort_board(await _board(services, track), sort, direction)
        context["board"] = board
        context["links"] = SortLinks({"track": track}, board.sort, board.dir, lambda k: BOARD_COLUMNS[k][1])
    return templates.TemplateResponse(request, "leaderboard.html", context)
