"""Engine and schema of the store: URLs, SQLAlchemy engines, Alembic, retryable errors.

- URLs: `default_store_url` (`$EVOLVE_STORE`, else `DEFAULT_URL`), `parse_url` (validates
  and picks the psycopg driver), `display` (the URL without its password).
- `make_engine`: SQLite with WAL, foreign keys, a busy timeout and `BEGIN IMMEDIATE` for
  writes; PostgreSQL with pre-ping and a connect timeout.
- `head_revision` and `ensure_schema`: create a fresh database at the head revision,
  refuse (or upgrade) an older one, refuse a newer one.
- `is_retryable`: lock timeouts, deadlocks and serialization failures.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from evolve.store.errors import (
    SchemaVersionError,
    StoreConfigError,
    StoreError,
    StoreUnreachableError,
)
from evolve.store.models import Base

_log = logging.getLogger(__name__)

ENV_VAR = "EVOLVE_STORE"
DEFAULT_URL = "sqlite:///runs/evolve.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
UPGRADE_COMMAND = "python -m evolve.store upgrade"

CONNECT_TIMEOUT_SECONDS = 10
WRITE = "evolve_store_write"  # execution option: open the SQLite transaction IMMEDIATE
_SCHEMA_LOCK_KEY = zlib.crc32(b"evolve.store.schema")  # PostgreSQL advisory lock id


def default_store_url() -> str:
    """`$EVOLVE_STORE` if set, else `sqlite:///runs/evolve.db` (relative to the working
    directory)."""
    return os.environ.get(ENV_VAR) or DEFAULT_URL


# -- URLs -------------------------------------------------------------------------------------


def parse_url(url: str) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except ArgumentError as exc:
        raise StoreConfigError(
            f"store URL {url!r} is not a database URL; expected e.g. 'sqlite:///runs/evolve.db' "
            "or 'postgresql+psycopg://user:pass@host/db'"
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg (3) is the driver this project installs; SQLAlchemy's default is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreConfigError(
            f"store URL {display(parsed)!r}: unsupported database "
            f"{parsed.get_backend_name()!r}; use sqlite or postgresql"
        )
    return parsed


def display(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def is_memory_sqlite(url: sa.URL) -> bool:
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


# -- engines ----------------------------------------------------------------------------------


def _json_dumps(value: Any) -> str:
    # Non-finite floats were tagged by JSONValue already; anything left is a bug.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def make_engine(url: sa.URL, busy_timeout: float, read_only: bool = False) -> sa.Engine:
    """``read_only``: the database refuses writes (SQLite ``mode=ro``, PostgreSQL read-only transactions)."""
    if url.get_backend_name() == "postgresql":
        # A server that does not answer fails the connection in seconds, not minutes.
        connect_args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if read_only:
            connect_args["options"] = "-c default_transaction_read_only=on"
        return sa.create_engine(url, pool_pre_ping=True, json_serializer=_json_dumps, connect_args=connect_args)

    memory = is_memory_sqlite(url)
    kwargs: dict[str, Any] = {
        "json_serializer": _json_dumps,
        "connect_args": {"check_same_thread": False, "timeout": busy_timeout},
    }
    if memory:
        # One shared connection, so every thread sees the same in-memory database.
        kwargs["poolclass"] = StaticPool
    elif read_only and url.database and not url.database.startswith("file:"):
        path = Path(url.database).expanduser().absolute()
        url = url.set(database=f"file:{path}?mode=ro", query={"uri": "true"})
    elif url.database and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (SQLAlchemy's documented
        # recipe), so that writes can BEGIN IMMEDIATE and DDL is transactional.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory and not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A write takes the write lock up front: waiting in BEGIN honours busy_timeout,
        # whereas upgrading a read transaction later fails at once with "locked".
        immediate = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def is_retryable(exc: BaseException | None) -> bool:
    """Lock timeouts, deadlocks and serialization failures: the transaction can be rerun."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in ("40001", "40P01", "55P03"):
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database is busy" in message or (
        "database table is locked" in message
    )


def is_disconnect(exc: BaseException | None) -> bool:
    """The database went away (a restart, a failover, a network cut): retry once it is back.

    SQLAlchemy flags a dropped connection itself (``connection_invalidated``); a server that is
    restarting refuses new connections (an OperationalError) or says it is shutting down or
    starting up (SQLSTATE class 57P, 08 for connection exceptions).
    """
    if not isinstance(exc, sa.exc.DBAPIError) or is_retryable(exc):
        return False
    if exc.connection_invalidated or isinstance(exc, sa.exc.OperationalError):
        return True
    state = str(getattr(exc.orig, "sqlstate", "") or "")
    return state.startswith(("08", "57P"))


# -- schema (Alembic) -------------------------------------------------------------------------


def alembic_config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The schema revision this version of the code needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def ensure_schema(engine: sa.Engine, url: str, upgrade: bool, read_only: bool = False) -> None:
    """Create a fresh database at the head revision; pass at the head; upgrade an older
    schema if `upgrade`, else raise `SchemaVersionError` naming the upgrade command; always
    raise for a newer or foreign one. `url` is the display URL for messages. The caller
    serializes access to an in-memory database."""
    head = head_revision()
    try:
        raw_connection = engine.connect()
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        # A lock (a fresh SQLite file whose schema another process is creating) is chained, so
        # the store's retry sees it; anything else (a wrong URL) fails at once, unchained.
        raise StoreUnreachableError(f"store {url}: cannot connect ({reason})") from (
            exc if is_retryable(exc) else None)
    try:
        with raw_connection as raw:
            connection = raw.execution_options(**{WRITE: not read_only})
            with connection.begin():
                if read_only:
                    current = MigrationContext.configure(connection).get_current_heads()
                    if tuple(current) != (head,):
                        raise SchemaVersionError(
                            f"{url}: opened read-only, but its schema is at {', '.join(current) or 'nothing'}, "
                            f"not {head}: open it once read-write (or run {UPGRADE_COMMAND} '{url}')"
                        )
                    return
                if engine.dialect.name != "sqlite":
                    # Two processes opening a fresh database must not both create it.
                    connection.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                    )
                current = MigrationContext.configure(connection).get_current_heads()
                if not current:
                    existing = set(sa.inspect(connection).get_table_names())
                    if existing & set(Base.metadata.tables):
                        raise SchemaVersionError(
                            f"{url}: has store tables but no alembic_version table, so "
                            "it was not created by evolve.store; use a fresh database"
                        )
                    command.upgrade(alembic_config(connection), "head")
                    return
                if tuple(current) == (head,):
                    return
                unknown = sorted(set(current) - _known_revisions())
                if unknown:
                    raise SchemaVersionError(
                        f"{url}: schema revision {', '.join(unknown)} is unknown to this "
                        f"version of evolve-merge (which needs {head}); it was written by a "
                        "newer version: upgrade the evolve-merge package"
                    )
                if not upgrade:
                    raise SchemaVersionError(
                        f"{url}: schema revision {', '.join(current)} is older than "
                        f"{head}, which this version of evolve-merge needs. Back up the "
                        f"database, then run: {UPGRADE_COMMAND} '{url}'"
                    )
                _log.info("upgrading %s from %s to %s", url, current, head)
                command.upgrade(alembic_config(connection), "head")
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None) or exc
        raise StoreError(f"{url}: {type(orig).__name__}: {orig}") from exc


def current_revision(connection: sa.Connection) -> str | None:
    """The Alembic revision the database behind `connection` is at."""
    return MigrationContext.configure(connection).get_current_revision()
