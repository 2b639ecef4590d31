"""What a team is told about the public part: the exact public scores, or the Ladder's answer;
and how much those answers can reveal (the leak budget).

Modes (per track, recorded in `server_settings` by `c2seg serve --public-scores`):

- exact (the default): every submission is answered with its public scores (mIoU, OA, F1,
  kappa, per-class IoU, rounded to 4 decimals); the board shows each team's best.
- ladder: the Ladder of Blum and Hardt ("The Ladder: A Reliable Leaderboard for Machine
  Learning Competitions", ICML 2015), fixed-step version. A team's shown public mIoU starts at
  0; a submission whose public mIoU beats the shown value by more than the step moves the shown
  value to that mIoU rounded to the step; any other submission is answered with the shown value
  again. Only that one number is shown (the other public figures are withheld), on the
  submission's answer and on the board. The private scores and the private ranking are computed
  as in exact mode. The step is the organizer's (`--ladder-step`, default 0.01).
- ladder-auto: the paper's parameter-free Ladder. As ladder, but the threshold is the
  submission's own: the standard error of the difference between its public mIoU and that of
  the submission that set the shown value (the team's best so far), so a gain moves the shown
  value only when it stands out from the noise of the public part. The paper's test is a
  one-sided paired one on per-sample losses: the new loss must be below the best by more than
  the standard deviation of the per-sample loss differences over sqrt(n) (for the first
  submission, the standard deviation of its own losses). mIoU is no per-sample average, so here
  the standard error is the delete-one-group jackknife over the public part's units
  (public_units.py: groups of public blocks, or of public tiles; at most 100), from per-unit
  counts the server stores with each score; for a per-sample average the jackknife equals the
  paper's figure. A submission moves the shown value when its public mIoU exceeds the shown
  value by more than that error and its value rounded to the grid is above the shown one; the
  team's first is tested against 0 with the standard error of its own mIoU. The paper's
  fixed-step Ladder rounds the released value to the step; its reference implementation
  releases the parameter-free one's unrounded. Here it is rounded to AUTO_GRID (0.001, 1001
  values in [0, 1]), a grid fixed before any submission, as the accounting below needs. A
  submission without stored counts (scored by a release before they were kept; `c2seg admin
  rescore` computes them), or a comparison whose error cannot be estimated (a single unit),
  falls back to the fixed step.

Leak budget: for each team and track, over the answers given in the track's current phase, an
upper bound in bits on what they can reveal about the hidden labels (log2 of the number of
answer sequences the team could have received):

- exact: every answer is new: each of its FIGURES numbers takes one of 10001 values, so
  FIGURES * log2(10001) bits per answer;
- ladder, ladder-auto: the sequence is fixed by which k of the t submissions moved the shown
  value and the k values it moved to, each on the mode's grid (ladder: multiples of the step,
  1/step + 1 values; ladder-auto: multiples of 0.001, 1001 values):
  log2 C(t, k) + k * log2(grid values).

By the description-length argument of the paper, with probability 1 - beta every answered
submission's public score exceeds its score on fresh data of the same kind by at most
grid/2 + sqrt((bits * ln 2 + ln(1/beta)) / (2 n)), n being the number of independent public
units (for a per-sample average loss). :func:`overfit_bound` computes it.

A cap (`--leak-cap-bits`, per track, counted over the current phase) refuses a team's uploads
(429) once its budget in the phase has reached the cap: the answer that reaches it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from c2seg_kit.classes import CLASS_NAMES

from . import public_units

MODES = ("exact", "ladder", "ladder-auto")
DEFAULT_STEP = 0.01
#: The grid of ladder-auto's released values.
AUTO_GRID = 0.001
#: Numbers in one exact answer: mIoU, OA, F1, kappa and one IoU per class.
FIGURES = 4 + len(CLASS_NAMES)
#: Values each exact figure can take (4 decimals in [0, 1]).
EXACT_LEVELS = 10001
#: server_settings keys (per track).
MODE_KEY = "public_scores:{}"
STEP_KEY = "ladder_step:{}"
CAP_KEY = "leak_cap_bits:{}"


@dataclass(frozen=True)
class Policy:
    """How a track's public part is answered."""

    mode: str = "exact"
    step: float = DEFAULT_STEP
    leak_cap_bits: float | None = None

    @property
    def ladder(self) -> bool:
        """Either Ladder (fixed step or parameter-free)."""
        return self.mode in ("ladder", "ladder-auto")

    @property
    def auto(self) -> bool:
        """The parameter-free Ladder."""
        return self.mode == "ladder-auto"

    @property
    def grid(self) -> float:
        """The spacing of the released values."""
        return AUTO_GRID if self.auto else self.step

    @property
    def rule(self) -> str | None:
        """How the Ladder's threshold is set, as the API names it (None in exact mode)."""
        return None if not self.ladder else "standard error" if self.auto else "fixed step"


def check_step(step: float) -> float:
    step = float(step)
    if not (0.0 < step <= 0.5) or math.isnan(step):
        raise ValueError(f"the ladder step must be above 0 and at most 0.5 (got {step:g})")
    return step


def on_grid(x: float, step: float) -> float:
    """`x` rounded to the nearest multiple of `step` (kept in [0, 1])."""
    return min(1.0, max(0.0, round(round(x / step) * step, 6)))


def ladder(scores: list[float | None], step: float) -> list[tuple[float, bool]]:
    """For each public mIoU in submission order: (the Ladder's answer, whether it moved)."""
    shown, out = 0.0, []
    for x in scores:
        moved = x is not None and x > shown + step
        if moved:
            shown = on_grid(x, step)
        out.append((shown, moved))
    return out


def threshold(new, best, step: float, started: bool) -> float:
    """ladder-auto's threshold for a submission with per-unit counts `new` against the best so far
    (`best`, its counts; `started`: whether there is one): the jackknife standard error of the
    difference, or of `new`'s own mIoU for the first; `step` when it cannot be estimated."""
    if new is None or (started and best is None):
        return step
    se = public_units.jackknife_se(new, best if started else None)
    return step if se is None else se


def ladder_auto(scores: list[float | None], counts: list, step: float) -> list[tuple[float, bool]]:
    """The parameter-free Ladder: for each public mIoU in submission order, with its per-unit
    counts (None: not stored), (the answer, whether it moved). `step`: the fallback threshold."""
    shown, best, started, out = 0.0, None, False, []
    for x, c in zip(scores, counts, strict=True):
        moved = False
        if x is not None:
            value = on_grid(x, AUTO_GRID)
            moved = x > shown + threshold(c, best, step, started) and value > shown
            if moved:
                shown, best, started = value, c, True
        out.append((shown, moved))
    return out


def run(policy: Policy, scores: list[float | None], counts: list | None = None) -> list[tuple[float, bool]]:
    """The answers of the policy's Ladder (fixed or parameter-free) for scores in submission order."""
    if policy.auto:
        return ladder_auto(scores, counts if counts is not None else [None] * len(scores), policy.step)
    return ladder(scores, policy.step)


def bits(policy: Policy, answers: int, moves: int) -> float:
    """The leak budget (bits) of `answers` answers, `moves` of which moved the ladder."""
    if answers <= 0:
        return 0.0
    if not policy.ladder:
        return answers * FIGURES * math.log2(EXACT_LEVELS)
    log_choose = (math.lgamma(answers + 1) - math.lgamma(moves + 1) - math.lgamma(answers - moves + 1)) / math.log(2)
    return log_choose + moves * math.log2(1.0 / policy.grid + 1.0)


def overfit_bound(bits_: float, n: int, grid: float, beta: float = 0.05) -> float:
    """How far above its fresh-data score an answered public score can be, with probability
    1 - beta (see the module docstring)."""
    return grid / 2 + math.sqrt((bits_ * math.log(2) + math.log(1.0 / beta)) / (2 * n))


def parse_per_track(values: tuple[str, ...], tracks, convert, what: str) -> dict[str, object]:
    """`VALUE` (every track) or `TRACK=VALUE` items -> {track: converted value}; ValueError otherwise."""
    out: dict[str, object] = {}
    for item in values:
        track, sep, value = item.rpartition("=")
        if sep and track not in tracks:
            raise ValueError(f"{what}: unknown track {track!r} in {item!r} (tracks: {', '.join(sorted(tracks))})")
        try:
            converted = convert(value)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        for t in ([track] if sep else tracks):
            out[t] = converted
    return out


def check_mode(value: str) -> str:
    if value not in MODES:
        raise ValueError(f"{value!r} is not a mode (exact, ladder or ladder-auto)")
    return value


def check_cap(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        cap = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of bits (or none)") from None
    if not cap > 0 or math.isinf(cap):
        raise ValueError(f"a leak cap must be a positive number of bits (got {value})")
    return cap


# --- recorded settings ----------------------------------------------------------------------

def read_policy(s, track: str) -> Policy:
    from . import stored

    mode = stored.get(s, MODE_KEY.format(track)) or "exact"
    step = stored.get(s, STEP_KEY.format(track))
    cap = stored.get(s, CAP_KEY.format(track))
    return Policy(mode=mode if mode in MODES else "exact", step=float(step) if step else DEFAULT_STEP,
                  leak_cap_bits=float(cap) if cap else None)


def record(s, track: str, *, mode: str | None = None, step: float | None = None,
           cap: float | None | str = "keep") -> None:
    """Record what was given for `track` (None / "keep": leave the recorded value as it is)."""
    from . import stored

    if mode is not None:
        stored.put(s, MODE_KEY.format(track), mode)
    if step is not None:
        stored.put(s, STEP_KEY.format(track), repr(float(step)))
    if cap != "keep":
        stored.put(s, CAP_KEY.format(track), "" if cap is None else repr(float(cap)))


# --- a team's answers ------------------------------------------------------------------------

@dataclass(frozen=True)
class Answers:
    """A team's answers on one track: per submission id, the shown public mIoU (ladder modes)
    and whether it moved the ladder; the budget over the current phase."""

    shown: dict[int, tuple[float, bool]]
    seen: dict[int, tuple[float, bool]]  # every submission, hidden ones too: what the team was answered then
    best_id: int | None  # the submission that set the shown value (ladder modes)
    answers: int  # answers given in the current phase
    moves: int
    distinct: int  # distinct answers among them (exact mode: every answer counts as new)
    bits: float
    mode: str = "ladder"


def unit_counts(s, ids) -> dict[int, object]:
    """{submission id: its public per-unit counts (public_units.decode)} for those that have them."""
    from sqlalchemy import select

    from .models import PublicUnits

    ids = list(ids)
    out: dict[int, object] = {}
    for chunk in range(0, len(ids), 500):
        for sid, blob in s.execute(select(PublicUnits.submission_id, PublicUnits.counts)
                                   .where(PublicUnits.submission_id.in_(ids[chunk:chunk + 500]))).all():
            counts = public_units.decode(bytes(blob))
            if counts is not None:
                out[sid] = counts
    return out


def without_counts(s, track: str) -> int:
    """How many scored submissions on the track have no stored per-unit counts (scored by a
    release before they were kept): ladder-auto compares those with the fixed step."""
    from sqlalchemy import func, select

    from .models import PublicUnits, Submission

    return s.scalar(select(func.count(Submission.id))
                    .outerjoin(PublicUnits, PublicUnits.submission_id == Submission.id)
                    .where(Submission.track == track, PublicUnits.submission_id.is_(None))) or 0


def team_answers(s, team_id: int, track: str, policy: Policy, since=None) -> Answers:
    """The team's scored submissions on the track, in the order they were answered (by id: rows
    are written when scored), see :func:`answers_of`."""
    from sqlalchemy import and_, select

    from .models import Score, Submission

    rows = s.execute(select(Submission.id, Submission.created, Score.miou, Submission.hidden.is_not(None))
                     .join(Score, and_(Score.submission_id == Submission.id, Score.split == "public"))
                     .where(Submission.team_id == team_id, Submission.track == track)
                     .order_by(Submission.id)).all()
    counts = unit_counts(s, [r[0] for r in rows]) if policy.auto else None
    return answers_of(rows, policy, since, counts)


def answers_of(rows, policy: Policy, since=None, counts: dict | None = None) -> Answers:
    """`rows`: (id, created, public mIoU, hidden) in submission order; `counts`: {id: per-unit
    counts} (ladder-auto; a missing one falls back to the fixed step). The shown values come
    from the visible submissions (a hidden one is left out, as if never made); the budget counts
    every answer given at or after `since` (the phase's start), hidden ones too: the team saw them."""
    counts = counts or {}
    visible = [r for r in rows if not r[3]]
    answered = run(policy, [r[2] for r in visible], [counts.get(r[0]) for r in visible])
    shown = {r[0]: a for r, a in zip(visible, answered, strict=True)}
    moved = [r[0] for r, a in zip(visible, answered, strict=True) if a[1]]
    best_id = moved[-1] if moved else (visible[0][0] if visible else None)
    seen = run(policy, [r[2] for r in rows], [counts.get(r[0]) for r in rows])
    counted = [a for r, a in zip(rows, seen, strict=True) if since is None or r[1] >= since]
    moves = sum(a[1] for a in counted)
    distinct = len({a[0] for a in counted}) if policy.ladder else len(counted)
    return Answers(shown, {r[0]: a for r, a in zip(rows, seen, strict=True)}, best_id, len(counted), moves, distinct,
                   bits(policy, len(counted), moves), policy.mode)
