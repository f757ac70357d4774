"""Intake's tables. Intake owns the registered dossier; routing owns its journey."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Integer, MetaData, String, Table

from core.inbox import inbox_table
from core.maintenance import maintenance_table
from core.outbox import outbox_table
from core.storage import UtcDateTime

metadata = MetaData()

dossiers = Table(
    "intake_dossier",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("procedure_code", String(40), nullable=False),
    Column("receiving_agency_code", String(20), nullable=False),
    Column("applicant", JSON, nullable=False),
    Column("form_data", JSON, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("trace_id", String(32), nullable=False),
    # Routing's catalogue version the dossier was received under (checked, due date set):
    # routing follows that version's steps. 0: received before versions were recorded.
    Column("catalogue_version", Integer, nullable=False, server_default="0"),
)

# Daily receipt numbering per receiving agency: AGENCY-YYMMDD-NNNN.
receipt_sequences = Table(
    "intake_receipt_sequence",
    metadata,
    Column("agency_code", String(20), primary_key=True),
    Column("day", String(6), primary_key=True),
    Column("last_number", Integer, nullable=False),
)

# One row per Idempotency-Key: a replay returns the same receipt, never a second dossier.
idempotency_keys = Table(
    "intake_idempotency_key",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("dossier_code", String(40), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# What an e-ID filing adds to a dossier: the login's assurance level and the residence the
# citizen consented to share from the population registry (once-only).
dossier_citizen_data = Table(
    "intake_dossier_citizen_data",
    metadata,
    Column("code", String(40), primary_key=True),
    Column("assurance_level", Integer, nullable=False),
    Column("residence", JSON, nullable=True),
)

outbox = outbox_table(metadata, "intake")
processed_events = inbox_table(metadata, "intake")
maintenance = maintenance_table(metadata, "intake")
