"""Routing's tables: each dossier's journey and each transfer to an agency."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
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
from core.outbox import outbox_table
from core.storage import UtcDateTime

metadata = MetaData()

journeys = Table(
    "routing_dossier",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("procedure_code", String(40), nullable=False),
    # routing | completed
    Column("status", String(20), nullable=False),
    # The stage under way: its steps run in parallel; the next starts when all are done.
    Column("current_stage", Integer, nullable=False),
    # The submitted gateway.v1.Dossier, delivered to every agency of the journey.
    Column("dossier", LargeBinary, nullable=False),
    # W3C context of the dossier's trace: later hops (agency callbacks) continue it.
    Column("trace", JSON, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("completed_at", UtcDateTime()),
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
    # pending -> delivered -> completed, or pending -> dead_lettered
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
    UniqueConstraint("dossier_code", "step_index"),
    Index("ix_routing_transfer_due", "status", "next_attempt_at"),
)

outbox = outbox_table(metadata, "routing")
processed_events = inbox_table(metadata, "routing")
