"""Alembic environment for the gateway's schema (DESIGN.md §5, STYLE.md G11).

Two ways in:

- Programmatically, from :func:`gateway.store.db.upgrade_to_head`: the caller
  puts an open connection in ``config.attributes["connection"]`` (Alembic
  cookbook, "Sharing a Connection across one or more programmatic migration
  commands"). No ``alembic.ini`` exists then, and logging is left alone.
- From the ``alembic`` command line, for developers, with the repository's
  ``alembic.ini``; the URL is ``sqlalchemy.url`` there, or ``-x url=...``.

SQLite cannot ``ALTER`` most things, so migrations run in batch mode there
(``render_as_batch``), which rebuilds tables; PostgreSQL gets plain ``ALTER``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from gateway.store.db import create_engine_for
from gateway.store.models import Base

config = context.config
target_metadata = Base.metadata

_shared_connection: Connection | None = config.attributes.get("connection")

# Only the command line configures logging: fileConfig() would replace the
# running gateway's handlers and disable its existing loggers.
if _shared_connection is None and config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: set sqlalchemy.url in alembic.ini or pass -x url=...")
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Write the migration SQL to standard output instead of running it (``--sql``)."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the shared connection, or on a new engine's."""
    if _shared_connection is not None:
        _configure(_shared_connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # The same engine set-up as the gateway's (SQLite pragmas, transactional DDL).
    engine = create_engine_for(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
