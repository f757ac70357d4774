"""Every service's revisions create exactly its models, and start-up upgrades are repeatable."""

from pathlib import Path

import pytest
from sqlalchemy import inspect

from core.migrations import upgrade, version_table
from core.storage import create_engine
from devstack.migrations import SERVICES, check, service_metadata, versions_dir


@pytest.mark.parametrize("service", SERVICES)
def test_revisions_match_the_models(service: str) -> None:
    # A model change without a revision fails here: python -m devstack.migrations revision ...
    assert check(service) is None


async def test_upgrade_twice_creates_the_tables_once_beside_other_services(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    for service in ("routing", "notify", "routing"):
        await upgrade(engine, service, versions_dir(service), service_metadata(service))
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    await engine.dispose()
    expected = set(service_metadata("routing").tables) | set(service_metadata("notify").tables)
    assert expected | {version_table("routing"), version_table("notify")} == tables
