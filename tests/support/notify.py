"""Helpers for notify's end-to-end tests: publish dossier events straight to Kafka (as
intake and routing would), read the SMS sandbox, the webhook receiver and notify's status
API, subscribe agencies to callbacks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.events import Event, from_kafka, new_event
from devstack.stack import Stack
from gateway.v1 import dossier_pb2, events_pb2
from tests.support.flows import as_agency, as_operator, steer_sandbox
from tests.support.kafka import TOPIC, at_least, keyed, publish, read_topic, stamp

__all__ = ["publish"]  # the tests publish events through here, beside the builders
# Not in the catalogue: routing dead-letters these DossierSubmitted events, so a test's
# dossier stays where the test put it and only notify acts on its events.
NOTIFY_ONLY = "TEST.NOTIFY-ONLY"


def submitted(
    code: str, *, email: str = "", phone: str = "", preferred: str = "", at: datetime | None = None
) -> Event:
    at = at or datetime.now(UTC)
    dossier = dossier_pb2.Dossier(
        code=code,
        procedure_code=NOTIFY_ONLY,
        receiving_agency_code="000.00.01.H22",
        applicant=dossier_pb2.Applicant(
            personal_id="001090012345",
            full_name="Nguyễn Thị Lan",
            email=email,
            phone=phone,
            preferred_channel=preferred,
        ),
        received_at=stamp(at),
        due_at=stamp(at + timedelta(days=5)),
    )
    return new_event(
        events_pb2.DossierSubmitted(dossier=dossier), source="/test", dossier_code=code
    )


def routed(code: str) -> Event:
    data = events_pb2.DossierRouted(
        dossier_code=code,
        step_index=0,
        step_name="Đăng ký khai sinh",
        agency_code="000.21.31.H22",
        agency_name="UBND xã Tân Phong — Tư pháp - Hộ tịch",
        step_due_at=stamp(datetime.now(UTC) + timedelta(days=1)),
    )
    return new_event(data, source="/test", dossier_code=code)


def notifications(stack: Stack, code: str) -> list[dict[str, Any]]:
    response = httpx.get(
        stack.url("notify") + "/v1/notifications",
        params={"dossier": code},
        headers=as_operator(stack),
        timeout=10,
    )
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def notification(stack: Stack, notification_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.url('notify')}/v1/notifications/{notification_id}",
        headers=as_operator(stack),
        timeout=10,
    )
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def settled(stack: Stack, code: str, count: int) -> list[dict[str, Any]] | None:
    """The dossier's notifications once there are `count` and all are in a final status."""
    found = notifications(stack, code)
    final = {"delivered", "permanent-failure", "technical-failure"}
    if len(found) == count and all(n["status"] in final for n in found):
        return found
    return None


def sms_to(stack: Stack, phone: str) -> list[dict[str, Any]]:
    response = httpx.get(stack.url("sandbox") + "/sms/messages", params={"to": phone}, timeout=10)
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()
    return messages


def sms_behaviour(stack: Stack, **behaviour: Any) -> dict[str, Any]:
    return steer_sandbox(stack, "sms", **behaviour)


def mail_behaviour(stack: Stack, **behaviour: Any) -> None:
    steer_sandbox(stack, "mail", **behaviour)


def status_events(bootstrap: str, dossier_code: str, expected: int) -> list[Any]:
    """The first `expected` NotificationStatusChanged events about a dossier, from Kafka."""
    kind = "vn.gov.notification.status_changed.v1"
    records = asyncio.run(
        read_topic(bootstrap, TOPIC, keyed(dossier_code, kind), at_least(expected))
    )
    return [from_kafka(r.key, r.value, dict(r.headers)).data for r in records]


def webhook_receiver(stack: Stack, tag: str) -> str:
    """A fresh callback URL at the sandbox's webhook receiver (the one local path notify may
    call: OUTBOUND_ALLOW in devstack/stack.py), and its name for callbacks_at()."""
    return f"{stack.url('sandbox')}/webhooks/{tag}-{uuid.uuid4().hex[:8]}"


def callbacks_at(url: str) -> list[dict[str, Any]]:
    """What the sandbox receiver at `url` was sent: body (text) and headers, oldest first."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    received: list[dict[str, Any]] = response.json()
    return received


def subscribe(stack: Stack, agency_code: str, url: str, *event_types: str) -> httpx.Response:
    return httpx.post(
        stack.url("notify") + "/v1/webhook-subscriptions",
        json={"agency_code": agency_code, "url": url, "event_types": list(event_types)},
        headers=as_agency(stack, agency_code),
        timeout=15,
    )


def unsubscribe(stack: Stack, agency_code: str, subscription_id: str) -> None:
    """Stop a test's subscription, so later tests' dossiers are not called back to it."""
    response = httpx.delete(
        f"{stack.url('notify')}/v1/webhook-subscriptions/{subscription_id}",
        headers=as_agency(stack, agency_code),
        timeout=10,
    )
    assert response.status_code in (204, 404), response.text
