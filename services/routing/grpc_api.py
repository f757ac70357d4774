"""RoutingService over gRPC: the journey of a dossier, for intake and operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.catalogue import Catalogue
from core.events import timestamp
from core.telemetry import trace_id_of
from gateway.v1 import routing_pb2, routing_pb2_grpc
from services.routing.lifecycle import State
from services.routing.models import journeys, transfers


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
            journey = (
                await session.execute(
                    select(journeys).where(journeys.c.code == request.dossier_code)
                )
            ).first()
            if journey is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, "dossier not routed (yet)")
                raise AssertionError("unreachable")  # abort raises
            steps = (
                await session.execute(
                    select(transfers)
                    .where(transfers.c.dossier_code == request.dossier_code)
                    .order_by(transfers.c.step_index)
                )
            ).all()
        return routing_pb2.Journey(
            dossier_code=journey.code,
            procedure_code=journey.procedure_code,
            status=_journey_status(journey.status),
            trace_id=trace_id_of(journey.trace),
            steps=[self._step(s) for s in steps],
        )

    def _step(self, row: Row[Any]) -> routing_pb2.JourneyStep:
        values = row._mapping
        step = routing_pb2.JourneyStep(
            index=values["step_index"],
            stage=values["stage"],
            name=values["step_name"],
            agency_code=values["agency_code"],
            agency_name=self._catalogue.agency(values["agency_code"]).name,
            status=values["status"],
            transfer_id=values["transfer_id"],
            attempts=values["attempts"],
        )
        for field in ("routed_at", "delivered_at", "completed_at", "due_at"):
            value: datetime | None = values[field]
            if value is not None:
                getattr(step, field).CopyFrom(timestamp(value))
        return step


def _journey_status(state: str) -> str:
    # The gRPC contract's coarse status (routing | completed), plus refused, which ends a
    # journey without completing it; the national code is in the HTTP timeline.
    if state in (State.DECIDED.value, State.RESULT_RETURNED.value):
        return "completed"
    if state == State.REFUSED.value:
        return "refused"
    return "routing"
