"""The access log's hash chain: appends link rows, and any edit, deletion or reordering of
stored rows (the last one included) is found by verify."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.storage import create_engine, create_tables, session_factory
from services.identity import access_log
from services.identity.models import access_log as table
from services.identity.models import metadata


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}")
    await create_tables(engine, metadata)
    factory = session_factory(engine)
    async with factory.begin() as session:
        await access_log.append(
            session,
            [
                access_log.Read(
                    "ref-a", "000.00.01.H22", "identity", "residence", "HT.XNTTHN: kết hôn"
                ),
                access_log.Read("ref-b", "000.21.31.H22", "intake", "identity", "HT.KS"),
            ],
        )
    async with factory.begin() as session:
        await access_log.append(
            session,
            [access_log.Read("ref-a", "000.21.31.H22", "intake", "residence", "x", "CODE-1")],
        )
    yield factory
    await engine.dispose()


async def problems(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        return await access_log.verify_stored(session)


async def test_an_untouched_log_verifies_and_lists_per_citizen(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    assert await problems(sessions) == []
    async with sessions() as session:
        reads = await access_log.reads_of(session, "ref-a")
    assert [(r["seq"], r["service"], r["dossier_code"]) for r in reads] == [
        (3, "intake", "CODE-1"),
        (1, "identity", ""),
    ]


async def test_a_modified_row_is_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions.begin() as session:
        await session.execute(update(table).where(table.c.seq == 2).values(agency="000.99.99.H22"))
    assert await problems(sessions) == ["row 2: content changed after it was written"]


@pytest.mark.parametrize("seq", [1, 2, 3])
async def test_a_deleted_row_is_found(sessions: async_sessionmaker[AsyncSession], seq: int) -> None:
    async with sessions.begin() as session:
        await session.execute(delete(table).where(table.c.seq == seq))
    assert await problems(sessions)


async def test_swapped_rows_are_found(sessions: async_sessionmaker[AsyncSession]) -> None:
    # Swap the content of rows 1 and 2, each keeping its own (valid) hash.
    async with sessions.begin() as session:
        rows = {r.seq: dict(r._mapping) for r in (await session.execute(table.select())).all()}
        for seq, other in ((1, 2), (2, 1)):
            values = {k: v for k, v in rows[other].items() if k != "seq"}
            await session.execute(update(table).where(table.c.seq == seq).values(values))
    assert await problems(sessions)
