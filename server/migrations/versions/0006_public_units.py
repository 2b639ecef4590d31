"""The public part's per-unit counts of each scored submission (public_units.py), which the
parameter-free Ladder reads its threshold from.

A new table, so rows of earlier releases are untouched; their submissions have no counts until
`c2seg admin rescore` computes them (meanwhile the Ladder compares them with its fixed step).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "public_units",
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("counts", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("submission_id"),
        sa.ForeignKeyConstraint(["submission_id"], ["submissions.id"], ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("public_units")
