"""The shapes of a scoring server's JSON answers that the participant CLI reads, checked before
it reads them: an answer of another shape (another server, another version, a proxy's JSON)
is one line, never a KeyError or TypeError traceback.

A shape is a type (or a tuple of types: `int` never accepts a bool, `float` never NaN or
infinity, which Python's JSON reader accepts), a dict of required keys (a key ending in "?" is
optional), `[item_shape]` for a list, `DictOf(shape, key)` for a mapping with values of one shape
(and keys passing `key`), `Nullable(shape)` for that shape or null, `Valid(shape, test, want)`
for a value of that shape that also passes `test` (a count is not negative, a size is two
positive integers). Keys that are not named are allowed (a newer server may send more).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from c2seg_kit.client.transport import ServerError


@dataclass(frozen=True)
class Valid:
    """A value of ``shape`` for which ``test(value)`` is true; ``want`` says what that means."""

    shape: Any
    test: Callable[[Any], bool]
    want: str


@dataclass(frozen=True)
class DictOf:
    values: Any
    key: Valid | None = None  # a test of each key (a text)


@dataclass(frozen=True)
class Nullable:
    shape: Any


NUM = (int, float, type(None))
OPT_STR = (str, type(None))
OPT_INT = (int, type(None))
#: The longest side a server may give for a raster (the largest city is 13,474 px high).
MAX_SIDE = 1 << 20
COUNT = Valid(int, lambda v: v >= 0, "an integer >= 0")
OPT_COUNT = Valid(OPT_INT, lambda v: v is None or v >= 0, "an integer >= 0 or null")
ID = Valid(int, lambda v: v >= 1, "an integer >= 1")
SIZE = Valid([int], lambda v: len(v) == 2 and all(1 <= n <= MAX_SIDE for n in v),
             f"two integers from 1 to {MAX_SIDE} (height, width)")


def _plain_tile_id(key: str) -> bool:
    from c2seg_kit.submission.tile_readers import check_tile_id  # h5py: only when a tile list is read

    try:
        check_tile_id(key)
    except ValueError:
        return False
    return True


TILE_ID = Valid(str, _plain_tile_id, "a plain tile id (a file stem without '/', control characters or "
                                     "digits other than ASCII 0-9)")

SCORES = {"miou": NUM, "oa": NUM, "f1": NUM, "kappa": NUM, "per_class_iou": DictOf(NUM), "n_pixels?": COUNT}
# A scene track gives its label shape; a tile track (layout "tiles") no shape but its tile count.
HEALTH = {"tracks": [{"track": str, "layout?": Valid(str, lambda v: v in ("scene", "tiles"), "'scene' or 'tiles'"),
                      "shape": Nullable(SIZE), "n_tiles?": OPT_COUNT}],
          "max_upload_bytes?": Valid(OPT_INT, lambda v: v is None or v > 0, "an integer > 0 or null"),
          "max_model_bytes?": Valid(OPT_INT, lambda v: v is None or v > 0, "an integer > 0 or null")}
TILES = {"tiles": DictOf(SIZE, TILE_ID)}
SUBMISSION = {"id": ID, "track": str, "team": str, "created": str, "scores": SCORES, "method?": OPT_STR,
              "description?": OPT_STR, "url?": OPT_STR, "status?": str, "final_pick?": bool, "best_public?": bool,
              "private_candidate?": bool,
              "model?": Nullable({"kind": str, "filename": str, "size": COUNT, "sha256": str, "created": str})}
SUBMISSIONS = [SUBMISSION]
BOARD = {"track": str, "phase": str, "ranked_by": str,
         "entries": [{"rank": OPT_COUNT, "team": str, "baseline": bool, "submissions": COUNT, "public": SCORES,
                      "private?": Nullable(SCORES)}]}
COMBINED = {"tracks": [str], "entries": [{"rank": OPT_INT, "team": str, "baseline": bool}]}
ME = {"team": str, "baseline?": bool, "disqualified?": OPT_STR, "failed_today": COUNT, "failed_left_today": COUNT,
      "quota": [{"track": str, "phase": str, "used_today": COUNT, "left_today": COUNT, "resets": str,
                 "phase_ends?": OPT_STR, "next_phase?": OPT_STR, "phase_cap?": OPT_COUNT, "used_phase?": COUNT,
                 "left_phase?": OPT_COUNT, "final_picks?": [ID], "final_picks_max?": OPT_COUNT}]}
PICKS = {"track": str, "ids": [ID], "max": COUNT, "closes?": OPT_STR}

_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
          dict: "an object", list: "a list"}


def _fits(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False  # NaN, Infinity: JSON has no such numbers
    return isinstance(value, types)


def _wrong(where: str, shape) -> str:
    if isinstance(shape, (dict, DictOf)):
        want = "an object"
    elif isinstance(shape, list):
        want = "a list"
    else:
        want = " or ".join(_NAMES.get(t, t.__name__) for t in (shape if isinstance(shape, tuple) else (shape,)))
    return f"{where}: expected {want}"


def problem(value, shape, where: str = "answer") -> str | None:
    """None if `value` has `shape`, else where and what is wrong (the first thing found)."""
    if isinstance(shape, Nullable):
        return None if value is None else problem(value, shape.shape, where)
    if isinstance(shape, Valid):
        return problem(value, shape.shape, where) or (None if shape.test(value) else f"{where}: expected {shape.want}")
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return _wrong(where, shape)
        for key, sub in shape.items():
            name = key.rstrip("?")
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where}.{name}: missing"
            found = problem(value[name], sub, f"{where}.{name}")
            if found:
                return found
        return None
    if isinstance(shape, DictOf):
        if not isinstance(value, dict):
            return _wrong(where, shape)
        for k, v in value.items():
            found = (problem(k, shape.key, f"{where} key {k[:40]!r}") if shape.key is not None else None) \
                or problem(v, shape.values, f"{where}.{k[:40]}")
            if found:
                return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return _wrong(where, shape)
        return next((p for i, v in enumerate(value) if (p := problem(v, shape[0], f"{where}[{i}]"))), None)
    return None if _fits(value, shape) else _wrong(where, shape)


def checked(value, shape, base: str):
    """`value` if it has `shape`; else ServerError, one line naming the first thing wrong."""
    found = problem(value, shape)
    if found:
        raise ServerError(f"the server at {base} sent an answer this client does not understand ({found[:200]}): "
                          "is the URL that of a C2Seg server of this version?")
    return value
