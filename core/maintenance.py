"""Maintenance mode of one service, as X-Road's security servers have it.

An operator turns it on before a risky change (a database migration by hand, an agency's
system down for the day, a catalogue overhaul): the service stays up and answers reads,
but does no outward work. Every work queue of the process stops claiming (`Runtime.holds`
includes `Maintenance.held`), so deliveries, portal pushes and messages wait in their
tables, and intake refuses new dossiers with 503 and Retry-After (`writes_allowed`). When
it is turned off the queues claim again: nothing was lost, and since a claim in progress
finished under its lease, nothing goes twice.

The state is one row in the service's own database (`<service>_maintenance`), so it
survives a restart and every replica sees it; each replica re-reads it at most every
`cache_s` seconds (the queues ask before every claim). /health/ready stays 200 while in
maintenance, with "status": "maintenance" and the reason, so load balancers keep
reads flowing and operators see why nothing moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from prometheus_client import Gauge
from pydantic import BaseModel, Field
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import record_action
from core.auth import MAINTENANCE_MANAGE, AgencyPrincipal, require_scope, require_token
from core.clock import SYSTEM_CLOCK, Clock
from core.deps import part_of
from core.openapi import problems
from core.problems import Problem
from core.storage import UtcDateTime, rowcount

log = logging.getLogger(__name__)
# The one row of a service's maintenance table.
ROW = 1
# Methods that change nothing: answered as usual in maintenance.
READS = frozenset({"GET", "HEAD", "OPTIONS"})
MAINTENANCE = Gauge("gateway_maintenance", "1 while this service is in maintenance mode")


def maintenance_table(metadata: MetaData, owner: str) -> Table:
    return Table(
        f"{owner}_maintenance",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("active", Boolean, nullable=False),
        Column("reason", String(500), nullable=False),
        # The operator's client id: who to ask why.
        Column("changed_by", String(200), nullable=False),
        Column("changed_at", UtcDateTime(), nullable=False),
    )


def table_name(service: str) -> str:
    return f"{service}_maintenance"


@dataclass(frozen=True)
class MaintenanceState:
    on: bool
    reason: str = ""
    changed_by: str = ""
    changed_at: datetime | None = None


OFF = MaintenanceState(on=False)


class Maintenance:
    """The service's maintenance switch, read through a short cache."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        *,
        service: str,
        cache_s: float = 2.0,
        retry_after_s: int = 60,
        clock: Clock = SYSTEM_CLOCK,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.table = table
        self.service = service
        self.cache_s = cache_s
        # What a write refused in maintenance is told (Retry-After).
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._monotonic = monotonic
        self._known = OFF
        self._read_at = -float("inf")

    async def state(self, *, fresh: bool = False) -> MaintenanceState:
        """The state as last read; read again when older than `cache_s` (or `fresh`). While
        the database cannot answer, the last state read stands: the queues wait out the
        outage anyway."""
        if not fresh and self._monotonic() - self._read_at < self.cache_s:
            return self._known
        try:
            async with self.sessions() as session:
                row = (
                    await session.execute(select(self.table).where(self.table.c.id == ROW))
                ).first()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("cannot read the maintenance state; keeping the last one: %r", exc)
            return self._known
        self._remember(_state_of(row))
        return self._known

    async def held(self) -> bool:
        """A Runtime hold: True while in maintenance."""
        return (await self.state()).on

    async def switch(self, on: bool, reason: str, changed_by: str) -> MaintenanceState:
        values: dict[str, Any] = {
            "active": on,
            "reason": reason,
            "changed_by": changed_by,
            "changed_at": self.clock.now(),
        }
        table = self.table
        try:
            async with self.sessions.begin() as session:
                updated = await session.execute(
                    table.update().where(table.c.id == ROW).values(values)
                )
                if rowcount(updated) == 0:
                    await session.execute(table.insert().values(id=ROW, **values))
        except IntegrityError:
            # Another replica inserted the first row meanwhile: the later switch wins.
            async with self.sessions.begin() as session:
                await session.execute(table.update().where(table.c.id == ROW).values(values))
        self._remember(_state_of(values))
        return self._known

    def _remember(self, state: MaintenanceState) -> None:
        self._known = state
        self._read_at = self._monotonic()
        MAINTENANCE.set(1 if state.on else 0)


def _state_of(row: Any) -> MaintenanceState:
    if row is None:
        return OFF
    values = row if isinstance(row, dict) else row._mapping
    return MaintenanceState(
        on=bool(values["active"]),
        reason=values["reason"],
        changed_by=values["changed_by"],
        changed_at=values["changed_at"],
    )


def of(request: Request) -> Maintenance:
    """The service's switch (kept by core.http.create_app)."""
    return part_of(request.app, "maintenance", Maintenance)


async def writes_allowed(request: Request) -> None:
    """Route dependency: in maintenance, anything but a read is answered 503 with
    Retry-After; the client (an agency system) submits again later."""
    if request.method in READS:
        return
    maintenance = of(request)
    state = await maintenance.state()
    if state.on:
        retry_after = maintenance.retry_after_s
        raise Problem(
            503,
            "maintenance",
            "The service is in maintenance; try again later",
            state.reason,
            headers={"Retry-After": str(retry_after)},
        )


class MaintenanceIn(BaseModel):
    on: bool
    reason: str = Field("", max_length=500)


class MaintenanceOut(BaseModel):
    service: str
    on: bool
    reason: str
    changed_by: str
    changed_at: datetime | None


def _out(request: Request, state: MaintenanceState) -> MaintenanceOut:
    return MaintenanceOut(
        service=of(request).service,
        on=state.on,
        reason=state.reason,
        changed_by=state.changed_by,
        changed_at=state.changed_at,
    )


def maintenance_router() -> APIRouter:
    """`GET /v1/maintenance` (any valid token) and `PUT /v1/maintenance`
    (maintenance:manage), on every service."""
    router = APIRouter(prefix="/v1/maintenance", tags=["operators"])

    @router.get(
        "",
        response_model=MaintenanceOut,
        operation_id="getMaintenance",
        summary="Whether this service is in maintenance, and why",
        # Any valid token: no scope for the document to find, so its 401 is named here.
        responses=problems(401),
        dependencies=[Depends(require_token())],
    )
    async def show(request: Request) -> MaintenanceOut:
        # Not from the cache: an operator checking a switch made on another replica sees it.
        return _out(request, await of(request).state(fresh=True))

    @router.put(
        "",
        response_model=MaintenanceOut,
        operation_id="switchMaintenance",
        summary="Turn maintenance mode on or off",
    )
    async def switch(
        request: Request,
        body: MaintenanceIn,
        operator: Annotated[AgencyPrincipal, Depends(require_scope(MAINTENANCE_MANAGE))],
    ) -> MaintenanceOut:
        state = await of(request).switch(body.on, body.reason, operator.client_id)
        record_action(
            client=operator.client_id,
            agency=operator.agency_code,
            event="maintenance.switched",
            action=f"{request.method} {request.url.path}",
            target=of(request).service,
            on=body.on,
            reason=body.reason,
        )
        return _out(request, state)

    return router
