"""What several verbs share: the track option built from the registry, and how a missing score prints.

Every verb that takes a track uses :func:`track_option` (or :data:`TRACK_CHOICE` for a positional
argument), so a new track in c2seg_kit.registry reaches every command, its help and its checks.
"""

from __future__ import annotations

import sys

import click

from c2seg_kit.registry import TRACKS

#: AB, BW, ... typed in any case; click hands back the registry's spelling ("ab" -> "AB").
TRACK_CHOICE = click.Choice(sorted(TRACKS), case_sensitive=False)

TRACK_HELP = "; ".join(f"{t.name}: {t.source.display} -> {t.target.display}" for t in TRACKS.values())

#: Shown wherever a score is undefined (a class absent from labels and predictions, no pixels).
MISSING_SCORE = "n/a"


def track_option(*, required: bool = True, help: str | None = None, param: str = "track"):
    """The one ``--track`` option; its value arrives upper-case (``"AB"``), or None when optional."""
    return click.option(
        "--track", param, type=TRACK_CHOICE, required=required, help=help or f"{TRACK_HELP}.",
    )


def format_score(value: float | None, digits: int = 4) -> str:
    """A score to print: fixed decimals, or MISSING_SCORE when it is undefined."""
    return MISSING_SCORE if value is None else f"{value:.{digits}f}"


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_option(f):
    """``--progress/--no-progress`` (``--quiet`` is ``--no-progress``); the verb receives ``progress``
    as a bool. Unset, bars are drawn only when stderr is a terminal: piped into a log, a bar's
    carriage returns would glue themselves to the lines around them."""
    return click.option(
        "--progress/--no-progress", " /--quiet", "progress", default=None,
        callback=lambda ctx, param, value: stderr_is_terminal() if value is None else value,
        help="Progress bars on stderr. Default: only when stderr is a terminal (none in a log or pipe).",
    )(f)
