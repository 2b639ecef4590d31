"""Write tests/fixtures/c2seg-0.1.db: a SQLite database as c2seg-kit 0.1 (before Alembic) made it.

The schema is that release's `create_all` (tests/legacy_schema_v0.py, a frozen copy of its
models); the rows are a small but complete board: a baseline team, a revoked team, submissions
with both score rows, a live quota reservation, refused uploads and a phase change. The
migration tests open a copy with today's server and check that every row survives.

    python tests/make_legacy_db.py [OUT]        # default: tests/fixtures/c2seg-0.1.db
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import legacy_schema_v0 as v0  # noqa: E402

FIXTURE = HERE / "fixtures" / "c2seg-0.1.db"
T0 = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.timezone.utc)
CLASSES = ["surface_water", "street", "urban_fabric", "industrial_commercial_transport", "mine_dump_construction",
           "artificial_vegetated", "arable_land", "permanent_crops", "pastures", "forests", "shrub",
           "open_spaces", "inland_wetlands"]


def scores(split: str, miou: float, n: int) -> v0.Score:
    per_class = {c: round(miou + 0.01 * (i % 3), 4) for i, c in enumerate(CLASSES)}
    per_class["inland_wetlands"] = None  # absent from labels and prediction
    return v0.Score(split=split, oa=round(miou + 0.1, 4), miou=miou, f1=round(miou + 0.05, 4),
                    kappa=round(miou - 0.05, 4), per_class_iou=per_class, n_pixels=n)


def rows() -> list:
    alpha = v0.Team(id=1, name="alpha", token_hash="a" * 64, created=T0)
    base = v0.Team(id=2, name="HighDAN", token_hash="b" * 64, is_baseline=True, created=T0)
    gone = v0.Team(id=3, name="<b>gone & co</b>", token_hash="c" * 64, created=T0,
                   revoked=T0 + dt.timedelta(days=2), last_reservation=T0 + dt.timedelta(days=1))
    out: list = [alpha, base, gone]
    plan = [(1, alpha, "AB", 0.41, "highdan-v1"), (2, alpha, "AB", 0.47, None), (3, base, "AB", 0.39, "HighDAN"),
            (4, gone, "AB", 0.35, None), (5, alpha, "BW", 0.30, "bw-run")]
    for sid, team, track, miou, method in plan:
        created = T0 + dt.timedelta(hours=sid)
        sub = v0.Submission(id=sid, team=team, track=track, created=created, scored=created + dt.timedelta(seconds=3),
                            filename=f"pred{sid}.h5", size=12000 + sid, sha256=f"{sid:064x}",
                            stored_as=f"{created:%Y%m%d}-{sid:032x}.h5", method=method)
        sub.scores = [scores("public", miou, 5000 + sid), scores("private", round(miou - 0.02, 4), 5100 + sid)]
        out.append(sub)
    out.append(v0.QuotaReservation(id=1, team_id=1, track="AB", created=T0 + dt.timedelta(days=1),
                                   expires=T0 + dt.timedelta(days=1, minutes=5)))
    out += [v0.FailedAttempt(id=i, team_id=1, created=T0 + dt.timedelta(minutes=i), reason=f"refused #{i}")
            for i in (1, 2)]
    out.append(v0.Phase(track="BW", phase="closed", changed=T0 + dt.timedelta(days=3)))
    return out


def insert(s: Session) -> None:
    """Add rows() in dependency order (teams first: some rows name their team by id only)."""
    items = rows()
    s.add_all([x for x in items if isinstance(x, v0.Team)])
    s.flush()
    s.add_all([x for x in items if not isinstance(x, v0.Team)])
    s.commit()


def write(out: Path = FIXTURE) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{tmp}")
    v0.Base.metadata.create_all(engine)
    with Session(engine) as s:
        insert(s)
    engine.dispose()
    with sqlite3.connect(tmp) as conn:  # one self-contained file (no WAL), compact
        conn.execute("VACUUM")
    tmp.replace(out)
    return out


if __name__ == "__main__":
    print(write(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE))
