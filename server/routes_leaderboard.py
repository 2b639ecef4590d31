"""GET /api/v1/leaderboard (JSON) and /api/v1/leaderboard.csv."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from c2seg_kit.classes import CLASS_NAMES

from .board import CachedBoard
from .deps import ServicesDep, served_track
from .routes_submissions import ERRORS
from .schemas import Leaderboard, TrackName

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])
TrackQuery = Annotated[TrackName, Query(description="AB or BW")]


async def get_board(services, track: str) -> CachedBoard:
    track = served_track(track, services)
    # Fast path on the event loop; the database is only read (in a thread) when the cache is stale.
    return services.boards.fresh(track) or await run_in_threadpool(services.boards.get, services.sessions, track)


@router.get("/leaderboard", response_model=Leaderboard, responses={404: ERRORS[404]},
            summary="Each team's best submission on a track, ranked")
async def leaderboard(track: TrackQuery, services: ServicesDep) -> Response:
    return Response((await get_board(services, track)).json, media_type="application/json")


def _cell(value) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def board_csv(board: Leaderboard) -> str:
    splits = ["public"] + (["private"] if board.phase == "final" else [])
    head = ["rank", "team", "baseline", "submissions", "created"]
    for split in splits:
        head += [f"{split}_{k}" for k in ("miou", "oa", "f1", "kappa")]
        head += [f"{split}_iou_{name}" for name in CLASS_NAMES]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for e in board.entries:
        row = [e.rank, _cell(e.team), int(e.baseline), e.submissions, e.created.isoformat()]
        for split in splits:
            sc = getattr(e, split)
            row += [sc.miou, sc.oa, sc.f1, sc.kappa] + [sc.per_class_iou.get(n) for n in CLASS_NAMES]
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


@router.get("/leaderboard.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, 404: ERRORS[404]},
    summary="The leaderboard as CSV")
async def leaderboard_csv(track: TrackQuery, services: ServicesDep) -> Response:
    board = (await get_board(services, track)).board
    return Response(board_csv(board), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="c2seg-{board.track}-leaderboard.csv"'})
