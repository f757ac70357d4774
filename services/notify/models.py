"""Notify's tables: who to tell about a dossier, and every message with its status."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from core.inbox import inbox_table
from core.storage import UtcDateTime

metadata = MetaData()

contacts = Table(
    "notify_contact",
    metadata,
    Column("dossier_code", String(40), primary_key=True),
    Column("procedure_code", String(40), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(20)),
)

# Status: created -> sending -> delivered | temporary-failure | permanent-failure |
# technical-failure (the vocabulary of GOV.UK Notify).
notifications = Table(
    "notify_notification",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("channel", String(10), nullable=False),
    Column("recipient", String(320)),
    Column("template", String(40), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("reason", Text),
    Column("trace", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    # One message per event and channel, whatever Kafka redelivers.
    UniqueConstraint("event_id", "channel"),
    Index("ix_notify_notification_due", "status", "next_attempt_at"),
)

processed_events = inbox_table(metadata, "notify")
