"""The participants' site: signed-in browser sessions (a new table; nothing earlier is touched).

Only the SHA-256 of a session id is stored, with the team's token hash at sign-in (a rotated or
revoked token ends the session) and the session's expiry.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "site_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("flash", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
        sa.UniqueConstraint("id_hash"),
    )
    op.create_index("ix_site_sessions_team", "site_sessions", ["team_id"])


def downgrade() -> None:
    op.drop_index("ix_site_sessions_team", "site_sessions")
    op.drop_table("site_sessions")
