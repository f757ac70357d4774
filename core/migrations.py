"""Schema migrations with Alembic: each service migrates only its own tables.

Every service keeps its revisions in `services/<name>/migrations/` and its own version table
(`alembic_version_<name>`), so services sharing one database never step on each other and a
service can move to a database of its own. Revisions run at start-up; on PostgreSQL an
advisory lock makes replicas starting together take turns instead of racing DDL.

New revision after a model change:  python -m devstack.migrations revision <service> -m "..."
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Literal

from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, TypeDecorator, text
from sqlalchemy.ext.asyncio import AsyncEngine

# env.py and the revision template, shared by every service (the scripts are theirs).
SCRIPT_DIR = Path(__file__).resolve().parent / "alembic"


def alembic_config(service: str, versions: Path, metadata: MetaData) -> Config:
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(versions))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["metadata"] = metadata
    config.attributes["version_table"] = version_table(service)
    return config


def version_table(service: str) -> str:
    return f"alembic_version_{service}"


def configure_context(context: EnvironmentContext | Any, connection: Connection) -> None:
    """The options every run needs, for start-up upgrades and for autogenerate alike."""
    attributes = context.config.attributes
    metadata: MetaData = attributes["metadata"]
    tables = set(metadata.tables)
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=attributes["version_table"],
        # SQLite alters tables by copying them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        # Other services' tables share the database: they are not ours to drop.
        include_name=lambda name, kind, _parent: kind != "table" or name in tables,
        compare_type=True,
        render_item=_render_item,
    )


def _render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # A TypeDecorator only changes Python-side values: revisions store its database type,
    # so they never import application code that may change later.
    if kind == "type" and isinstance(item, TypeDecorator):
        return "sa." + repr(item.impl_instance)
    return False


async def upgrade(engine: AsyncEngine, service: str, versions: Path, metadata: MetaData) -> None:
    """Bring the service's tables to the newest revision, in one transaction."""
    config = alembic_config(service, versions, metadata)
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held until commit: a second replica waits, then finds nothing left to do.
            key = zlib.crc32(version_table(service).encode())
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        await conn.run_sync(_upgrade, config)


def _upgrade(connection: Connection, config: Config) -> None:
    script = ScriptDirectory.from_config(config)

    def to_head(revision: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs("head", revision)

    with EnvironmentContext(config, script, fn=to_head, destination_rev="head") as context:
        configure_context(context, connection)
        with context.begin_transaction():
            context.run_migrations()
