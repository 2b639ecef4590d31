"""The shapes of a scoring server's JSON answers that the participant CLI reads, checked before
it reads them: an answer of another shape (another server, another version, a proxy's JSON)
is one line, never a KeyError or TypeError traceback.

A shape is a type (or a tuple of types: `int` never accepts a bool), a dict of required keys
(a key ending in "?" is optional), `[item_shape]` for a list, `DictOf(shape)` for a mapping
with values of one shape, `Nullable(shape)` for that shape or null. Keys that are not named are
allowed (a newer server may send more).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from c2seg_kit.client_http import ServerError


@dataclass(frozen=True)
class DictOf:
    values: Any


@dataclass(frozen=True)
class Nullable:
    shape: Any


NUM = (int, float, type(None))
OPT_STR = (str, type(None))
OPT_INT = (int, type(None))

SCORES = {"miou": NUM, "oa": NUM, "f1": NUM, "kappa": NUM, "per_class_iou": DictOf(NUM), "n_pixels?": int}
# A scene track gives its label shape; a tile track (layout "tiles") no shape but its tile count.
HEALTH = {"tracks": [{"track": str, "layout?": str, "shape": Nullable([int]), "n_tiles?": OPT_INT}],
          "max_upload_bytes?": OPT_INT}
TILES = {"tiles": DictOf([int])}
SUBMISSION = {"id": int, "track": str, "team": str, "created": str, "scores": SCORES, "method?": OPT_STR,
              "description?": OPT_STR, "url?": OPT_STR, "status?": str, "final_pick?": bool, "best_public?": bool,
              "private_candidate?": bool}
SUBMISSIONS = [SUBMISSION]
BOARD = {"track": str, "phase": str, "ranked_by": str,
         "entries": [{"rank": OPT_INT, "team": str, "baseline": bool, "submissions": int, "public": SCORES,
                      "private?": Nullable(SCORES)}]}
COMBINED = {"tracks": [str], "entries": [{"rank": OPT_INT, "team": str, "baseline": bool}]}
ME = {"team": str, "baseline?": bool, "disqualified?": OPT_STR, "failed_today": int, "failed_left_today": int,
      "quota": [{"track": str, "phase": str, "used_today": int, "left_today": int, "resets": str,
                 "phase_ends?": OPT_STR, "next_phase?": OPT_STR, "phase_cap?": OPT_INT, "used_phase?": int,
                 "left_phase?": OPT_INT, "final_picks?": [int], "final_picks_max?": OPT_INT}]}
PICKS = {"track": str, "ids": [int], "max": int, "closes?": OPT_STR}

_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", type(None): "null",
          dict: "an object", list: "a list"}


def _fits(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False
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
        return next((p for k, v in value.items() if (p := problem(v, shape.values, f"{where}.{k}"))), None)
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
