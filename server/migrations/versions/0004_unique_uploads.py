"""One submission per team and file: byte-identical re-uploads are refused by the database
itself (a unique index on team and sha256), so two identical uploads sent at once, to one
server or to several sharing a database, cannot both be accepted.

Databases of earlier releases may already hold such pairs (the check there was a read, then a
write). None is deleted: every later copy is marked with `duplicate_of`, the id of the team's
first submission of those bytes, and the index covers only the rows without a mark, so the
upgrade never fails on them. Rows written from now on never carry a mark.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX = "uq_submissions_team_sha256"
UNMARKED = sa.text("duplicate_of IS NULL")


def upgrade() -> None:
    op.add_column("submissions", sa.Column("duplicate_of", sa.Integer(), nullable=True))
    # Every copy after the first of a (team, sha256) pair points at the first.
    op.execute(
        "UPDATE submissions SET duplicate_of = ("
        " SELECT MIN(s2.id) FROM submissions s2"
        " WHERE s2.team_id = submissions.team_id AND s2.sha256 = submissions.sha256)"
        " WHERE id > ("
        " SELECT MIN(s3.id) FROM submissions s3"
        " WHERE s3.team_id = submissions.team_id AND s3.sha256 = submissions.sha256)")
    op.create_index(INDEX, "submissions", ["team_id", "sha256"], unique=True,
                    sqlite_where=UNMARKED, postgresql_where=UNMARKED)


def downgrade() -> None:
    op.drop_index(INDEX, "submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("duplicate_of")
