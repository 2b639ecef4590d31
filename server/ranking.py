"""Sorting a board by any column (`?sort=KEY&dir=asc|desc`) and the combined view over tracks.

Sorting only reorders the rows: a row keeps its rank. Rows whose value is missing go last in
either direction; ties go to the earlier submission.

Combined view: a team's combined standing is the mean of its places on the served tracks,
each track ranked as its own board is (public, or private once final). Its place on a track is
its rank there; a baseline's place is where it would stand among the ranked teams (one more than
the ranked teams ahead of it); a team with no entry on a track is placed last there, one past
that track's last ranked team. Lower mean first; a tie goes to the team whose latest shown
submission is the earlier one. Baselines are shown in place, not ranked.
"""

from __future__ import annotations

from collections.abc import Callable

from .schemas import (
    BOARD_SORTS,
    COMBINED_SORTS,
    CombinedBoard,
    CombinedEntry,
    CombinedTrack,
    Leaderboard,
    LeaderboardEntry,
)

COMBINED_RULE = ("mean of the per-track places (a team's rank on each track's board; a baseline's place among "
                 "the ranked teams; one past the last ranked team where it has no entry), lower first; ties to the "
                 "earlier submission")


def _score(split: str, name: str) -> Callable[[LeaderboardEntry], float | None]:
    def get(e: LeaderboardEntry):
        sc = getattr(e, split)
        return None if sc is None else getattr(sc, name)

    return get


def _iou(cls: str) -> Callable[[LeaderboardEntry], float | None]:
    return lambda e: e.public.per_class_iou.get(cls)


#: key -> (value of a row, natural direction); a header link sorts by its natural direction first.
BOARD_COLUMNS: dict[str, tuple[Callable, str]] = {
    "rank": (lambda e: e.rank, "asc"),
    "team": (lambda e: e.team.casefold(), "asc"),
    "submissions": (lambda e: e.submissions, "desc"),
    "created": (lambda e: e.created, "asc"),
    **{k: (_score("public", k), "desc") for k in ("miou", "oa", "f1", "kappa")},
    **{f"private_{k}": (_score("private", k), "desc") for k in ("miou", "oa", "f1", "kappa")},
    **{k: (_iou(k.removeprefix("iou_")), "desc") for k in BOARD_SORTS if k.startswith("iou_")},
}
assert set(BOARD_COLUMNS) == set(BOARD_SORTS)


def _sorted(rows: list, value: Callable, direction: str, tie: Callable) -> list:
    """Stable sort: by tie first, then by value in `direction`, missing values last."""
    rows = sorted(rows, key=tie)
    present = [r for r in rows if value(r) is not None]
    missing = [r for r in rows if value(r) is None]
    return sorted(present, key=value, reverse=direction == "desc") + missing


def sort_board(board: Leaderboard, sort: str = "rank", direction: str | None = None) -> Leaderboard:
    value, natural = BOARD_COLUMNS[sort]
    direction = direction or natural
    if sort == "rank":
        # Baselines have no rank: they keep their place between the ranked rows.
        entries = board.entries if direction == "asc" else board.entries[::-1]
    else:
        entries = _sorted(board.entries, value, direction, tie=lambda e: e.created)
    return board.model_copy(update={"entries": entries, "sort": sort, "dir": direction})


def combined(boards: list[Leaderboard]) -> CombinedBoard:
    """The combined view of the given tracks' boards (see the module docstring)."""
    places: dict[str, dict[str, tuple[int | None, int, float | None]]] = {}  # team -> track -> (rank, placed, miou)
    latest: dict[str, object] = {}
    baseline: dict[str, bool] = {}
    last: dict[str, int] = {}
    for b in boards:
        split = b.ranked_by
        ranked_ahead = 0
        for e in b.entries:
            sc = getattr(e, split)
            placed = e.rank if e.rank is not None else ranked_ahead + 1
            places.setdefault(e.team, {})[b.track] = (e.rank, placed, sc.miou if sc else None)
            latest[e.team] = max(latest.get(e.team, e.created), e.created)
            baseline[e.team] = e.baseline
            ranked_ahead += e.rank is not None
        last[b.track] = ranked_ahead + 1
    entries = []
    for team, per in places.items():
        tracks = {b.track: CombinedTrack(rank=per[b.track][0], placed=per[b.track][1], miou=per[b.track][2])
                  if b.track in per else CombinedTrack(rank=None, placed=last[b.track], miou=None) for b in boards}
        mean = sum(t.placed for t in tracks.values()) / len(tracks)
        entries.append(CombinedEntry(rank=None, team=team, baseline=baseline[team], mean_rank=round(mean, 4),
                                     tracks=tracks))
    entries.sort(key=lambda e: (e.mean_rank, latest[e.team], e.team))
    rank = 0
    for e in entries:
        if not e.baseline:
            rank += 1
            e.rank = rank
    return CombinedBoard(tracks=[b.track for b in boards], phases={b.track: b.phase for b in boards},
                         rule=COMBINED_RULE, entries=entries)


def _track_value(track: str, what: str) -> Callable[[CombinedEntry], float | None]:
    return lambda e: getattr(e.tracks[track], what) if track in e.tracks else None


def sort_combined(board: CombinedBoard, sort: str = "rank", direction: str | None = None) -> CombinedBoard:
    if sort in ("rank", "team"):
        value, natural = ((lambda e: e.mean_rank), "asc") if sort == "rank" else ((lambda e: e.team.casefold()), "asc")
    else:
        what, track = sort.split("_", 1)
        value, natural = (_track_value(track, "placed"), "asc") if what == "rank" else (_track_value(track, "miou"), "desc")
    assert sort in COMBINED_SORTS
    direction = direction or natural
    order = {e.team: i for i, e in enumerate(board.entries)}  # the combined order breaks ties
    entries = _sorted(board.entries, value, direction, tie=lambda e: order[e.team])
    return board.model_copy(update={"entries": entries, "sort": sort, "dir": direction})
