"""Settings the server records in its own database (table `server_settings`), so that every
process that opens the database agrees on them whatever its environment says:

- the public/private split: its seed, block size and public fraction. The seed is secret: made
  with `secrets` the first time a database is served, it never appears in a response, page, log
  or export (`c2seg admin split-seed` shows it to the organizer). `c2seg serve` and
  `c2seg admin rescore` both take the split from here once it is recorded, so a rescore from a
  shell with other C2SEG_* settings cannot silently use another split: an explicit setting that
  differs from the recorded one is refused in one line.
- the data folder of the last `c2seg serve`, so that `c2seg admin --db URL` finds the stored
  submissions without being told `--data-dir` again.

A database that already holds submissions when its split is first recorded was served by a
release without secret seeds: it gets the split that release used (its settings, else the old
public default seed), marked `legacy`, so its scores stay right; `c2seg admin rescore
--new-split-seed` moves it to a secret one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from c2seg_kit.errors import C2SegError

from .config import Settings
from .models import ServerSetting, Submission, utcnow

SPLIT_KEYS = ("split_seed", "split_block", "public_fraction", "split_origin")
DATA_DIR = "data_dir"
DEFAULT_BLOCK = 64
DEFAULT_FRACTION = 0.5
#: The seed every server used before seeds were secret (it is in the code, so it is public).
LEGACY_SEED = 2023
#: Why the recorded seed is what it is.
ORIGINS = {"secret": "made with `secrets` when the database was first served",
           "given": "given by C2SEG_SPLIT_SEED when the database was first served",
           "legacy": "the public default of releases before secret seeds (anyone can compute the private mask)"}


@dataclass(frozen=True)
class Split:
    seed: int
    block: int
    fraction: float
    origin: str = "secret"

    def rows(self) -> list[tuple[str, str]]:
        """(key, value) of each `server_settings` row that records this split."""
        return [(k, str(v)) for k, v in zip(SPLIT_KEYS, (self.seed, self.block, self.fraction, self.origin), strict=True)]

    def scorer_kwargs(self) -> dict:
        return {"seed": self.seed, "block": self.block, "fraction": self.fraction}

    def __repr__(self) -> str:  # never the seed, wherever a Split ends up printed or logged
        return f"Split(block={self.block}, fraction={self.fraction}, origin={self.origin!r})"


def new_seed() -> int:
    return secrets.randbits(63)


def proposed_split(settings: Settings, *, legacy: bool = False) -> Split:
    """The split to record for a database that has none: explicit settings, else the defaults
    with a fresh secret seed (or, for a database scored by an older release, its public default)."""
    if settings.split_seed is not None:
        seed, origin = settings.split_seed, "given"
    elif legacy:
        seed, origin = LEGACY_SEED, "legacy"
    else:
        seed, origin = new_seed(), "secret"
    return Split(seed=seed, block=settings.split_block or DEFAULT_BLOCK,
                 fraction=settings.public_fraction or DEFAULT_FRACTION, origin=origin)


def get(s: Session, key: str) -> str | None:
    row = s.get(ServerSetting, key)
    return None if row is None else row.value


def put(s: Session, key: str, value: str) -> None:
    """Set one value (replacing it), committed; two processes setting it at once both succeed."""
    for attempt in range(2):
        row = s.get(ServerSetting, key)
        if row is None:
            s.add(ServerSetting(key=key, value=value))
        elif row.value != value:
            row.value, row.updated = value, utcnow()
        try:
            s.commit()
            return
        except IntegrityError:  # another process inserted it first: update that row instead
            s.rollback()
            if attempt:
                raise


def read_split(s: Session) -> Split | None:
    values = {r.key: r.value for r in s.scalars(select(ServerSetting).where(ServerSetting.key.in_(SPLIT_KEYS)))}
    if "split_seed" not in values:
        return None
    return Split(seed=int(values["split_seed"]), block=int(values["split_block"]),
                 fraction=float(values["public_fraction"]), origin=values.get("split_origin", "given"))


def record_split(s: Session, settings: Settings, proposal: Split | None = None) -> Split:
    """The database's split, recorded now if it has none (atomically: of several processes
    starting at once, the first one's split wins and the others read it). Explicit settings
    (or a `proposal`, e.g. the split a scoring pool was built with) that differ from the
    recorded split are refused: the split of a served database never changes silently."""
    split = read_split(s)
    if split is None:
        has_submissions = bool(s.scalar(select(func.count()).select_from(Submission)))
        split = proposal or proposed_split(settings, legacy=has_submissions)
        for key, value in split.rows():
            s.add(ServerSetting(key=key, value=value))
        try:
            s.commit()
        except IntegrityError:  # another process recorded one first: that one holds
            s.rollback()
            split = read_split(s)
    check_split(split, settings, proposal)
    return split


def check_split(split: Split, settings: Settings, proposal: Split | None = None) -> None:
    """Refuse explicit settings that differ from the recorded split (one line; never the seed)."""
    differs = []
    if settings.split_seed is not None and settings.split_seed != split.seed:
        differs.append("C2SEG_SPLIT_SEED differs from the recorded seed")
    if settings.split_block is not None and settings.split_block != split.block:
        differs.append(f"C2SEG_SPLIT_BLOCK={settings.split_block} (recorded: {split.block})")
    if settings.public_fraction is not None and settings.public_fraction != split.fraction:
        differs.append(f"C2SEG_PUBLIC_FRACTION={settings.public_fraction:g} (recorded: {split.fraction:g})")
    if proposal is not None and (proposal.seed, proposal.block, proposal.fraction) != (split.seed, split.block,
                                                                                      split.fraction):
        differs.append("the scoring pool was built with another split")
    if differs:
        raise C2SegError(f"this database's public/private split is recorded and cannot change: "
                         f"{'; '.join(differs)}; unset those settings (c2seg admin split-seed shows the split)")


def replace_split(s: Session, split: Split) -> None:
    """Record `split` in place of the current one, in the session's transaction, and commit (with
    whatever else the session holds: `admin rescore --new-split-seed` commits the new scores too)."""
    for key, value in split.rows():
        row = s.get(ServerSetting, key)
        if row is None:
            s.add(ServerSetting(key=key, value=value))
        else:
            row.value, row.updated = value, utcnow()
    s.commit()


def record_data_dir(s: Session, data_dir: Path) -> None:
    put(s, DATA_DIR, str(Path(data_dir).resolve()))


def recorded_data_dir(s: Session) -> Path | None:
    value = get(s, DATA_DIR)
    return None if value is None else Path(value)
