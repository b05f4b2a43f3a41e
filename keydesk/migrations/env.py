"""Alembic environment: the engine comes from keydesk (config.attributes), never from an ini file."""

from alembic import context
from sqlmodel import SQLModel

import store.tables  # noqa: F401

config = context.config
engine = config.attributes["engine"]

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
