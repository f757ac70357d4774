from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, select

from core.calendar import VIETNAM
from core.storage import SQLITE_BUSY_S, UtcDateTime, create_engine, create_tables

metadata = MetaData()
moments = Table(
    "moments", metadata, Column("id", Integer, primary_key=True), Column("at", UtcDateTime())
)


async def test_an_instant_in_vietnam_time_comes_back_as_the_same_instant(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await create_tables(engine, metadata)
    due = datetime(2026, 11, 30, 17, 0, tzinfo=VIETNAM)
    async with engine.begin() as conn:
        await conn.execute(moments.insert().values(id=1, at=due))
        stored = (await conn.execute(select(moments.c.at))).scalar_one()
    await engine.dispose()
    assert stored == due
    assert stored.tzinfo is UTC
    assert stored.hour == 10


async def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}")
    await create_tables(engine, metadata)
    with pytest.raises(Exception, match="naive datetime"):
        async with engine.begin() as conn:
            await conn.execute(moments.insert().values(id=1, at=datetime(2026, 1, 1)))
    await engine.dispose()


async def test_a_sqlite_file_pool_takes_the_service_size_and_outwaits_the_write_lock(
    tmp_path: Path,
) -> None:
    # It used to be SQLAlchemy's default (5 + 10 overflow, 30 s) whatever the service asked.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 't.db'}", pool_size=25)
    pool: Any = engine.pool
    assert pool.size() == 25
    assert pool.timeout() > SQLITE_BUSY_S
    held = [await engine.connect() for _ in range(30)]  # more than the old 15 at once
    for connection in held:
        await connection.close()
    await engine.dispose()


@pytest.mark.parametrize("existing", [False, True])
async def test_sqlite_files_are_readable_by_their_owner_only(
    tmp_path: Path, existing: bool
) -> None:
    database = tmp_path / "var" / "identity.db"
    if existing:  # made before the rule, world-readable
        database.parent.mkdir()
        database.touch(mode=0o644)
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await create_tables(engine, metadata)
    async with engine.begin() as conn:
        await conn.execute(moments.insert().values(id=1, at=datetime.now(UTC)))
        modes = _modes(tmp_path / "var")
    await engine.dispose()
    assert "identity.db-wal" in modes
    assert set(modes.values()) == {oct(0o600)}, modes


def _modes(directory: Path) -> dict[str, str]:
    return {f.name: oct(f.stat().st_mode & 0o777) for f in directory.glob("identity.db*")}
