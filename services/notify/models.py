"""Notify's tables: who to tell about a dossier, every message with its status and history,
the agency systems that subscribed to signed callbacks, and the day's count of sends."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    Date,
    Index,
    Integer,
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

contacts = Table(
    "notify_contact",
    metadata,
    Column("dossier_code", String(40), primary_key=True),
    Column("procedure_code", String(40), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("email", String(320)),
    Column("phone", String(20)),
    # "email", "sms" or "" (every channel the applicant gave details for).
    Column("preferred_channel", String(10), nullable=False, default=""),
    Column("receiving_agency_code", String(40)),
    Column("received_at", UtcDateTime()),
    # Routing's catalogue version the dossier was received under (its procedure's name).
    Column("catalogue_version", Integer, nullable=False, server_default="0"),
)

# Status: created -> sending -> delivered | temporary-failure | permanent-failure |
# technical-failure (the vocabulary of GOV.UK Notify); see services/notify/status.py.
notifications = Table(
    "notify_notification",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("dossier_code", String(40), nullable=False, index=True),
    Column("channel", String(10), nullable=False),
    # "" for citizens; the webhook subscription's id for agency callbacks.
    Column("subscription_id", String(36), nullable=False, default=""),
    # E-mail address, E.164 phone number or callback URL.
    Column("recipient", String(2048)),
    Column("template", String(40), nullable=False),
    Column("template_version", Integer, nullable=False),
    Column("subject", String(500), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UtcDateTime(), nullable=False),
    Column("reason", Text),
    Column("provider_id", String(100)),
    Column("trace", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("sent_at", UtcDateTime()),
    # Set (committed) just before a channel without idempotency is handed the message,
    # cleared with its outcome: still set after a crash means "the provider may have it".
    Column("in_flight_at", UtcDateTime()),
    # One message per event and channel (and subscription), whatever Kafka redelivers.
    UniqueConstraint("event_id", "channel", "subscription_id"),
    Index("ix_notify_notification_due", "channel", "status", "next_attempt_at"),
)

# Every status a notification went through, in order: what an officer reads to see why.
status_history = Table(
    "notify_status_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("notification_id", String(36), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("reason", Text),
    Column("attempt", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
)

webhook_subscriptions = Table(
    "notify_webhook_subscription",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("agency_code", String(40), nullable=False, index=True),
    Column("url", String(2048), nullable=False),
    Column("event_types", JSON, nullable=False),
    # The Standard Webhooks signing secret: shown once at creation, kept to sign.
    Column("secret", String(100), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

processed_events = inbox_table(metadata, "notify")
outbox = outbox_table(metadata, "notify")
maintenance = maintenance_table(metadata, "notify")

# Messages sent (or about to be) per channel and local day, against the provider's daily
# cap: one count for every replica (services/notify/daily_cap.py). `last_granted` is what
# the last reservation got, so that one statement both reserves and says how much.
daily_sends = Table(
    "notify_daily_send",
    metadata,
    Column("channel", String(10), primary_key=True),
    Column("day", Date(), primary_key=True),
    Column("used", Integer(), nullable=False),
    Column("last_granted", Integer(), nullable=False),
)
