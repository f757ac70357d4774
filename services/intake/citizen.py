"""Dossiers filed by a citizen logged in with e-ID: the applicant comes from identity, never
from the request body, and the residence from the registry with the citizen's consent
(once-only), instead of an uploaded document. Identity is asked over gRPC."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import grpc

from core.auth_grpc import bearer_metadata
from core.catalogue import Procedure
from core.grpc import LazyStub
from core.problems import Problem
from core.tokens import ServiceTokens, TokenUnavailable
from gateway.v1 import identity_pb2, identity_pb2_grpc, registry_pb2
from services.intake.schemas import DossierIn

log = logging.getLogger(__name__)
Req = TypeVar("Req")
Resp = TypeVar("Resp")

# How identity's refusals reach the submitter.
_REFUSALS = {
    grpc.StatusCode.UNAUTHENTICATED: (401, "citizen-session-invalid", "Log in with e-ID again"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "consent-of-another-citizen", "Not your consent"),
    grpc.StatusCode.NOT_FOUND: (422, "consent-not-found", "No such consent"),
    grpc.StatusCode.FAILED_PRECONDITION: (422, "consent-not-granted", "Consent not granted"),
    grpc.StatusCode.INVALID_ARGUMENT: (422, "consent-invalid", "Consent cannot be used"),
}


@dataclass(frozen=True)
class EidApplicant:
    """The applicant as verified by identity, and what they consented to share."""

    session: str
    personal_id: str
    full_name: str
    assurance_level: int
    residence_consent_id: str | None
    # Contact details of the e-ID profile, for what the request body leaves out.
    email: str | None = None
    phone: str | None = None


class IdentityClient:
    def __init__(self, target: str, timeout_s: float, tokens: ServiceTokens) -> None:
        self._stub = LazyStub(target, identity_pb2_grpc.CitizenIdentityStub)
        self._timeout_s = timeout_s
        # Intake's own token (citizen-data:read): identity serves citizen data to no one else.
        self._tokens = tokens

    async def close(self) -> None:
        await self._stub.close()
        await self._tokens.close()

    async def applicant(
        self, session: str, request: DossierIn, procedure: Procedure
    ) -> EidApplicant:
        """The verified applicant, checked against what the procedure asks of an e-ID."""
        verified = await self._call(
            self._stub().ResolveCitizenSession,
            identity_pb2.ResolveCitizenSessionRequest(
                session=session,
                requesting_agency=request.receiving_agency_code or procedure.receiving_agency,
                purpose=f"dossier submission {procedure.code}",
            ),
        )
        if verified.assurance_level < procedure.min_assurance:
            raise Problem(
                403,
                "assurance-too-low",
                "This procedure needs a higher e-ID assurance level",
                f"Procedure {procedure.code} needs level {procedure.min_assurance}; "
                f"this login is level {verified.assurance_level}",
            )
        return EidApplicant(
            session,
            verified.personal_id,
            verified.full_name,
            verified.assurance_level,
            request.residence_consent_id,
            verified.email or None,
            verified.phone or None,
        )

    async def residence(
        self, applicant: EidApplicant, dossier_code: str, agency: str
    ) -> registry_pb2.Residence | None:
        if applicant.residence_consent_id is None:
            return None
        consented = await self._call(
            self._stub().TakeResidence,
            identity_pb2.TakeResidenceRequest(
                consent_id=applicant.residence_consent_id,
                session=applicant.session,
                dossier_code=dossier_code,
                requesting_agency=agency,
            ),
        )
        return consented.residence

    async def _call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], message: Req
    ) -> Resp:
        try:
            token = await self._tokens.token()
            return await method(message, timeout=self._timeout_s, metadata=bearer_metadata(token))
        except TokenUnavailable as exc:
            log.warning("no service token to ask identity: %s", exc)
            raise Problem(
                503, "identity-unavailable", "Identity does not answer", "Try again"
            ) from None
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._tokens.forget()  # perhaps our token, not the citizen's session
            refusal = _REFUSALS.get(exc.code())
            if refusal is None:
                log.warning("identity unavailable: %s", exc.code())
                raise Problem(
                    503, "identity-unavailable", "Identity does not answer", "Try again"
                ) from None
            status, kind, title = refusal
            raise Problem(status, kind, title, exc.details() or title) from None


def check_residence_proof(request: DossierIn, procedure: Procedure, with_eid: bool) -> None:
    """A procedure that needs residence gets it from the registry or from a document."""
    if "residence" not in procedure.needs:
        return
    consented = with_eid and request.residence_consent_id is not None
    uploaded = any(d.kind == "residence" for d in request.documents)
    if not (consented or uploaded):
        raise Problem(
            422,
            "residence-proof-missing",
            "Proof of residence is missing",
            f"Procedure {procedure.code} needs residence: log in with e-ID and consent to "
            "the registry read (residence_consent_id), or upload a document of kind 'residence'",
        )


def verified_request(request: DossierIn, applicant: EidApplicant) -> DossierIn:
    """The request with the applicant identity replaced by what e-ID verified. Contact
    details given in the body win (the citizen may want this dossier's news elsewhere);
    the e-ID profile's fill in what the body leaves out."""
    given = request.applicant
    verified = given.model_copy(
        update={
            "personal_id": applicant.personal_id,
            "full_name": applicant.full_name,
            "email": given.email or applicant.email,
            "phone": given.phone or applicant.phone,
        }
    )
    return request.model_copy(update={"applicant": verified})
