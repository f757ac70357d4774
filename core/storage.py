"""Database engine and sessions: PostgreSQL in deployments and CI, SQLite embedded.

Every service owns its tables (names prefixed with the service) so that services can share
one database in small deployments without ever reading each other's rows.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData, TypeDecorator, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult, Result, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.sql.schema import Table


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, always UTC in Python. SQLite keeps no offset, so without this an aware
    datetime in another zone (a due time at 17:00 in Hà Nội) would come back as naive
    17:00 and be read as UTC; PostgreSQL's timestamptz gets the same values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware datetime to a UtcDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# How long a SQLite connection waits for the write lock before "database is locked".
SQLITE_BUSY_S = 30

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for outboxes.
BigId = BigInteger().with_variant(Integer(), "sqlite")


PG_POOL_WAIT_S = 5.0


def create_engine(database_url: str, pool_size: int = 10) -> AsyncEngine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            _private_file(Path(url.database))
            # A file connection is cheap and readers run beside the writer (WAL): the pool
            # takes the service's size and lets a burst overflow as far again. A waiter may
            # queue behind writers that each wait up to the 30 s busy timeout for the one
            # write lock, so it waits longer than that before giving up.
            engine = _create_async_engine(
                url,
                connect_args={"timeout": SQLITE_BUSY_S},
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=2 * SQLITE_BUSY_S,
            )
        else:
            engine = _create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_S})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # A fixed pool: a burst waits for a connection instead of forking new PostgreSQL
    # backends that are closed again right after. No pre-ping round trip per checkout: a
    # broken connection fails its transaction, which the callers retry. A waiter gives up
    # after PG_POOL_WAIT_S (an HTTP request then gets 503 with Retry-After, a worker tries
    # again later) rather than SQLAlchemy's 30 s, by which time the client has given up and
    # asks again: a chaos run's backlog of agency callbacks held routing saturated for minutes.
    return _create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_recycle=1800,
        pool_timeout=PG_POOL_WAIT_S,
    )


def _private_file(path: Path) -> None:
    """The database file readable by its owner only (citizens' data is in it); SQLite
    gives its -wal and -shm files the same mode as the database file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    path.chmod(0o600)  # also when it was created, looser, before this rule


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the single writer; NORMAL sync is durable in WAL mode
    # against process crashes, which is what the embedded default must survive.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_tables(engine: AsyncEngine, metadata: MetaData) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def upsert(engine_or_dialect: AsyncEngine | str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports on_conflict_do_nothing/do_update on both backends."""
    name = (
        engine_or_dialect if isinstance(engine_or_dialect, str) else engine_or_dialect.dialect.name
    )
    if name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def supports_skip_locked(engine: AsyncEngine) -> bool:
    # SQLite has a single writer, so there is nothing to skip; PostgreSQL rows are locked.
    return engine.dialect.name == "postgresql"


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE matched. `session.execute` is typed to return a Result; for
    those statements it is a CursorResult, which alone has the count."""
    return cast(CursorResult[Any], result).rowcount
