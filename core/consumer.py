"""The Kafka consumer: batches of CloudEvents handled in one transaction, at least once.

Offsets are committed only after the handler's transaction, and handlers claim event ids
in that same transaction (core.inbox), so a redelivery changes nothing. Each handled record
gets its CONSUMER span `<topic> process`, the child of the producer's span; the span's
context rides on the Event (`event.trace`) so that what the handler writes continues the
dossier's trace. A batch that fails for a reason other than an outage is replayed one event
at a time, so only a poison event is dead-lettered, with its reason, and the rest go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, StatusCode

from core.events import EVENT_TYPES, Event, PoisonEvent, from_kafka
from core.handlers import BatchHandler, EventHandlers
from core.kafka import EventProducer, OutboundRecord, messaging_attributes, stop_within
from core.retry import until_available
from core.settings import ServiceSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer("gateway.kafka")

# An event whose handler keeps failing for another reason is a poison event after this.
HANDLER_ATTEMPTS = 5


class EventConsumer:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        group_id: str,
        handlers: EventHandlers,
        producer: EventProducer,
        topics: Sequence[str] | None = None,
        room: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._settings = settings
        self._group_id = group_id
        # Only the types with a handler are decoded and handed over (core/handlers.py).
        self._event_types = handlers.event_types
        self._handle: BatchHandler = handlers
        self._producer = producer
        self._topics = list(topics or [settings.dossier_events_topic])
        # False while the work queues this consumer feeds are full (core/room.py).
        self._room = room

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
        interval_s = self._settings.consumer_commit_interval_ms / 1000
        # Per partition, the offset after the last record handled: committed explicitly, as
        # the consumer's own position is already past a batch it returned and that a stop or
        # crash may cut off before its transaction commits.
        handled: dict[TopicPartition, int] = {}
        committed_at = time.monotonic()
        try:
            while True:
                await self._hold_while_full(consumer)
                batches = await consumer.getmany(
                    timeout_ms=500, max_records=self._settings.consumer_max_records
                )
                records = [r for partition in batches.values() for r in partition]
                dead_lettered = False
                if records:
                    dead_lettered = await self._process(records)
                    handled |= {tp: batch[-1].offset + 1 for tp, batch in batches.items() if batch}
                # A dead letter is not covered by the inbox: committed at once, which leaves
                # only a crash between the dead letter and this commit to dead-letter the
                # poison a second time (within 500 ms, it was any crash of the interval).
                due = time.monotonic() - committed_at >= interval_s
                if handled and (due or dead_lettered):
                    # A crash before this hands the events since the last commit over
                    # again, and the inbox skips them.
                    await _commit(consumer, handled)
                    committed_at = time.monotonic()
        finally:
            if handled:  # a clean stop hands nothing handled over again
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_commit(consumer, handled), timeout=2)
            # Leaving the group is a courtesy that must not hang a shutdown when the broker
            # is gone; what was handled since the last commit is recognised when read again.
            await stop_within(consumer.stop(), f"consumer {self._group_id}")

    async def _hold_while_full(self, consumer: AIOKafkaConsumer) -> None:
        """Pause every assigned partition while there is no room, resume when there is.
        Polling goes on meanwhile (a consumer that stops polling is put out of its group),
        and a partition assigned while paused is paused at the next turn."""
        if self._room is None:
            return
        if await self._room():
            if consumer.paused():
                log.info("consumer %s takes events in again", self._group_id)
                consumer.resume(*consumer.paused())
        elif set(consumer.assignment()) - set(consumer.paused()):
            if not consumer.paused():
                log.info("consumer %s holds: its work queues are full", self._group_id)
            consumer.pause(*consumer.assignment())

    async def _process(self, records: list[Any]) -> bool:
        """Handle a batch; True when some of it was dead-lettered."""
        dead_lettered = False
        accepted: list[tuple[Event, Span, Any]] = []
        for record in records:
            headers = {k: v for k, v in (record.headers or ())}
            ce_type = headers.get("ce_type", b"").decode(errors="replace")
            # Our own types that this consumer does not handle are skipped cheaply; any other
            # type is decoded, and an unknown one is reported as poison by from_kafka.
            if ce_type and ce_type not in self._event_types and ce_type in EVENT_TYPES:
                continue  # another service's business: skipped without decoding or a span
            try:
                event = from_kafka(record.key, record.value, headers)
            except PoisonEvent as exc:
                await self._dead_letter(record, str(exc))
                dead_lettered = True
                continue
            span = self._start_span(record, headers, event)
            carrier: dict[str, str] = {}
            inject(carrier, context=trace.set_span_in_context(span))
            accepted.append((dataclasses.replace(event, trace=carrier), span, record))
        if not accepted:
            return dead_lettered
        try:
            await until_available(self._group_id, lambda: self._handle([e for e, _, _ in accepted]))
        except Exception:
            log.warning("batch of %d failed; replaying it event by event", len(accepted))
            for event, span, record in accepted:
                failure = await self._handle_one(event)
                if failure is not None:
                    span.set_status(StatusCode.ERROR, failure)
                    await self._dead_letter(record, failure)
                    dead_lettered = True
        finally:
            for _, span, _ in accepted:
                span.end()
        return dead_lettered

    def _start_span(self, record: Any, headers: dict[str, bytes], event: Event) -> Span:
        parent = extract({k: v.decode(errors="replace") for k, v in headers.items()})
        return tracer.start_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=messaging_attributes(record.topic, record.key, event.id)
            | {
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": self._group_id,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "cloudevents.event_type": event.type,
            },
        )

    async def _handle_one(self, event: Event) -> str | None:
        """Handle one event alone; the reason it is poison, or None when it went through."""
        for attempt in range(1, HANDLER_ATTEMPTS + 1):
            try:
                await until_available(self._group_id, lambda: self._handle([event]))
                return None
            except PoisonEvent as exc:
                return str(exc)
            except Exception as exc:
                log.exception("handler failed on event %s (attempt %d)", event.id, attempt)
                if attempt == HANDLER_ATTEMPTS:
                    return f"handler failed {attempt} times: {exc!r}"
                await asyncio.sleep(0.1 * 2**attempt)
        return None

    async def _dead_letter(self, record: Any, reason: str) -> None:
        log.error(
            "dead-lettering %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason
        )
        headers = {k: v for k, v in (record.headers or ())} | {
            "dlq_reason": reason.encode(),
            "dlq_source_topic": record.topic.encode(),
            "dlq_source_partition": str(record.partition).encode(),
            "dlq_source_offset": str(record.offset).encode(),
            "dlq_consumer_group": self._group_id.encode(),
        }
        dead = OutboundRecord(
            topic=record.topic + self._settings.dead_letter_suffix,
            key=record.key or b"",
            value=record.value or b"",
            headers=headers,
        )
        await until_available("dead-letter topic", lambda: self._producer.send_batch([dead]))


async def _commit(consumer: AIOKafkaConsumer, handled: dict[TopicPartition, int]) -> None:
    """Commit what was handled on the partitions still assigned. One a rebalance took away
    is its new owner's: read again from its last commit, the inbox skips what was handled."""
    assigned = consumer.assignment()
    offsets = {tp: offset for tp, offset in handled.items() if tp in assigned}
    handled.clear()
    if offsets:
        await consumer.commit(offsets)
