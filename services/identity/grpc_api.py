"""CitizenIdentity over gRPC, for intake: the applicant behind an e-ID session and the
residence they consented to share. Each answer is a read of citizen data, and logged."""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.v1 import identity_pb2, identity_pb2_grpc
from services.identity import access_log
from services.identity.citizens import Citizens, CitizenSession
from services.identity.consents import ConsentRefused, Consents

Context = grpc.aio.ServicerContext[Any, Any]


class CitizenIdentityServicer(identity_pb2_grpc.CitizenIdentityServicer):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], citizens: Citizens, consents: Consents
    ) -> None:
        self._sessions = sessions
        self._citizens = citizens
        self._consents = consents

    async def ResolveCitizenSession(
        self, request: identity_pb2.ResolveCitizenSessionRequest, context: Context
    ) -> identity_pb2.VerifiedApplicant:
        citizen = await self._citizen(request.session, context)
        read = access_log.Read(
            self._citizens.ref(citizen.personal_id),
            request.requesting_agency or "unknown",
            "intake",
            "identity",
            request.purpose or "unspecified",
        )
        async with self._sessions.begin() as session:
            await access_log.append(session, [read])
        return identity_pb2.VerifiedApplicant(
            personal_id=citizen.personal_id.value,
            full_name=citizen.full_name,
            assurance_level=citizen.assurance_level,
            email=citizen.email or "",
            phone=citizen.phone or "",
        )

    async def TakeResidence(
        self, request: identity_pb2.TakeResidenceRequest, context: Context
    ) -> identity_pb2.ConsentedResidence:
        citizen = await self._citizen(request.session, context)
        if not request.dossier_code or not request.consent_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "consent_id and dossier_code are required"
            )
        try:
            residence, record = await self._consents.take(
                citizen, request.consent_id, request.dossier_code, request.requesting_agency
            )
        except ConsentRefused as exc:
            await context.abort(exc.grpc_code, f"{exc.title}: {exc.detail}")
            raise AssertionError("unreachable") from None  # abort raises
        return identity_pb2.ConsentedResidence(
            residence=residence,
            procedure_code=record["procedure_code"],
            purpose=record["purpose"],
        )

    async def _citizen(self, session_id: str, context: Context) -> CitizenSession:
        found = await self._citizens.session(session_id)
        if found is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or expired session")
            raise AssertionError("unreachable")  # abort raises
        return found
