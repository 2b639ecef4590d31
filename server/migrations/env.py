"""Alembic environment: runs migrations on the connection the server hands over (db.upgrade_db),
or, from the `alembic` command line, on `-x url=...` (or sqlalchemy.url in the ini file)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from c2seg_server.models import Base

config = context.config


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.begin() as conn:
        run(conn)
    engine.dispose()
