from pathlib import Path

from sqlalchemy import MetaData

from core.events import new_event
from core.inbox import first_seen, inbox_table
from core.storage import create_engine, create_tables, session_factory
from gateway.v1 import events_pb2


async def test_a_redelivery_inside_one_batch_is_claimed_once(tmp_path: Path) -> None:
    metadata = MetaData()
    table = inbox_table(metadata, "test")
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    await create_tables(engine, metadata)
    one, other = (
        new_event(events_pb2.DossierCompleted(dossier_code=c), source="/t", dossier_code=c)
        for c in ("A", "B")
    )
    async with session_factory(engine).begin() as session:
        assert await first_seen(session, table, [one, one, other]) == [one, other]
        assert await first_seen(session, table, [one, other]) == []
    await engine.dispose()
