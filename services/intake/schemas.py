"""The public contract of POST/GET /v1/dossiers (rendered in /openapi.json)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from core.personal_id import validate_personal_id
from core.phones import normalise_vn_mobile


class ApplicantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Both required without e-ID; with an X-Citizen-Session they come from identity.
    personal_id: str | None = Field(
        default=None,
        description="12-digit personal identification number (digits 0-9 only), with a "
        "province code of birth registration and a year of birth not in the future: the "
        "rules identity applies (core/personal_id.py)",
        json_schema_extra={"pattern": "^[0-9]{12}$"},
    )
    full_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    phone: str | None = Field(
        default=None,
        max_length=32,
        description="A Vietnamese mobile number that can take an SMS, written with the digits "
        "0-9 (0912 345 678, +84 91-234-5678...): the rules notify sends by (core/phones.py)",
    )
    preferred_channel: Literal["email", "sms", ""] = Field(
        default="", description='How to be told: "email", "sms", or "" for every channel given'
    )

    @field_validator("personal_id")
    @classmethod
    def _personal_id(cls, value: str | None) -> str | None:
        if value is not None:
            validate_personal_id(value)  # InvalidPersonalId is a ValueError: 422
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        # Kept as written; refused when notify could never send to it.
        if value is not None:
            normalise_vn_mobile(value)  # InvalidPhone is a ValueError: 422
        return value


class DocumentIn(BaseModel):
    """An uploaded supporting document, e.g. kind "residence" for a proof of residence."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=40)
    name: str = Field(default="", max_length=200)
    url: str = Field(default="", max_length=2000, description="Where the file is stored")


class DossierIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "procedure_code": "LT.KS-TT-BHYT",
                    "applicant": {
                        "personal_id": "001090012345",
                        "full_name": "Nguyễn Thị Lan",
                        "email": "lan@example.vn",
                    },
                    "form_data": {
                        "child_full_name": "Trần Minh Khôi",
                        "child_birth_date": "2026-11-01",
                        "child_gender": "Nam",
                        "mother_full_name": "Nguyễn Thị Lan",
                        "residence_address": "Số 12, thôn Đông, xã Tân Phong",
                    },
                }
            ]
        },
    )

    procedure_code: str = Field(min_length=1, max_length=40)
    receiving_agency_code: str | None = Field(
        default=None,
        description="One-stop desk that received it: the calling client's agency "
        "(the default); another agency is refused with 403",
    )
    applicant: ApplicantIn
    form_data: dict[str, Any] = Field(
        default_factory=dict,
        description="The procedure's form, bounded (defaults of the settings FORM_DATA_MAX_*): "
        "at most 8 levels of objects and arrays, 256 keys and items in all, strings of 4,000 "
        "characters, 64 KiB as JSON; integers within ±2^53, no NaN or Infinity",
    )
    documents: list[DocumentIn] = Field(default_factory=list, max_length=50)
    residence_consent_id: str | None = Field(
        default=None,
        max_length=36,
        description="A consent the e-ID citizen granted at identity: attach their registry "
        "residence instead of a document (needs X-Citizen-Session)",
    )


# A step's transfer, as routing keeps it (services/routing/models.py).
TransferStatus = Literal[
    "pending",
    "delivered",
    "completed",
    "dead_lettered",
    "supplement_requested",
    "refused",
    "cancelled",
]


class StepOut(BaseModel):
    index: int
    stage: int = Field(description="Steps of one stage run in parallel")
    name: str
    agency_code: str
    agency_name: str
    status: TransferStatus
    transfer_id: str
    attempts: int
    routed_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    due_at: datetime | None


class DossierOut(BaseModel):
    code: str = Field(description="Receipt code AGENCYCODE-YYMMDD-NNNN")
    procedure_code: str
    procedure_name: str
    receiving_agency_code: str
    status: Literal["received", "processing", "completed"]
    received_at: datetime
    due_at: datetime
    steps: list[StepOut] = Field(default_factory=list)
    journey_available: bool = Field(
        default=True, description="False when routing could not be asked just now"
    )
    trace_id: str
    catalogue_version: int = Field(
        description="The catalogue version the dossier was received under: its steps and due "
        "date are that version's, whatever is loaded later (0: before versions were recorded)"
    )


class ProcedureStepOut(BaseModel):
    stage: int = Field(description="Steps of one stage run in parallel")
    name: str
    agency_code: str
    days: int = Field(description="Working days the agency has for the step")


class ProcedureOut(BaseModel):
    code: str
    name: str
    receiving_agency_code: str = Field(description="The one-stop desk that takes it")
    total_days: int = Field(description="Statutory processing time in working days")
    min_assurance: int = Field(description="Lowest e-ID assurance level for a citizen filing")
    needs: list[str] = Field(description='Citizen data the dossier must carry ("residence")')
    steps: list[ProcedureStepOut]
    form_schema: dict[str, Any] = Field(
        description="JSON Schema (2020-12) of the dossier's form_data for this procedure"
    )
