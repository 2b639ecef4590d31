"""GET /api/v1/leaderboard (JSON), /api/v1/leaderboard.csv and /api/v1/leaderboard/combined."""

from __future__ import annotations

import csv
import io
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from c2seg_kit.classes import CLASS_NAMES
from c2seg_kit.text import csv_cell as _cell

from .board import CachedBoard
from .deps import ServicesDep, served_track
from .ranking import combined, sort_board, sort_combined
from .routes_submissions import ERRORS
from .schemas import BoardSort, CombinedBoard, CombinedSort, Leaderboard, SortDir, TrackName

router = APIRouter(prefix="/api/v1", tags=["leaderboard"])
TrackQuery = Annotated[TrackName, Query(description="AB or BW")]
SortQuery = Annotated[BoardSort, Query(description="column to sort by (rows keep their rank)")]
CombinedSortQuery = Annotated[CombinedSort, Query(description="column to sort by (rows keep their rank)")]
DirQuery = Annotated[SortDir | None, Query(description="asc or desc (default: the column's natural order)")]


async def get_board(services, track: str) -> CachedBoard:
    track = served_track(track, services)
    # Fast path on the event loop; the database is only read (in a thread) when the cache is stale.
    return services.boards.fresh(track) or await run_in_threadpool(services.boards.get, services.sessions, track)


async def get_combined(services) -> CombinedBoard:
    return combined([(await get_board(services, t)).board for t in sorted(services.tracks)])


@router.get("/leaderboard", response_model=Leaderboard, responses={404: ERRORS[404]},
            summary="Each team's shown submission on a track, ranked (baselines shown, not ranked)")
async def leaderboard(track: TrackQuery, services: ServicesDep, sort: SortQuery = "rank",
                      dir: DirQuery = None) -> Response:
    cached = await get_board(services, track)
    if sort == "rank" and dir in (None, "asc"):
        return Response(cached.json, media_type="application/json")  # serialised once, sent as is
    return Response(sort_board(cached.board, sort, dir).model_dump_json(), media_type="application/json")


@router.get("/leaderboard/combined", response_model=CombinedBoard,
            summary="Both tracks at once: the mean of each team's per-track ranks")
async def leaderboard_combined(services: ServicesDep, sort: CombinedSortQuery = "rank",
                               dir: DirQuery = None) -> CombinedBoard:
    return sort_combined(await get_combined(services), sort, dir)


def board_csv(board: Leaderboard) -> str:
    splits = ["public"] + (["private"] if board.phase == "final" else [])
    head = ["rank", "team", "baseline", "submissions", "created", "method", "url"]
    for split in splits:
        head += [f"{split}_{k}" for k in ("miou", "oa", "f1", "kappa")]
        head += [f"{split}_iou_{name}" for name in CLASS_NAMES]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    for e in board.entries:
        row = [e.rank, _cell(e.team), int(e.baseline), e.submissions, e.created.isoformat(), _cell(e.method),
               _cell(e.url)]
        for split in splits:
            sc = getattr(e, split)
            row += [sc.miou, sc.oa, sc.f1, sc.kappa] + [sc.per_class_iou.get(n) for n in CLASS_NAMES]
        w.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


@router.get("/leaderboard.csv", response_class=Response, responses={
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}, 404: ERRORS[404]},
    summary="The leaderboard as CSV")
async def leaderboard_csv(track: TrackQuery, services: ServicesDep, sort: SortQuery = "rank",
                          dir: DirQuery = None) -> Response:
    board = sort_board((await get_board(services, track)).board, sort, dir)
    return Response(board_csv(board), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="c2seg-{board.track}-leaderboard.csv"'})
