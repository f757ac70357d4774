"""Kafka producer and consumer with W3C trace propagation and dead letters.

Spans follow the OpenTelemetry messaging conventions: one PRODUCER span `<topic> publish`
per record (child of the context stored with the outbox row) and one CONSUMER span
`<topic> process` per handled record (child of the producer span via `traceparent`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.exc import InterfaceError, OperationalError

from core.events import EVENT_TYPES, Event, PoisonEvent, from_kafka
from core.settings import ServiceSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.kafka")

# Failures that say nothing about the event itself: retry until they pass, never dead-letter.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    KafkaError,
    OperationalError,
    InterfaceError,
)
# An event whose handler keeps failing for another reason is a poison event after this.
HANDLER_ATTEMPTS = 5

Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class OutboundRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Mapping[str, bytes]
    # Trace context of the transaction that produced the record (may be empty).
    trace_carrier: Mapping[str, str] = field(default_factory=dict)


def _messaging_attributes(topic: str, key: bytes | None, message_id: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"messaging.system": "kafka", "messaging.destination.name": topic}
    if key:
        attributes["messaging.kafka.message.key"] = key.decode(errors="replace")
    if message_id:
        attributes["messaging.message.id"] = message_id
    return attributes


class EventProducer:
    """One idempotent producer per process; sends are batched, never awaited one by one."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=self._settings.kafka_linger_ms,
            max_batch_size=256 * 1024,
        )
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def check(self) -> None:
        """Raise unless the cluster answers a metadata request (readiness)."""
        if self._producer is None:
            raise ConnectionError("Kafka producer not connected yet")
        await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=2)

    async def send_batch(self, records: Sequence[OutboundRecord]) -> None:
        """Send all records, then wait for every acknowledgement at once."""
        if self._producer is None:
            raise ConnectionError("Kafka producer not connected yet")
        pending = []
        for record in records:
            parent = extract(dict(record.trace_carrier))
            message_id = record.headers.get("ce_id", b"").decode() or None
            with tracer.start_as_current_span(
                f"{record.topic} publish",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=_messaging_attributes(record.topic, record.key, message_id)
                | {"messaging.operation.type": "send"},
            ):
                carrier: dict[str, str] = {}
                inject(carrier)
                headers = {**record.headers, **{k: v.encode() for k, v in carrier.items()}}
                pending.append(
                    await self._producer.send(
                        record.topic, record.value, key=record.key, headers=list(headers.items())
                    )
                )
        if pending:
            await asyncio.gather(*pending)


class EventConsumer:
    """At-least-once consumer: offsets are committed only after the handler's transaction.

    Handlers must be idempotent by event id (core.inbox). A record that cannot be decoded,
    or whose handler keeps failing for a non-transient reason, goes to the dead-letter topic
    with the reason, and the consumer goes on with the next record.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        group_id: str,
        handlers: Mapping[str, Handler],
        producer: EventProducer,
        topics: Sequence[str] | None = None,
    ) -> None:
        self._settings = settings
        self._group_id = group_id
        self._handlers = dict(handlers)
        self._producer = producer
        self._topics = list(topics or [settings.dossier_events_topic])
        self.assigned = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self._settings.consumer_max_records,
        )
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=500, max_records=self._settings.consumer_max_records
                )
                if consumer.assignment():
                    self.assigned.set()
                for records in batches.values():
                    for record in records:
                        await self._process(record)
                if batches:
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def _process(self, record: Any) -> None:
        headers = {k: v for k, v in (record.headers or ())}
        ce_type = headers.get("ce_type", b"").decode(errors="replace")
        if ce_type and ce_type not in self._handlers and ce_type in EVENT_TYPES:
            return  # another service's business: skipped without decoding or a span
        try:
            event = from_kafka(record.key, record.value, headers)
        except PoisonEvent as exc:
            await self._dead_letter(record, headers, str(exc))
            return
        handler = self._handlers[event.type]
        parent = extract({k: v.decode(errors="replace") for k, v in headers.items()})
        with tracer.start_as_current_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=_messaging_attributes(record.topic, record.key, event.id)
            | {
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self._group_id,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "cloudevents.event_type": event.type,
            },
        ) as span:
            failure = await self._handle_with_retries(handler, event)
            if failure is not None:
                span.set_status(StatusCode.ERROR, failure)
                await self._dead_letter(record, headers, failure)

    async def _handle_with_retries(self, handler: Handler, event: Event) -> str | None:
        attempts = 0
        delay = 0.1
        while True:
            try:
                await handler(event)
                return None
            except PoisonEvent as exc:
                return str(exc)
            except TRANSIENT_ERRORS as exc:
                # The database or broker is away: wait for it, nothing is lost or skipped.
                log.warning("transient failure handling %s, retrying: %r", event.id, exc)
            except Exception as exc:
                attempts += 1
                log.exception("handler failed on event %s (attempt %d)", event.id, attempts)
                if attempts >= HANDLER_ATTEMPTS:
                    return f"handler failed {attempts} times: {exc!r}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _dead_letter(self, record: Any, headers: dict[str, bytes], reason: str) -> None:
        log.error(
            "dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
        )
        dlq_headers = headers | {
            "dlq_reason": reason.encode(),
            "dlq_source_topic": record.topic.encode(),
            "dlq_source_partition": str(record.partition).encode(),
            "dlq_source_offset": str(record.offset).encode(),
            "dlq_consumer_group": self._group_id.encode(),
        }
        await self._producer.send_batch(
            [
                OutboundRecord(
                    topic=record.topic + self._settings.dead_letter_suffix,
                    key=record.key or b"",
                    value=record.value or b"",
                    headers=dlq_headers,
                )
            ]
        )
