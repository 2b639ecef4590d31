"""Settings the server records in its own database (table `server_settings`), so that every
process that opens the database agrees on them whatever its environment says:

- the public/private split: its seed, block size and public fraction. The seed is secret: made
  with `secrets` the first time a database is served, it never appears in a response, page, log
  or export (`c2seg admin split-seed` shows it to the organizer). `c2seg serve` and
  `c2seg admin rescore` both take the split from here once it is recorded, so a rescore from a
  shell with other C2SEG_* settings cannot silently use another split: an explicit setting that
  differs from the recorded one is refused in one line.
- the data folder of the last `c2seg serve`, so that `c2seg admin --db URL` finds the stored
  submissions without being told `--data-dir` again, and a later `c2seg serve` without
  `--data-dir` keeps using it. A different folder is used only when given, and only when the
  stored submissions are there (:func:`settle_data_dir`).
- each track's labels (the sha256 of the labels file, and its layout): every score on the board
  was computed on them. `c2seg serve` refuses other labels for a track that has submissions
  unless told to rescore; `c2seg admin rescore` records the new ones together with the new
  scores; a running server whose labels or split are no longer the recorded ones refuses to
  score (:func:`basis_change`), so the board never mixes two label versions or two splits.

A database that already holds submissions when its split is first recorded was served by a
release without secret seeds: it gets the split that release used (its settings, else the old
public default seed), marked `legacy`, so its scores stay right; `c2seg admin rescore
--new-split-seed` moves it to a secret one.
"""

from __future__ import annotations

import hashlib
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
#: Per track: the sha256 of the labels file the board's scores were computed on, and its layout.
LABELS_SHA256 = "labels_sha256:{}"
LABELS_LAYOUT = "labels_layout:{}"
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


def write_split(s: Session, split: Split) -> None:
    """Put `split` in place of the current one in the session's transaction, not committed: the
    caller commits it with the scores computed on it (`admin rescore --new-split-seed`)."""
    _write(s, split.rows())


def _write(s: Session, rows) -> None:
    for key, value in rows:
        row = s.get(ServerSetting, key)
        if row is None:
            s.add(ServerSetting(key=key, value=value))
        elif row.value != value:
            row.value, row.updated = value, utcnow()
    s.flush()  # the rows are written (and locked) now: see basis_change


# --- the data folder --------------------------------------------------------------------------

def record_data_dir(s: Session, data_dir: Path) -> None:
    put(s, DATA_DIR, str(Path(data_dir).resolve()))


def recorded_data_dir(s: Session) -> Path | None:
    value = get(s, DATA_DIR)
    return None if value is None else Path(value)


def settle_data_dir(s: Session, data_dir: Path) -> Path | None:
    """Record `data_dir` as the server's data folder. Returns the folder recorded before when it
    was another one (None otherwise). Refused in one line while stored submissions are in the
    recorded folder and not in the new one: moving the folder (or its `submissions/`) first is
    what makes a change safe."""
    data_dir = Path(data_dir).resolve()
    before = recorded_data_dir(s)
    if before is not None and before != data_dir:
        names = s.scalars(select(Submission.stored_as)).all()
        left = [n for n in names if (before / "submissions" / n).is_file()
                and not (data_dir / "submissions" / n).is_file()]
        if left:
            raise C2SegError(
                f"{len(left)} stored submission(s) are in the data folder {before} (recorded by the last "
                f"c2seg serve), not in {data_dir}: move {before / 'submissions'} to {data_dir / 'submissions'} "
                "first, or leave out --data-dir to keep using the recorded folder")
    record_data_dir(s, data_dir)
    return before if before != data_dir else None


# --- the labels the scores are computed on ---------------------------------------------------

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Basis:
    """What every score of a board is computed on: each track's labels (sha256 of the file) and
    the split. A server keeps the one it started with and compares it with the database's."""

    labels: dict[str, str]
    split: Split


def recorded_labels(s: Session) -> dict[str, tuple[str, str | None]]:
    """track -> (sha256, layout) of the labels recorded for it."""
    rows = dict(s.execute(select(ServerSetting.key, ServerSetting.value)
                          .where(ServerSetting.key.like("labels_%:%"))).all())
    prefix = LABELS_SHA256.format("")
    return {k[len(prefix):]: (v, rows.get(LABELS_LAYOUT.format(k[len(prefix):])))
            for k, v in rows.items() if k.startswith(prefix)}


def changed_labels(s: Session, digests: dict[str, str]) -> dict[str, str | None]:
    """track -> the recorded sha256 (None: none recorded) of each track whose labels differ from
    the recorded ones."""
    recorded = recorded_labels(s)
    return {t: recorded.get(t, (None,))[0] for t, d in digests.items() if recorded.get(t, (None,))[0] != d}


def record_labels(s: Session, digests: dict[str, str], layouts: dict[str, str]) -> None:
    """Write each track's labels (not committed: the caller commits them with the scores)."""
    _write(s, [(key.format(t), v) for t in digests
               for key, v in ((LABELS_SHA256, digests[t]), (LABELS_LAYOUT, layouts[t]))])


def check_labels(s: Session, digests: dict[str, str], layouts: dict[str, str], paths: dict[str, str]) -> None:
    """Record the labels a server starts with. Labels other than the recorded ones of a track
    that has stored submissions are refused in one line: its scores were computed on the
    recorded ones (`c2seg serve --rescore` or `c2seg admin rescore` rescore them first)."""
    for track, before in sorted(changed_labels(s, digests).items()):
        if before is not None and s.scalar(select(func.count()).select_from(Submission)
                                           .where(Submission.track == track)):
            raise C2SegError(
                f"the labels {paths[track]} of track {track} are not the ones this database's scores were "
                f"computed on (sha256 {digests[track][:12]}..., recorded {before[:12]}...): serve the recorded "
                "labels, or add --rescore to rescore every stored submission against these first")
    record_labels(s, digests, layouts)
    s.commit()


def basis_change(s: Session, basis: Basis, track: str, *, lock: bool = False) -> str | None:
    """What of `basis` (a server's labels of `track`, its split) the database no longer records,
    in a few words; None when nothing changed. With `lock`, inside the transaction that writes a
    submission (after its rows are written): the rows are locked (PostgreSQL; SQLite's write
    lock is already held), so a rescore that commits new labels either waits for this
    transaction, and then rescores its submission, or is seen here."""
    keys = [LABELS_SHA256.format(track), *SPLIT_KEYS[:3]]
    q = select(ServerSetting.key, ServerSetting.value).where(ServerSetting.key.in_(keys))
    values = dict(s.execute(q.with_for_update() if lock else q).all())
    if values.get(keys[0]) != basis.labels.get(track):
        return f"the labels of track {track}"
    split = basis.split
    if [values.get(k) for k in SPLIT_KEYS[:3]] != [str(split.seed), str(split.block), str(split.fraction)]:
        return "the public/private split"
    return None
