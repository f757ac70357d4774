"""What a webhook callback says: an explicit allow-list of fields, never the event's data.

A callback leaves the gateway for a URL an agency typed, so it carries nothing about the
citizen: no applicant, form, residence, contact, nor the free-text reasons officers write
(they may name people). It says which dossier, which procedure, what happened and when, and
links to intake's `GET /v1/dossiers/{code}`, where the subscriber reads the rest with its
own token and within its own agency's rights. A field is added here, typed, or not at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict

from core.events import Event
from gateway.v1 import events_pb2

# What happened, in the callback's words, per event type.
STATUS = {
    "vn.gov.dossier.submitted.v1": "received",
    "vn.gov.dossier.routed.v1": "routed",
    "vn.gov.dossier.completed.v1": "completed",
    "vn.gov.dossier.supplement_requested.v1": "supplement-requested",
    "vn.gov.dossier.refused.v1": "refused",
    "vn.gov.dossier.overdue.v1": "overdue",
}


class CallbackData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: str
    dossier_code: str
    status: str
    # Where the subscriber reads the dossier, with its own token and rights.
    link: str
    procedure_code: str | None = None
    # The agency the event concerns (receiving, routed to, asking, refusing, late).
    agency_code: str | None = None
    step_index: int | None = None
    late: bool | None = None
    received_at: datetime | None = None
    due_at: datetime | None = None
    step_due_at: datetime | None = None
    requested_at: datetime | None = None
    refused_at: datetime | None = None
    completed_at: datetime | None = None
    new_due_at: datetime | None = None


class Callback(BaseModel):
    """The Standard Webhooks body: type, timestamp, data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    timestamp: datetime
    data: CallbackData


def dossier_link(intake_url: str, code: str) -> str:
    return f"{intake_url.rstrip('/')}/v1/dossiers/{quote(code, safe='')}"


def callback_body(event: Event, *, procedure_code: str | None, intake_url: str) -> str:
    """The JSON body of the callback about `event`. `procedure_code` is the dossier's, as
    notify remembers it (only the submitted event carries it)."""
    data = event.data
    fields: dict[str, object] = {}
    if isinstance(data, events_pb2.DossierSubmitted):
        dossier = data.dossier
        procedure_code = dossier.procedure_code or procedure_code
        fields["agency_code"] = dossier.receiving_agency_code
        fields |= timestamps(dossier, "received_at", "due_at")
    elif isinstance(data, events_pb2.DossierRouted):
        fields |= {"agency_code": data.agency_code, "step_index": data.step_index}
        fields |= timestamps(data, "step_due_at")
    elif isinstance(data, events_pb2.DossierCompleted):
        fields["late"] = data.late
        fields |= timestamps(data, "completed_at")
    elif isinstance(data, events_pb2.SupplementRequested):
        fields |= {"agency_code": data.agency_code, "step_index": data.step_index}
        fields |= timestamps(data, "requested_at")
    elif isinstance(data, events_pb2.DossierRefused):
        fields |= {"agency_code": data.agency_code, "step_index": data.step_index}
        fields |= timestamps(data, "refused_at")
    elif isinstance(data, events_pb2.DossierOverdue):
        fields["agency_code"] = data.agency_code
        fields |= timestamps(data, "due_at", "new_due_at")
    else:  # notify subscribes to the event types above only
        raise AssertionError(f"no callback for {event.type}")
    if not fields.get("agency_code"):
        fields.pop("agency_code", None)
    callback = Callback(
        type=event.type,
        timestamp=event.time.astimezone(UTC),
        data=CallbackData.model_validate(
            {
                "event_id": event.id,
                "dossier_code": event.subject,
                "status": STATUS[event.type],
                "link": dossier_link(intake_url, event.subject),
                "procedure_code": procedure_code or None,
                **fields,
            }
        ),
    )
    return callback.model_dump_json(exclude_none=True)


def timestamps(message: Message, *names: str) -> dict[str, datetime]:
    """The message's timestamp fields that are set, by name, as aware datetimes."""
    found = {}
    for name in names:
        if message.HasField(name):
            stamp: Timestamp = getattr(message, name)
            found[name] = stamp.ToDatetime(tzinfo=UTC)
    return found
