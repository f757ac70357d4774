"""The procedure catalogue and agency registry as routing's data.

At start (and on POST /v1/catalogue/reload, api/catalogue.py) the files in catalogue/ are
validated and written into routing's tables in one transaction, under a version number; the
SHA-256 of the files makes loading unchanged files a no-op. Journeys and delivery read an
in-memory Catalogue built from those rows, swapped whole when the version changes, so every
replica follows a change of the files within one refresh interval, without a code change.

Each version is also kept whole, for good (routing_catalogue_snapshot): routing serves them to
intake and notify over gRPC (grpc_api.CatalogueServicer), and follows the steps of the version
a dossier was received under, so a reload never changes a dossier already under way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from google.protobuf.json_format import MessageToDict, ParseDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.catalogue import (
    Agency,
    Catalogue,
    LiveCatalogue,
    Procedure,
    Step,
    catalogue_digest,
    parse_catalogue,
)
from core.catalogue_client import catalogue_of, snapshot_of
from core.clock import SYSTEM_CLOCK, Clock
from core.storage import upsert
from gateway.v1.catalogue_pb2 import CatalogueSnapshot
from services.routing.models import (
    catalogue_agencies,
    catalogue_procedures,
    catalogue_snapshots,
    catalogue_steps,
    catalogue_versions,
)
from services.routing.rows import AgencyRow, ProcedureRow, StepRow

log = logging.getLogger(__name__)
# Past versions kept in memory; older ones are read from the table again when asked for.
KEEP_VERSIONS = 32


@dataclass(frozen=True)
class Loaded:
    version: int
    sha256: str
    changed: bool


class CatalogueStore:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        directory: Path,
        variables: Mapping[str, str],
        refresh_interval_s: float,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._directory = directory
        self._env = {**os.environ, **variables}
        self._refresh_interval_s = refresh_interval_s
        self._clock = clock
        self.catalogue = LiveCatalogue()
        self.version = 0
        self._versions: OrderedDict[int, tuple[CatalogueSnapshot, Catalogue]] = OrderedDict()
        # Workers that need the catalogue (consumer, delivery) wait for the first load.
        self.ready = asyncio.Event()

    def check_files(self) -> None:
        """Fail fast at start on files that cannot be loaded, with the reason."""
        parse_catalogue(self._directory)

    async def run(self) -> None:
        """Worker: load the files, then follow the version other replicas may load."""
        await self.load_files()
        while True:
            await asyncio.sleep(self._refresh_interval_s)
            async with self._sessions() as session:
                version = await session.scalar(select(catalogue_versions.c.version))
            if version != self.version:
                await self.refresh()

    async def load_files(self) -> Loaded:
        parsed = parse_catalogue(self._directory)
        sha256 = catalogue_digest(self._directory)
        now = self._clock.now()
        async with self._sessions.begin() as session:
            # One row, locked: two replicas starting together load one after the other.
            await session.execute(
                upsert(self._engine, catalogue_versions)
                .values(id=1, version=0, sha256="", loaded_at=now)
                .on_conflict_do_nothing(index_elements=["id"])
            )
            current = (
                await session.execute(
                    select(catalogue_versions).where(catalogue_versions.c.id == 1).with_for_update()
                )
            ).one()
            changed = current.sha256 != sha256
            version = current.version + 1 if changed else current.version
            if changed:
                await _write(session, self._engine, parsed, version)
                await session.execute(
                    catalogue_versions.update()
                    .where(catalogue_versions.c.id == 1)
                    .values(version=version, sha256=sha256, loaded_at=now)
                )
            # Unchanged files are this version too: a database from before snapshots gets
            # the current one's.
            snapshot = MessageToDict(
                snapshot_of(parsed, version, sha256), preserving_proto_field_name=True
            )
            await session.execute(
                upsert(self._engine, catalogue_snapshots)
                .values(version=version, sha256=sha256, loaded_at=now, snapshot=snapshot)
                .on_conflict_do_nothing(index_elements=["version"])
            )
        log.info(
            "catalogue %s: version %d (%s)", "loaded" if changed else "unchanged", version, sha256
        )
        await self.refresh()
        return Loaded(version=version, sha256=sha256, changed=changed)

    async def refresh(self) -> None:
        """Rebuild the in-memory catalogue from the tables and swap it in."""
        async with self._sessions() as session:
            version = await session.scalar(select(catalogue_versions.c.version)) or 0
            agencies = cast(
                "list[AgencyRow]", (await session.execute(select(catalogue_agencies))).all()
            )
            procedures = cast(
                "list[ProcedureRow]", (await session.execute(select(catalogue_procedures))).all()
            )
            steps = cast(
                "list[StepRow]",
                (
                    await session.execute(
                        select(catalogue_steps).order_by(
                            catalogue_steps.c.procedure_code, catalogue_steps.c.step_index
                        )
                    )
                ).all(),
            )
        built = _build(agencies, procedures, steps).resolved(self._env)
        for agency in built.agencies.values():
            if not agency.secret:
                log.warning("agency %s has no signing secret configured", agency.code)
        self.catalogue.swap(built)
        self.version = version
        self.ready.set()

    async def snapshot(self, version: int | None = None) -> CatalogueSnapshot | None:
        """Version `version` (the current one by default) whole; None if never loaded."""
        kept = await self._kept(self.version if version is None else version)
        return kept[0] if kept else None

    async def procedure(
        self, version: int, code: str, session: AsyncSession | None = None
    ) -> Procedure | None:
        """The procedure as version `version` had it: what a dossier received under that
        version follows. Version 0 (received before versions were recorded) and a version
        not in the table take the current catalogue, procedures that left the files too.
        `session`: the caller's transaction, read in rather than beside it."""
        kept = await self._kept(version, session) if version else None
        if kept is None:
            return self.catalogue.procedure(code)
        return kept[1].procedure(code)

    async def _kept(
        self, version: int, session: AsyncSession | None = None
    ) -> tuple[CatalogueSnapshot, Catalogue] | None:
        if version in self._versions:
            self._versions.move_to_end(version)
            return self._versions[version]
        query = select(catalogue_snapshots.c.snapshot).where(
            catalogue_snapshots.c.version == version
        )
        if session is not None:
            stored = await session.scalar(query)
        else:
            async with self._sessions() as own:
                stored = await own.scalar(query)
        if stored is None:
            return None
        snapshot = ParseDict(stored, CatalogueSnapshot())
        self._versions[version] = (snapshot, catalogue_of(snapshot))
        while len(self._versions) > KEEP_VERSIONS:
            self._versions.popitem(last=False)
        return self._versions[version]


async def _write(
    session: AsyncSession, engine: AsyncEngine, parsed: Catalogue, version: int
) -> None:
    """Upsert what the files hold. Agencies that left them stay: transfers already routed
    to them are still delivered; procedures that left them are marked inactive."""
    agencies = [
        {
            "code": a.code,
            "name": a.name,
            "xroad": a.xroad,
            "channel": a.channel,
            "target": a.target,
            "secret_ref": a.secret,
            "version": version,
        }
        for a in parsed.agencies.values()
    ]
    insert = upsert(engine, catalogue_agencies)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["code"],
            set_={k: insert.excluded[k] for k in agencies[0] if k != "code"},
        ),
        agencies,
    )
    procedures = [
        {
            "code": p.code,
            "name": p.name,
            "receiving_agency": p.receiving_agency,
            "total_days": p.total_days,
            "required_fields": list(p.required_fields),
            "active": True,
            "version": version,
        }
        for p in parsed.procedures.values()
    ]
    insert = upsert(engine, catalogue_procedures)
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=["code"],
            set_={k: insert.excluded[k] for k in procedures[0] if k != "code"},
        ),
        procedures,
    )
    # Procedures gone from the files stay for the dossiers under way, but take no new ones.
    await session.execute(
        catalogue_procedures.update()
        .where(catalogue_procedures.c.version != version)
        .values(active=False)
    )
    codes = list(parsed.procedures)
    await session.execute(
        catalogue_steps.delete().where(catalogue_steps.c.procedure_code.in_(codes))
    )
    await session.execute(
        catalogue_steps.insert(),
        [
            {
                "procedure_code": p.code,
                "step_index": s.index,
                "stage": s.stage,
                "name": s.name,
                "agency_code": s.agency_code,
                "days": s.days,
            }
            for p in parsed.procedures.values()
            for s in p.steps
        ],
    )


def _build(
    agencies: Sequence[AgencyRow], procedures: Sequence[ProcedureRow], steps: Sequence[StepRow]
) -> Catalogue:
    by_procedure: dict[str, list[Step]] = {}
    for row in steps:
        by_procedure.setdefault(row.procedure_code, []).append(
            Step(
                index=row.step_index,
                stage=row.stage,
                name=row.name,
                agency_code=row.agency_code,
                days=row.days,
            )
        )
    return Catalogue(
        agencies={
            row.code: Agency(
                code=row.code,
                name=row.name,
                xroad=row.xroad,
                channel=row.channel,
                url=row.target if row.channel == "https" else "",
                target=row.target,
                secret=row.secret_ref,
            )
            for row in agencies
        },
        procedures={
            row.code: Procedure(
                code=row.code,
                name=row.name,
                receiving_agency=row.receiving_agency,
                total_days=row.total_days,
                required_fields=tuple(row.required_fields),
                steps=tuple(by_procedure.get(row.code, ())),
                active=row.active,
            )
            for row in procedures
        },
    )
