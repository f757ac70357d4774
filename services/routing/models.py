"""Routing's tables: each dossier's journey and lifecycle, each transfer to an agency, the
status history and the apologies for overdue dossiers."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Literal

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from core.inbox import inbox_table
from core.maintenance import maintenance_table
from core.outbox import outbox_table
from core.storage import BigId, UtcDateTime

metadata = MetaData()

journeys = Table(
    "routing_dossier",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("procedure_code", String(40), nullable=False),
    # Internal lifecycle state (services/routing/lifecycle.py); its national code is derived.
    Column("status", String(30), nullable=False),
    # The stage under way: its steps run in parallel; the next starts when all are done.
    Column("current_stage", Integer, nullable=False),
    # The submitted gateway.v1.Dossier, delivered to every agency of the journey.
    Column("dossier", LargeBinary, nullable=False),
    # W3C context of the dossier's trace: later hops (agency callbacks) continue it.
    Column("trace", JSON, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("completed_at", UtcDateTime()),
    Column("receiving_agency_code", String(20), nullable=False, server_default=""),
    # The appointment promised to the citizen: the due time, then each apology's new date.
    Column("appointment_at", UtcDateTime()),
    # Set while an agency waits for the citizen's supplement: the clock is stopped.
    Column("paused_at", UtcDateTime()),
    # Wall-clock seconds the dossier spent waiting for the citizen (supplements).
    Column("paused_s", Float, nullable=False, server_default="0"),
    Column("overdue_at", UtcDateTime()),
    # Decided or refused: the end of the agencies' work.
    Column("finished_at", UtcDateTime()),
    # The deadline scheduler's next instant for this dossier; NULL when nothing to watch
    # (finished, or clock stopped). Survives restarts: the scheduler reads it back.
    Column("next_deadline_at", UtcDateTime()),
    Index("ix_routing_dossier_next_deadline", "next_deadline_at"),
    # The catalogue version intake received the dossier under: its steps are that version's.
    # 0: received before versions were recorded (the current version applies).
    Column("catalogue_version", Integer, nullable=False, server_default="0"),
)

transfers = Table(
    "routing_transfer",
    metadata,
    # Stable for a dossier and step, so a redelivery after a crash carries the same id.
    Column("transfer_id", String(36), primary_key=True),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("step_index", Integer, nullable=False),
    Column("stage", Integer, nullable=False),
    Column("step_name", String(200), nullable=False),
    Column("agency_code", String(20), nullable=False),
    # pending -> delivered -> completed, or pending -> dead_lettered; supplement_requested
    # (back to pending for the next round), refused, cancelled (another step refused)
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # When the delivery worker may (re)try; pushed forward by a claim (a lease).
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", Text),
    Column("dead_lettered_at", UtcDateTime()),
    # How many times an operator sent a dead-lettered transfer again.
    Column("replays", Integer, nullable=False, default=0),
    Column("trace", JSON, nullable=False),
    Column("routed_at", UtcDateTime(), nullable=False),
    Column("delivered_at", UtcDateTime()),
    Column("completed_at", UtcDateTime()),
    Column("due_at", UtcDateTime(), nullable=False),
    # Supplement rounds: each one re-delivers the dossier under a new idempotency key.
    Column("round", Integer, nullable=False, server_default="0"),
    # Wall-clock seconds this step waited for the citizen's supplements.
    Column("supplement_s", Float, nullable=False, server_default="0"),
    Column("supplement_requested_at", UtcDateTime()),
    # When the current round began (NULL: at routed_at), and the seconds earlier rounds
    # waited for delivery: the timeline attributes waiting time per round.
    Column("round_started_at", UtcDateTime()),
    Column("delivery_s", Float, nullable=False, server_default="0"),
    Column("overdue_at", UtcDateTime()),
    # Outcome details: result documents, or the reason of a supplement request or refusal.
    Column("outcome", JSON),
    UniqueConstraint("dossier_code", "step_index"),
    Index("ix_routing_transfer_due", "status", "next_attempt_at"),
    # The agency confirmed it has the dossier (a 2xx from its endpoint is only transport).
    Column("acknowledged_at", UtcDateTime()),
    # Deliveries sent again because no acknowledgement came within the ack timeout.
    Column("redeliveries", Integer, nullable=False, default=0),
    # Still unacknowledged after the last re-delivery: an operator must call the agency.
    Column("escalated", Boolean, nullable=False, default=False),
    Column("escalated_at", UtcDateTime()),
)

# The catalogue as loaded from catalogue/*.yaml: one row says which version is current.
catalogue_versions = Table(
    "routing_catalogue",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
    # SHA-256 of the files: loading the same files again changes nothing.
    Column("sha256", String(64), nullable=False),
    Column("loaded_at", UtcDateTime(), nullable=False),
)

# Every version ever loaded, whole (a gateway.v1.CatalogueSnapshot as JSON), never deleted:
# intake and notify ask for the version a dossier was received under, and routing follows
# its steps, however the files changed since.
catalogue_snapshots = Table(
    "routing_catalogue_snapshot",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("sha256", String(64), nullable=False),
    Column("loaded_at", UtcDateTime(), nullable=False),
    Column("snapshot", JSON, nullable=False),
)

# ${VARIABLES} (endpoints, secret references) are stored as written, never resolved.
catalogue_agencies = Table(
    "routing_agency",
    metadata,
    Column("code", String(20), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("xroad", String(200), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("target", String(500), nullable=False),
    Column("secret_ref", String(200), nullable=False),
    Column("version", Integer, nullable=False),
)

catalogue_procedures = Table(
    "routing_procedure",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("name", String(500), nullable=False),
    Column("receiving_agency", String(20), nullable=False),
    Column("total_days", Integer, nullable=False),
    Column("required_fields", JSON, nullable=False),
    # A procedure that left the files stays, inactive, for the dossiers still under way.
    Column("active", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
)

catalogue_steps = Table(
    "routing_procedure_step",
    metadata,
    Column("procedure_code", String(40), primary_key=True),
    Column("step_index", Integer, primary_key=True),
    Column("stage", Integer, nullable=False),
    Column("name", String(300), nullable=False),
    Column("agency_code", String(20), nullable=False),
    Column("days", Integer, nullable=False),
)

# Each national status change of a dossier, pushed to the national portal until it answers.
portal_pushes = Table(
    "routing_portal_push",
    metadata,
    # Stable per dossier and status change: sent as Idempotency-Key; the portal de-duplicates.
    Column("push_key", String(36), primary_key=True),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("payload", JSON, nullable=False),
    # When the status changed: a dossier's changes are pushed in this order.
    Column("changed_at", UtcDateTime(), nullable=False),
    # pending -> sent, or pending -> dead_lettered
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("last_error", Text),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    Index("ix_routing_portal_push_due", "status", "next_attempt_at"),
)


class TransferStatus(StrEnum):
    """A transfer's status (routing_transfer.status); intake's API names the same values."""

    PENDING = "pending"
    DELIVERED = "delivered"
    COMPLETED = "completed"
    DEAD_LETTERED = "dead_lettered"
    SUPPLEMENT_REQUESTED = "supplement_requested"
    REFUSED = "refused"
    CANCELLED = "cancelled"


# The same values as the APIs show them: a Literal keeps the OpenAPI document's inline enum
# (a StrEnum would become a schema of its own); tests/unit/test_transfer_status.py holds the
# two together.
TransferStatusName = Literal[
    "pending",
    "delivered",
    "completed",
    "dead_lettered",
    "supplement_requested",
    "refused",
    "cancelled",
]

# A transfer in one of these no longer holds the dossier: its due time is not watched, and
# a refusal does not cancel it.
CLOSED_TRANSFERS = (TransferStatus.COMPLETED, TransferStatus.REFUSED, TransferStatus.CANCELLED)


class PushStatus(StrEnum):
    """A portal push's status (routing_portal_push.status)."""

    PENDING = "pending"
    SENT = "sent"
    DEAD_LETTERED = "dead_lettered"


# Every transition of a dossier with its national status code: the timeline's history.
status_changes = Table(
    "routing_status_change",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("state", String(30), nullable=False),
    Column("status", Integer, nullable=False),
    Column("previous_status", Integer, nullable=False),
    Column("agency_code", String(20), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("details", JSON),
    Column("changed_at", UtcDateTime(), nullable=False),
)

# Apology letters (form 04, Circular 01/2018) issued when a dossier passed its appointment.
apologies = Table(
    "routing_apology",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("agency_code", String(20), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("reason", Text, nullable=False),
    Column("new_due_at", UtcDateTime(), nullable=False),
    Column("issued_at", UtcDateTime(), nullable=False),
)

outbox = outbox_table(metadata, "routing")
processed_events = inbox_table(metadata, "routing")
maintenance = maintenance_table(metadata, "routing")

# Transfers have ids derived from their dossier and step, so a redelivered event or a replay
# names the same transfer.
TRANSFER_NAMESPACE = uuid.UUID("6f1c2b8e-5d4a-4c1e-9a51-0d7f3e2b9c10")


def transfer_id_for(dossier_code: str, step_index: int) -> str:
    return str(uuid.uuid5(TRANSFER_NAMESPACE, f"{dossier_code}/{step_index}"))


def delivery_key(transfer_id: str, round_: int) -> str:
    """Idempotency key of a delivery: the transfer id, plus the supplement round after the
    first, so an agency that de-duplicates takes the supplemented dossier as new."""
    return transfer_id if round_ == 0 else f"{transfer_id}/{round_}"
