"""Consent and purpose, the EU once-only way: explicit request, preview, then confirmation.

The registry is read only for a procedure that needs residence and only for the logged-in
citizen; the citizen sees exactly what will be attached (the stored preview) and confirms;
intake then takes that preview for one dossier. Every read goes to the access log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.catalogue_client import CatalogueClient
from core.clock import SYSTEM_CLOCK, Clock
from gateway.v1 import registry_pb2
from services.identity import access_log
from services.identity.citizens import Citizens, CitizenSession
from services.identity.models import consents
from services.identity.registry import CitizenNotRegistered, RegistryClient, RegistryUnavailable
from services.identity.sealing import ResidenceSeal

SERVICE = "identity"


@dataclass
class ConsentRefused(Exception):
    status: int
    grpc_code: grpc.StatusCode
    type: str
    title: str
    detail: str


def _not_found(consent_id: str) -> ConsentRefused:
    return ConsentRefused(
        404, grpc.StatusCode.NOT_FOUND, "consent-not-found", "No such consent", consent_id
    )


class Consents:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        catalogues: CatalogueClient,
        registry: RegistryClient,
        citizens: Citizens,
        seal: ResidenceSeal,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sessions = sessions
        self._catalogues = catalogues
        self._registry = registry
        self._citizens = citizens
        self._seal = seal
        self._clock = clock

    async def preview(
        self, citizen: CitizenSession, procedure_code: str, purpose: str
    ) -> dict[str, Any]:
        if not self._catalogues.ready.is_set():
            # Routing has not answered since identity started: nothing to judge the request by.
            raise ConsentRefused(
                503, grpc.StatusCode.UNAVAILABLE, "catalogue-unavailable",
                "The procedure catalogue is not loaded yet", "Try again in a moment",
            )  # fmt: skip
        procedure = self._catalogues.catalogue.procedure(procedure_code)
        if procedure is None:
            raise ConsentRefused(
                422, grpc.StatusCode.INVALID_ARGUMENT, "unknown-procedure", "Unknown procedure",
                f"No procedure {procedure_code!r} in the catalogue",
            )  # fmt: skip
        if "residence" not in procedure.needs:
            raise ConsentRefused(
                422, grpc.StatusCode.FAILED_PRECONDITION, "residence-not-needed",
                "This procedure does not need residence data",
                f"Procedure {procedure.code} is filed without residence: nothing is read",
            )  # fmt: skip
        if citizen.assurance_level < procedure.min_assurance:
            # Data minimisation: nothing is read for a login that could not file anyway.
            raise ConsentRefused(
                403, grpc.StatusCode.PERMISSION_DENIED, "assurance-too-low",
                "This procedure needs a higher e-ID assurance level",
                f"Procedure {procedure.code} needs level {procedure.min_assurance}; "
                f"this login is level {citizen.assurance_level}: nothing was read",
            )  # fmt: skip
        stated = f"{procedure.code}: {purpose}"
        agency = procedure.receiving_agency
        try:
            residence = await self._registry.residence(citizen.personal_id, stated, agency)
        except CitizenNotRegistered:
            raise ConsentRefused(
                404, grpc.StatusCode.NOT_FOUND, "citizen-not-registered",
                "Not in the population registry", "The registry holds no residence for you",
            ) from None  # fmt: skip
        except RegistryUnavailable:
            raise ConsentRefused(
                503, grpc.StatusCode.UNAVAILABLE, "registry-unavailable",
                "The population registry does not answer", "Try again in a moment",
            ) from None  # fmt: skip
        ref = self._citizens.ref(citizen.personal_id)
        consent_id = str(uuid.uuid4())
        shown = MessageToDict(residence, preserving_proto_field_name=True)
        record: dict[str, Any] = {
            "id": consent_id,
            "citizen_ref": ref,
            "procedure_code": procedure.code,
            "purpose": purpose,
            "requesting_agency": agency,
            "state": "previewed",
            "created_at": self._clock.now(),
            "granted_at": None,
            "dossier_code": None,
        }
        read = access_log.Read(ref, agency, SERVICE, "residence", stated)
        sealed = self._seal.seal(consent_id, shown)
        async with self._sessions.begin() as session:
            await session.execute(consents.insert().values({**record, "residence_sealed": sealed}))
            await access_log.append(session, [read])
        return record | {"residence": shown}

    async def confirm(self, citizen: CitizenSession, consent_id: str) -> dict[str, Any]:
        async with self._sessions.begin() as session:
            record = await self._own(session, citizen, consent_id)
            if record["state"] == "previewed":
                record |= {"state": "granted", "granted_at": self._clock.now()}
                await session.execute(
                    update(consents)
                    .where(consents.c.id == consent_id)
                    .values(state="granted", granted_at=record["granted_at"])
                )
        return record

    async def take(
        self, citizen: CitizenSession, consent_id: str, dossier_code: str, agency: str
    ) -> tuple[registry_pb2.Residence, dict[str, Any]]:
        """The granted residence for one dossier; a consent serves one dossier only."""
        async with self._sessions.begin() as session:
            record = await self._own(session, citizen, consent_id, lock=True)
            if record["state"] not in ("granted", "used") or record["dossier_code"] not in (
                None,
                dossier_code,
            ):
                raise ConsentRefused(
                    409, grpc.StatusCode.FAILED_PRECONDITION, "consent-not-granted",
                    "The citizen has not granted this consent",
                    f"Consent is {record['state']}"
                    + (" for another dossier" if record["dossier_code"] else ""),
                )  # fmt: skip
            await session.execute(
                update(consents)
                .where(consents.c.id == consent_id)
                .values(state="used", dossier_code=dossier_code)
            )
            stated = f"{record['procedure_code']}: {record['purpose']}"
            read = access_log.Read(
                record["citizen_ref"], agency, "intake", "residence", stated, dossier_code
            )
            await access_log.append(session, [read])
        return ParseDict(record["residence"], registry_pb2.Residence()), record

    async def _own(
        self, session: AsyncSession, citizen: CitizenSession, consent_id: str, lock: bool = False
    ) -> dict[str, Any]:
        query = select(consents).where(consents.c.id == consent_id)
        row = (await session.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise _not_found(consent_id)
        if row.citizen_ref != self._citizens.ref(citizen.personal_id):
            raise ConsentRefused(
                403, grpc.StatusCode.PERMISSION_DENIED, "consent-of-another-citizen",
                "This consent is another citizen's", "Only the citizen who gave it may use it",
            )  # fmt: skip
        record = dict(row._mapping)
        sealed = record.pop("residence_sealed")
        if sealed is None:
            raise ConsentRefused(
                410, grpc.StatusCode.FAILED_PRECONDITION, "consent-expired",
                "This consent predates sealed storage", "Ask for a new consent (preview again)",
            )  # fmt: skip
        record["residence"] = self._seal.open(consent_id, sealed)
        return record


def consent_view(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "state": record["state"],
        "procedure_code": record["procedure_code"],
        "purpose": record["purpose"],
        "requesting_agency": record["requesting_agency"],
        # Exactly what will be attached to the dossier once granted.
        "preview": {"residence": record["residence"]},
        "created_at": record["created_at"].isoformat(),
        "granted_at": record["granted_at"].isoformat() if record["granted_at"] else None,
    }
