"""Registering a dossier: validate against the catalogue, number it, set its due date, and
record it with its DossierSubmitted event in one transaction."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from fastapi.exceptions import RequestValidationError
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import Caller, forbidden
from core.calendar import WorkingCalendar
from core.catalogue import Procedure
from core.catalogue_client import CatalogueClient, Versioned
from core.clock import SYSTEM_CLOCK, Clock
from core.events import new_event
from core.limits import JsonShape, JsonShapeError, check_json_shape
from core.outbox import Outbox
from core.problems import Problem
from gateway.v1 import dossier_pb2, events_pb2
from services.intake.citizen import (
    EidApplicant,
    IdentityClient,
    check_residence_proof,
    verified_request,
)
from services.intake.models import dossier_citizen_data, dossiers, idempotency_keys
from services.intake.receipts import next_receipt_code
from services.intake.schemas import DossierIn

SOURCE = "/gateway/intake"


def at_desk(request: DossierIn, desk: Caller) -> DossierIn:
    """The dossier as filed by `desk`: its receiving agency is the filing client's own.

    A desk files for itself only: naming another agency is refused (and audited), naming
    none takes the token's, so receipt codes, the desk's later rights on the dossier and
    identity's access log all name the agency that really received it."""
    named = request.receiving_agency_code
    if named is not None and named != desk.agency_code:
        raise forbidden(
            desk,
            action="submit-dossier",
            target=f"agency/{named}",
            slug="dossier-for-another-agency",
            title="A desk may only file dossiers it received itself",
            detail=f"the token is {desk.agency_code}'s, the dossier names {named}",
        )
    return request.model_copy(update={"receiving_agency_code": desk.agency_code})


class DossierRegistry:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        catalogue: CatalogueClient,
        calendar: WorkingCalendar,
        form_shape: JsonShape,
        identity: IdentityClient | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._catalogue = catalogue
        self._calendar = calendar
        self._clock = clock
        self._form_shape = form_shape
        self.identity = identity

    async def submit(
        self, request: DossierIn, idempotency_key: str | None, citizen_session: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Register the dossier; returns (its record, created). A replayed key returns the
        first dossier's record with created=False. With a citizen session the applicant is
        the e-ID citizen and a consented residence is attached."""
        # One version for the whole submission: checked, dated and recorded under it.
        catalogue = self._catalogue.current()
        procedure = self._validate(request, catalogue)
        check_residence_proof(request, procedure, with_eid=citizen_session is not None)
        eid = None
        if citizen_session is not None and self.identity is not None:
            eid = await self.identity.applicant(citizen_session, request, procedure)
            # Fingerprinted and registered as the verified citizen: one key, one citizen.
            request = verified_request(request, eid)
        elif request.applicant.personal_id is None or request.applicant.full_name is None:
            raise Problem(
                422,
                "applicant-unidentified",
                "Who files the dossier?",
                "Send applicant.personal_id and full_name, or log in with e-ID (X-Citizen-Session)",
            )
        request_hash = _fingerprint(request)
        if idempotency_key and (replayed := await self._replay(idempotency_key, request_hash)):
            return replayed, False
        try:
            record = await self._register(
                request, procedure, catalogue.version, idempotency_key, request_hash, eid
            )
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its receipt.
            if idempotency_key and (replayed := await self._replay(idempotency_key, request_hash)):
                return replayed, False
            raise
        return record, True

    async def _replay(self, key: str, request_hash: str) -> dict[str, Any] | None:
        """The dossier a key already registered (one query), None for a new key."""
        query = select(dossiers, idempotency_keys.c.request_hash).join(
            idempotency_keys, idempotency_keys.c.dossier_code == dossiers.c.code
        )
        async with self._sessions() as session:
            row = (await session.execute(query.where(idempotency_keys.c.key == key))).first()
        if row is None:
            return None
        if row.request_hash != request_hash:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency-Key already used for another request",
                "Send a new key for a different dossier",
            )
        return {c.name: row._mapping[c.name] for c in dossiers.columns}

    async def get(self, code: str) -> dict[str, Any] | None:
        async with self._sessions() as session:
            row = (await session.execute(select(dossiers).where(dossiers.c.code == code))).first()
        return dict(row._mapping) if row else None

    def _validate(self, request: DossierIn, catalogue: Versioned) -> Procedure:
        try:
            # Before anything else reads the form: protobuf, the fingerprint, the database.
            check_json_shape(request.form_data, self._form_shape)
        except JsonShapeError as exc:
            location = ("body", "form_data", *exc.path)
            raise RequestValidationError(
                [{"loc": location, "msg": f"form_data: {exc}", "type": exc.kind}]
            ) from None
        procedure = catalogue.catalogue.procedure(request.procedure_code)
        if procedure is None or not procedure.active:
            raise Problem(
                422,
                "unknown-procedure",
                "Unknown procedure",
                f"No procedure {request.procedure_code!r} in the catalogue",
            )
        agency = request.receiving_agency_code or procedure.receiving_agency
        if agency not in catalogue.catalogue.agencies:
            raise Problem(422, "unknown-agency", "Unknown receiving agency", f"{agency!r}")
        missing = [f for f in procedure.required_fields if request.form_data.get(f) in (None, "")]
        if missing:
            raise Problem(
                422,
                "missing-form-fields",
                "Required form fields are missing",
                f"Procedure {procedure.code} requires: {', '.join(missing)}",
                missing_fields=missing,
            )
        return procedure

    async def _register(
        self,
        request: DossierIn,
        procedure: Procedure,
        catalogue_version: int,
        key: str | None,
        request_hash: str,
        eid: EidApplicant | None = None,
    ) -> dict[str, Any]:
        received_at = self._clock.now()
        due_at = self._calendar.add_working_days(received_at, procedure.total_days)
        agency = request.receiving_agency_code or procedure.receiving_agency
        span = trace.get_current_span()
        async with self._sessions.begin() as session:
            code = await next_receipt_code(session, agency, received_at)
            span.set_attribute("dossier.code", code)
            span.set_attribute("dossier.procedure_code", procedure.code)
            residence = None
            if eid is not None and self.identity is not None:
                # Taken with the receipt code known, so the citizen's log names the dossier.
                residence = await self.identity.residence(eid, code, agency)
                await session.execute(
                    dossier_citizen_data.insert().values(
                        code=code,
                        assurance_level=eid.assurance_level,
                        residence=MessageToDict(residence) if residence else None,
                    )
                )
            record = {
                "code": code,
                "procedure_code": procedure.code,
                "receiving_agency_code": agency,
                "applicant": request.applicant.model_dump(),
                "form_data": request.form_data,
                "received_at": received_at,
                "due_at": due_at.astimezone(UTC),
                "trace_id": format(span.get_span_context().trace_id, "032x"),
                "catalogue_version": catalogue_version,
            }
            await session.execute(dossiers.insert().values(record))
            if key:
                await session.execute(
                    idempotency_keys.insert().values(
                        key=key,
                        request_hash=request_hash,
                        dossier_code=code,
                        created_at=received_at,
                    )
                )
            message = _dossier_message(code, agency, request, received_at, due_at)
            if residence is not None:
                message.residence.CopyFrom(residence)
            message.assurance_level = eid.assurance_level if eid else 0
            submitted = events_pb2.DossierSubmitted(
                dossier=message, catalogue_version=catalogue_version
            )
            await self._outbox.put(session, new_event(submitted, source=SOURCE, dossier_code=code))
        return record


def _fingerprint(request: DossierIn) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dossier_message(
    code: str, agency: str, request: DossierIn, received_at: datetime, due_at: datetime
) -> dossier_pb2.Dossier:
    form = Struct()
    form.update(request.form_data)
    received, due = Timestamp(), Timestamp()
    received.FromDatetime(received_at)
    due.FromDatetime(due_at)
    applicant = request.applicant
    return dossier_pb2.Dossier(
        code=code,
        procedure_code=request.procedure_code,
        receiving_agency_code=agency,
        applicant=dossier_pb2.Applicant(
            personal_id=applicant.personal_id or "",
            full_name=applicant.full_name or "",
            email=applicant.email or "",
            phone=applicant.phone or "",
            preferred_channel=applicant.preferred_channel,
        ),
        form_data=form,
        received_at=received,
        due_at=due,
    )
