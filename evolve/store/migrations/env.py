"""Alembic environment of the evolve store.

The store runs migrations programmatically (`evolve.store.store.upgrade_schema`) and hands
its own connection, already inside a transaction that holds the migration lock, through
`config.attributes["connection"]`. Run by hand (`alembic -x url=... upgrade head` with a
config whose script_location points here), it connects to `sqlalchemy.url` or `-x url=`.
Logging is left alone on purpose: this file must not reconfigure the host application.
"""

from alembic import context
from sqlalchemy import create_engine

from evolve.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection=None, url=None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs table rebuilds for most ALTERs
        compare_type=True,
    )


def run_migrations_offline() -> None:
    _configure(url=context.get_x_argument(as_dictionary=True).get("url")
               or config.get_main_option("sqlalchemy.url"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
