"""Asks routing, over gRPC, where a dossier is on its journey across agencies."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from core.auth_grpc import bearer_metadata
from core.grpc import LazyStub
from core.tokens import ServiceTokens, TokenUnavailable
from gateway.v1 import routing_pb2, routing_pb2_grpc
from services.intake.schemas import StepOut

log = logging.getLogger(__name__)


class JourneyUnavailable(Exception):
    pass


class JourneyClient:
    def __init__(self, target: str, timeout_s: float, tokens: ServiceTokens) -> None:
        self._stub = LazyStub(target, routing_pb2_grpc.RoutingServiceStub)
        self._timeout_s = timeout_s
        # Intake calls routing with its own service token (scope journeys:read).
        self._tokens = tokens

    async def close(self) -> None:
        await self._stub.close()
        await self._tokens.close()

    async def journey(self, dossier_code: str) -> routing_pb2.Journey | None:
        """The journey, or None while routing has not taken the dossier in yet."""
        try:
            token = await self._tokens.token()
            return await self._stub().GetJourney(
                routing_pb2.GetJourneyRequest(dossier_code=dossier_code),
                timeout=self._timeout_s,
                metadata=bearer_metadata(token),
            )
        except TokenUnavailable as exc:
            log.warning("no service token to ask routing for %s: %s", dossier_code, exc)
            raise JourneyUnavailable("no service token") from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._tokens.forget()  # e.g. identity rotated its key: get a fresh token
            log.warning("routing journey unavailable for %s: %s", dossier_code, exc.code())
            raise JourneyUnavailable(str(exc.code())) from exc


def steps_of(journey: routing_pb2.Journey) -> list[StepOut]:
    return [
        StepOut(
            index=s.index,
            stage=s.stage,
            name=s.name,
            agency_code=s.agency_code,
            agency_name=s.agency_name,
            status=s.status,
            transfer_id=s.transfer_id,
            attempts=s.attempts,
            routed_at=_ts(s, "routed_at"),
            delivered_at=_ts(s, "delivered_at"),
            completed_at=_ts(s, "completed_at"),
            due_at=_ts(s, "due_at"),
        )
        for s in journey.steps
    ]


# The step's time fields, which have presence (unset: not happened yet).
Stamp = Literal["routed_at", "delivered_at", "completed_at", "due_at"]


def _ts(step: routing_pb2.JourneyStep, field: Stamp) -> datetime | None:
    if not step.HasField(field):
        return None
    stamp: Timestamp = getattr(step, field)
    return stamp.ToDatetime(tzinfo=UTC)
