"""core.outbox: events staged in a transaction are written with its commit, and only then."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.events import new_event
from core.outbox import Outbox, outbox_table
from core.storage import create_engine, create_tables, session_factory
from gateway.v1 import events_pb2


def changed(code: str, note: str) -> events_pb2.DossierStatusChanged:
    return events_pb2.DossierStatusChanged(dossier_code=code, reason=note)


@pytest.fixture
async def store(tmp_path: Path) -> tuple[Outbox, async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    metadata = MetaData()
    outbox = Outbox(outbox_table(metadata, "test"), "dossier.events")
    await create_tables(engine, metadata)
    return outbox, session_factory(engine)


async def put(outbox: Outbox, session: AsyncSession, code: str, note: str) -> None:
    await outbox.put(session, new_event(changed(code, note), source="/test", dossier_code=code))


async def notes(outbox: Outbox, sessions: async_sessionmaker[AsyncSession]) -> list[str]:
    async with sessions() as session:
        values = await session.scalars(select(outbox.table.c.value).order_by(outbox.table.c.id))
        return [events_pb2.DossierStatusChanged.FromString(v).reason for v in values]


async def test_the_events_of_a_transaction_are_written_in_order_with_its_commit(
    store: tuple[Outbox, async_sessionmaker[AsyncSession]],
) -> None:
    outbox, sessions = store
    async with sessions.begin() as session:
        await put(outbox, session, "D-1", "first")
        await put(outbox, session, "D-1", "second")
        await outbox.put_many(
            session,
            [(new_event(changed("D-2", "third"), source="/test", dossier_code="D-2"), None)],
        )
        # Not yet written: the rows go in one insert when the transaction commits.
        count = await session.scalar(select(func.count()).select_from(outbox.table))
        assert count == 0
        assert not outbox.wakeup.is_set()
    assert await notes(outbox, sessions) == ["first", "second", "third"]
    assert outbox.wakeup.is_set()


async def test_a_rolled_back_transaction_writes_none_of_its_events(
    store: tuple[Outbox, async_sessionmaker[AsyncSession]],
) -> None:
    outbox, sessions = store

    async def failing_handler() -> None:
        async with sessions.begin() as session:
            await put(outbox, session, "D-1", "lost")
            raise RuntimeError("the handler failed")

    with pytest.raises(RuntimeError):
        await failing_handler()
    assert await notes(outbox, sessions) == []


async def test_one_session_over_several_transactions_writes_each_ones_events(
    store: tuple[Outbox, async_sessionmaker[AsyncSession]],
) -> None:
    outbox, sessions = store
    async with sessions() as session:
        async with session.begin():
            await put(outbox, session, "D-1", "kept")
        async with session.begin():
            await put(outbox, session, "D-2", "dropped")
            await session.rollback()
        async with session.begin():
            await put(outbox, session, "D-3", "kept too")
    assert await notes(outbox, sessions) == ["kept", "kept too"]
