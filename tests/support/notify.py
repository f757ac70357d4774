"""Helpers for notify's end-to-end tests: publish dossier events straight to Kafka (as
intake and routing would), read the SMS sandbox and notify's status API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from google.protobuf.timestamp_pb2 import Timestamp

from core.events import Event, from_kafka, new_event, to_kafka
from devstack.stack import Stack
from gateway.v1 import dossier_pb2, events_pb2
from tests.support.flows import as_operator

TOPIC = "dossier.events"
# Not in the catalogue: routing dead-letters these DossierSubmitted events, so a test's
# dossier stays where the test put it and only notify acts on its events.
NOTIFY_ONLY = "TEST.NOTIFY-ONLY"


def stamp(value: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(value)
    return result


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


def publish(bootstrap: str, events: Sequence[Event]) -> None:
    """Send events in order (one dossier's share a key, hence a partition) and wait for acks."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for event in events:
                key, value, headers = to_kafka(event)
                await producer.send_and_wait(TOPIC, value, key=key, headers=list(headers.items()))
        finally:
            await producer.stop()

    asyncio.run(send())


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
    response = httpx.put(stack.url("sandbox") + "/sms/behaviour", json=behaviour, timeout=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def mail_behaviour(stack: Stack, **behaviour: Any) -> None:
    response = httpx.put(stack.url("sandbox") + "/mail/behaviour", json=behaviour, timeout=10)
    response.raise_for_status()


def status_events(bootstrap: str, dossier_code: str, expected: int) -> list[Any]:
    """The first `expected` NotificationStatusChanged events about a dossier, from Kafka."""

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            TOPIC,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            group_id=f"test-{uuid.uuid4()}",
        )
        await consumer.start()
        found: list[Any] = []
        try:
            async with asyncio.timeout(60):
                while len(found) < expected:
                    batch = await consumer.getmany(timeout_ms=500)
                    for records in batch.values():
                        for r in records:
                            if r.key != dossier_code.encode():
                                continue
                            event = from_kafka(r.key, r.value, dict(r.headers))
                            if isinstance(event.data, events_pb2.NotificationStatusChanged):
                                found.append(event.data)
        finally:
            await consumer.stop()
        return found

    return asyncio.run(read())
