"""Leaderboard features: submission metadata, final picks, hidden submissions,
prediction-content hashes, disqualification, team members, and scheduled phase changes.

Every new column is nullable or has a server default, so rows of 0.1 stay valid as they are.
The `phases` table (one current phase per track) becomes `phase_changes` (a dated list):
each of its rows moves over as a change at the time it was made.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("teams", sa.Column("disqualified", sa.DateTime(), nullable=True))
    op.add_column("teams", sa.Column("disqualified_reason", sa.String(300), nullable=True))

    op.add_column("submissions", sa.Column("description", sa.Text(), nullable=True))
    op.add_column("submissions", sa.Column("url", sa.String(300), nullable=True))
    op.add_column("submissions", sa.Column("final_pick", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("submissions", sa.Column("hidden", sa.DateTime(), nullable=True))
    op.add_column("submissions", sa.Column("content_sha256", sa.String(64), nullable=True))
    op.create_index("ix_submissions_sha256", "submissions", ["sha256"])
    op.create_index("ix_submissions_content_sha256", "submissions", ["content_sha256"])

    op.create_table(
        "team_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("affiliation", sa.String(200), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.UniqueConstraint("team_id", "email", name="uq_team_members_team_email"),
    )
    op.create_index("ix_team_members_team_id", "team_members", ["team_id"])

    changes = op.create_table(
        "phase_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("track", sa.String(8), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("cap", sa.Integer(), nullable=True),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_phase_changes_track_at", "phase_changes", ["track", "at"])
    phases = sa.table("phases", sa.column("track", sa.String), sa.column("phase", sa.String),
                      sa.column("changed", sa.DateTime))
    op.execute(changes.insert().from_select(
        ["track", "phase", "at", "created"],
        sa.select(phases.c.track, phases.c.phase, phases.c.changed, phases.c.changed).order_by(phases.c.track)))
    op.drop_table("phases")


def downgrade() -> None:
    op.create_table(
        "phases",
        sa.Column("track", sa.String(8), nullable=False),
        sa.Column("phase", sa.String(8), nullable=False),
        sa.Column("changed", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("track"),
    )
    # Each track's latest change that has taken effect becomes its current phase.
    op.execute(
        "INSERT INTO phases (track, phase, changed) "
        "SELECT c.track, c.phase, c.at FROM phase_changes c WHERE c.id = ("
        " SELECT c2.id FROM phase_changes c2 WHERE c2.track = c.track AND c2.at <= CURRENT_TIMESTAMP"
        " ORDER BY c2.at DESC, c2.id DESC LIMIT 1)")
    op.drop_table("phase_changes")
    op.drop_table("team_members")
    op.drop_index("ix_submissions_content_sha256", "submissions")
    op.drop_index("ix_submissions_sha256", "submissions")
    with op.batch_alter_table("submissions") as batch:
        for column in ("content_sha256", "hidden", "final_pick", "url", "description"):
            batch.drop_column(column)
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("disqualified_reason")
        batch.drop_column("disqualified")
