"""Routing over gRPC: the journey of a dossier (RoutingService), for intake and operators,
and the catalogue it owns (CatalogueService), for intake and notify."""

from __future__ import annotations

from datetime import datetime

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.catalogue import Catalogue
from core.events import timestamp
from core.telemetry import trace_id_of
from gateway.v1 import catalogue_pb2, catalogue_pb2_grpc, routing_pb2, routing_pb2_grpc
from services.routing import queries
from services.routing.catalogue_store import CatalogueStore
from services.routing.lifecycle import State
from services.routing.rows import TransferRow


class RoutingServicer(routing_pb2_grpc.RoutingServiceServicer):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], catalogue: Catalogue) -> None:
        self._sessions = sessions
        self._catalogue = catalogue

    async def GetJourney(
        self,
        request: routing_pb2.GetJourneyRequest,
        context: grpc.aio.ServicerContext[routing_pb2.GetJourneyRequest, routing_pb2.Journey],
    ) -> routing_pb2.Journey:
        async with self._sessions() as session:
            journey = await queries.journey(session, request.dossier_code)
            if journey is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "dossier not routed (yet)")
                raise AssertionError("unreachable")  # abort raises
            steps = await queries.steps(session, request.dossier_code)
        return routing_pb2.Journey(
            dossier_code=journey.code,
            procedure_code=journey.procedure_code,
            status=_journey_status(journey.status),
            trace_id=trace_id_of(journey.trace),
            steps=[self._step(s) for s in steps],
        )

    def _step(self, row: TransferRow) -> routing_pb2.JourneyStep:
        step = routing_pb2.JourneyStep(
            index=row.step_index,
            stage=row.stage,
            name=row.step_name,
            agency_code=row.agency_code,
            agency_name=self._catalogue.agency(row.agency_code).name,
            status=row.status,
            transfer_id=row.transfer_id,
            attempts=row.attempts,
        )
        stamps: dict[str, datetime | None] = {
            "routed_at": row.routed_at,
            "delivered_at": row.delivered_at,
            "completed_at": row.completed_at,
            "due_at": row.due_at,
        }
        for field, value in stamps.items():
            if value is not None:
                getattr(step, field).CopyFrom(timestamp(value))
        return step


class CatalogueServicer(catalogue_pb2_grpc.CatalogueServiceServicer):
    def __init__(self, store: CatalogueStore) -> None:
        self._store = store

    async def GetCatalogue(
        self,
        request: catalogue_pb2.GetCatalogueRequest,
        context: grpc.aio.ServicerContext[
            catalogue_pb2.GetCatalogueRequest, catalogue_pb2.CatalogueSnapshot
        ],
    ) -> catalogue_pb2.CatalogueSnapshot:
        if not self._store.ready.is_set():
            # Retried by the caller: a catalogue half-known is never served.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "catalogue not loaded yet")
        version = request.version if request.HasField("version") else None
        snapshot = await self._store.snapshot(version)
        if snapshot is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no catalogue version {version}")
            raise AssertionError("unreachable")  # abort raises
        return snapshot


def _journey_status(state: str) -> str:
    # The gRPC contract's coarse status (routing | completed), plus refused, which ends a
    # journey without completing it; the national code is in the HTTP timeline.
    if state in (State.DECIDED.value, State.RESULT_RETURNED.value):
        return "completed"
    if state == State.REFUSED.value:
        return "refused"
    return "routing"
