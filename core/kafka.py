"""The Kafka producer, with W3C trace propagation.

Spans follow the OpenTelemetry messaging conventions: one PRODUCER span `<topic> publish`
per record, child of the context stored with the outbox row; its context travels in the
record's `traceparent` header to the consumer (core.consumer).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import SpanKind

from core.settings import ServiceSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.kafka")


@dataclass(frozen=True)
class OutboundRecord:
    topic: str
    key: bytes
    value: bytes
    headers: Mapping[str, bytes]
    # Trace context of the transaction that produced the record (may be empty).
    trace_carrier: Mapping[str, str] = field(default_factory=dict)


def messaging_attributes(topic: str, key: bytes | None, message_id: str | None) -> dict[str, Any]:
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
            # Unsent records are still in the outbox (rows go only once Kafka acknowledged
            # them), so a broker that is gone must not hold the process up at shutdown.
            await stop_within(self._producer.stop(), "kafka producer")
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
        """Send all records, then wait for every acknowledgement at once; raise the first
        failure."""
        failure = next((e for e in await self.send_each(records) if e is not None), None)
        if failure is not None:
            raise failure

    async def send_each(self, records: Sequence[OutboundRecord]) -> list[BaseException | None]:
        """Send all records and wait for every acknowledgement at once: each record's
        failure, or None once Kafka took it. A record Kafka refuses (too large, say) fails
        alone, never its batch, so the caller can set it aside and go on."""
        if self._producer is None:
            raise ConnectionError("Kafka producer not connected yet")
        outcomes: list[BaseException | None] = [None] * len(records)
        pending: dict[int, asyncio.Future[Any]] = {}
        for index, record in enumerate(records):
            parent = extract(dict(record.trace_carrier))
            message_id = record.headers.get("ce_id", b"").decode() or None
            with tracer.start_as_current_span(
                f"{record.topic} publish",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=messaging_attributes(record.topic, record.key, message_id)
                | {"messaging.operation.type": "send"},
            ):
                carrier: dict[str, str] = {}
                inject(carrier)
                headers = {**record.headers, **{k: v.encode() for k, v in carrier.items()}}
                try:
                    pending[index] = await self._producer.send(
                        record.topic, record.value, key=record.key, headers=list(headers.items())
                    )
                except KafkaError as exc:  # refused before it left: too large, no buffer
                    outcomes[index] = exc
        acks = await asyncio.gather(*pending.values(), return_exceptions=True)
        for index, ack in zip(pending, acks, strict=True):
            if isinstance(ack, BaseException):
                outcomes[index] = ack
        return outcomes


async def stop_within(closing: Awaitable[None], what: str, seconds: float = 5.0) -> None:
    """Close a Kafka client, giving up after `seconds` when the broker does not answer."""
    try:
        await asyncio.wait_for(closing, timeout=seconds)
    except TimeoutError:
        log.warning("%s did not close within %.0f s (broker unreachable?)", what, seconds)
