"""Hardening (second round): upload slots taken before an upload's body is read
(per-team concurrency, the refused-upload cap, the spool budget), and the server's own
settings (the secret split seed, the split's block and fraction, the data folder).

Both are new tables, so rows of earlier releases are untouched. Nothing is recorded here: a
database with submissions scored before this release gets its split recorded at its next
`c2seg serve` (see stored.py: the legacy default, which that server used).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_slots",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
    )
    op.create_index("ix_upload_slots_team", "upload_slots", ["team_id"])
    op.create_table(
        "server_settings",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(4096), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
    op.drop_index("ix_upload_slots_team", "upload_slots")
    op.drop_table("upload_slots")
