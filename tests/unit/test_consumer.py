"""core/consumer.py and core/handlers.py without a broker: what a batch of records becomes
(dispatched by type, skipped, dead-lettered), the replay one event at a time after a failed
batch, a transient failure retried, waiting out an outage, the dossier's trace carried on,
and offsets committed only after the handler's work."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

import core.consumer as consumer_module
from core.consumer import EventConsumer
from core.events import Event, PoisonEvent, new_event, to_kafka
from core.handlers import EventHandlers
from core.kafka import EventProducer, OutboundRecord
from core.settings import ServiceSettings
from gateway.v1 import dossier_pb2, events_pb2

SUBMITTED = "vn.gov.dossier.submitted.v1"
TOPIC = "dossier-events"


@dataclass
class Record:
    """The fields of an aiokafka ConsumerRecord the consumer reads."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    offset: int
    topic: str = TOPIC
    partition: int = 0


class Producer(EventProducer):
    """The real producer, never started: keeps what would go to the dead-letter topic."""

    def __init__(self) -> None:
        super().__init__(ServiceSettings())
        self.sent: list[OutboundRecord] = []

    async def send_batch(self, records: Sequence[OutboundRecord]) -> None:
        self.sent.extend(records)


@dataclass
class Handler:
    poison: set[str] = field(default_factory=set)
    # Calls that raise before one goes through: a batch-wide failure, then a replay.
    fail_batches: int = 0
    outages: int = 0
    calls: list[list[str]] = field(default_factory=list)

    async def __call__(self, events: Sequence[Event]) -> None:
        codes = [e.subject for e in events]
        self.calls.append(codes)
        if self.outages:
            self.outages -= 1
            raise ConnectionRefusedError(111, "database away")
        if len(events) > 1 and self.fail_batches:
            self.fail_batches -= 1
            raise RuntimeError("one of these is bad")
        bad = [c for c in codes if c in self.poison]
        if bad:
            raise PoisonEvent(f"{bad[0]} names no procedure")


def record(code: str, offset: int, *, data: Any = None) -> Record:
    message = data or events_pb2.DossierSubmitted(dossier=dossier_pb2.Dossier(code=code))
    key, value, headers = to_kafka(new_event(message, source="/intake", dossier_code=code))
    return Record(key, value, list(headers.items()), offset)


def consumer_with(handler: Handler, producer: Producer) -> EventConsumer:
    handlers = EventHandlers()
    handlers.on(events_pb2.DossierSubmitted)(handler)
    return EventConsumer(
        ServiceSettings(), group_id="routing", handlers=handlers, producer=producer
    )


async def test_a_batch_reaches_the_handler_in_one_call() -> None:
    handler, producer = Handler(), Producer()

    await consumer_with(handler, producer)._process([record("A", 1), record("B", 2)])

    assert handler.calls == [["A", "B"]]
    assert producer.sent == []


async def test_other_services_events_are_skipped_and_unknown_ones_dead_lettered() -> None:
    handler, producer = Handler(), Producer()
    routed = record("R", 1, data=events_pb2.DossierRouted(dossier_code="R"))
    stranger = record("X", 2)
    stranger.headers = [
        (k, b"vn.gov.unknown.v1" if k == "ce_type" else v) for k, v in stranger.headers
    ]
    garbage = Record(b"G", b"\xff", [], 3)

    await consumer_with(handler, producer)._process([routed, stranger, record("A", 4), garbage])

    assert handler.calls == [["A"]]
    assert [r.headers["dlq_source_offset"] for r in producer.sent] == [b"2", b"3"]
    assert producer.sent[0].topic == TOPIC + ServiceSettings().dead_letter_suffix
    assert b"unknown event type" in producer.sent[0].headers["dlq_reason"]
    assert producer.sent[1].value == b"\xff"  # the record as it came, for a replay


async def test_a_failed_batch_is_replayed_one_by_one_and_only_the_poison_parked() -> None:
    handler, producer = Handler(poison={"B"}, fail_batches=1), Producer()

    await consumer_with(handler, producer)._process(
        [record("A", 1), record("B", 2), record("C", 3)]
    )

    assert handler.calls == [["A", "B", "C"], ["A"], ["B"], ["C"]]
    assert [r.headers["dlq_source_offset"] for r in producer.sent] == [b"2"]
    assert producer.sent[0].headers["dlq_consumer_group"] == b"routing"


async def test_a_handler_that_keeps_failing_is_parked_after_its_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "HANDLER_ATTEMPTS", 2)
    calls = 0

    async def broken(events: Sequence[Event]) -> None:
        nonlocal calls
        calls += 1
        raise KeyError("a bug, not an outage")

    producer = Producer()
    consumer = consumer_with(Handler(), producer)
    consumer._handle = broken
    await consumer._process([record("A", 7)])

    assert calls == 3  # the batch, then two attempts alone
    assert b"handler failed 2 times" in producer.sent[0].headers["dlq_reason"]


async def test_an_outage_is_waited_out_and_parks_nothing() -> None:
    handler, producer = Handler(outages=2), Producer()

    await consumer_with(handler, producer)._process([record("A", 1), record("B", 2)])

    assert handler.calls == [["A", "B"]] * 3
    assert producer.sent == []


class Kafka:
    """Stands in for AIOKafkaConsumer: one batch, then the loop is stopped at its next poll."""

    journal: ClassVar[list[str]] = []

    def __init__(self, *topics: str, **config: Any) -> None:
        self.config = config
        self.polls = 0

    async def start(self) -> None:
        self.journal.append("start")

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        self.polls += 1
        if self.polls > 1:
            raise asyncio.CancelledError
        return {"p0": [record("A", 1), record("B", 2)]}

    # What each commit committed: partition -> the offset after the last record handled.
    committed: ClassVar[list[dict[str, int]]] = []

    def assignment(self) -> set[str]:
        return {"p0"}

    async def commit(self, offsets: dict[str, int]) -> None:
        self.journal.append("commit")
        self.committed.append(dict(offsets))

    async def stop(self) -> None:
        self.journal.append("stop")


async def test_offsets_are_committed_after_the_handler_and_never_automatically(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Kafka.journal = []
    made: list[Kafka] = []

    def kafka(*topics: str, **config: Any) -> Kafka:
        made.append(Kafka(*topics, **config))
        return made[-1]

    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", kafka)

    async def handle(events: Sequence[Event]) -> None:
        Kafka.journal.append("handled " + ",".join(e.subject for e in events))

    consumer = consumer_with(Handler(), Producer())
    consumer._handle = handle
    with pytest.raises(asyncio.CancelledError):
        await consumer.run()

    assert Kafka.journal == ["start", "handled A,B", "commit", "stop"]
    assert made[0].config["enable_auto_commit"] is False


async def test_a_stop_while_a_batch_is_handled_commits_only_what_was_handled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """getmany has moved the consumer's position past the batch it returned: committing
    that position when a stop cuts the batch off would skip it for good."""
    Kafka.journal, Kafka.committed, SteadyKafka.now = [], [], 0.0
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", SteadyKafka)
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: SteadyKafka.now)

    async def handle(events: Sequence[Event]) -> None:
        if events[0].subject == "D3":
            raise asyncio.CancelledError  # the stop, while D3's transaction is open
        Kafka.journal.append(",".join(e.subject for e in events))

    consumer = consumer_with(Handler(), Producer())
    consumer._handle = handle
    with pytest.raises(asyncio.CancelledError):
        await consumer.run()

    # D1 and D2 were handled, not yet committed (the interval had not run out): the stop
    # commits up to D2 (offset 2, next 3), so D3 is read again.
    assert Kafka.journal == ["start", "D1", "D2", "commit", "stop"]
    assert Kafka.committed == [{"p0": 3}]


class SteadyKafka(Kafka):
    """A batch on each of the first `busy` polls, then nothing; each poll takes 125 ms."""

    busy = 7
    now = 0.0

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        self.polls += 1
        SteadyKafka.now += 0.125
        if self.polls > 12:
            raise asyncio.CancelledError
        if self.polls > self.busy:
            return {}
        return {"p0": [record(f"D{self.polls}", self.polls)]}


async def test_offsets_are_committed_at_most_once_an_interval_and_soon_after_the_last_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Kafka.journal, Kafka.committed, SteadyKafka.now = [], [], 0.0
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", SteadyKafka)
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: SteadyKafka.now)

    async def handle(events: Sequence[Event]) -> None:
        Kafka.journal.append(",".join(e.subject for e in events))

    consumer = consumer_with(Handler(), Producer())
    assert consumer._settings.consumer_commit_interval_ms == 500
    consumer._handle = handle
    with pytest.raises(asyncio.CancelledError):
        await consumer.run()

    # Seven batches, two commits: one when the interval ran out mid-stream, one when it
    # ran out again with the last three batches handled and nothing more coming. Nothing is
    # left for the stop.
    assert Kafka.journal == [
        *("start", "D1", "D2", "D3", "D4", "commit"),
        *("D5", "D6", "D7", "commit", "stop"),
    ]
    assert Kafka.committed == [{"p0": 5}, {"p0": 8}]


class PoisonedKafka(SteadyKafka):
    """Three batches, the second of them poison (not an event at all)."""

    busy = 3

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        batches = await super().getmany()
        if self.polls == 2:
            return {"p0": [Record(b"G", b"\xff", [], 2)]}
        return batches


async def test_a_dead_letter_is_committed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dead-letter topic is not covered by the inbox: were the poison read again after
    a crash, it would be dead-lettered a second time."""
    Kafka.journal, Kafka.committed, SteadyKafka.now = [], [], 0.0
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", PoisonedKafka)
    monkeypatch.setattr(consumer_module.time, "monotonic", lambda: SteadyKafka.now)

    async def handle(events: Sequence[Event]) -> None:
        Kafka.journal.append(",".join(e.subject for e in events))

    producer = Producer()
    consumer = consumer_with(Handler(), producer)
    consumer._handle = handle
    with pytest.raises(asyncio.CancelledError):
        await consumer.run()

    assert len(producer.sent) == 1
    # Committed right after the poison's batch (250 ms in, the interval is 500 ms).
    assert Kafka.journal[:4] == ["start", "D1", "commit", "D3"]
    assert Kafka.committed[0] == {"p0": 3}


class PausableKafka(Kafka):
    """Serves a record on every poll of a partition that is not paused."""

    def __init__(self, *topics: str, **config: Any) -> None:
        super().__init__(*topics, **config)
        self._paused: set[str] = set()

    def assignment(self) -> set[str]:
        return {"p0", "p1"}

    def paused(self) -> set[str]:
        return set(self._paused)

    def pause(self, *partitions: str) -> None:
        self._paused |= set(partitions)

    def resume(self, *partitions: str) -> None:
        self._paused -= set(partitions)

    async def getmany(self, **_: Any) -> dict[str, list[Record]]:
        self.polls += 1
        if self.polls > 6:
            raise asyncio.CancelledError
        served = sorted(self.assignment() - self._paused)
        self.journal.append(f"poll {'+'.join(served) or 'nothing'}")
        return {p: [record(f"{p}-{self.polls}", self.polls)] for p in served}


async def test_a_consumer_whose_work_queues_are_full_pauses_and_still_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Kafka.journal = []
    monkeypatch.setattr(consumer_module, "AIOKafkaConsumer", PausableKafka)
    rooms = itertools.chain([True, False, False], itertools.repeat(True))

    async def room() -> bool:
        return next(rooms)

    async def handle(events: Sequence[Event]) -> None:
        Kafka.journal.append("handled " + ",".join(e.subject for e in events))

    handlers = EventHandlers()
    handlers.on(events_pb2.DossierSubmitted)(Handler())
    consumer = EventConsumer(
        ServiceSettings(), group_id="notify", handlers=handlers, producer=Producer(), room=room
    )
    consumer._handle = handle
    with pytest.raises(asyncio.CancelledError):
        await consumer.run()

    polls = [entry for entry in Kafka.journal if entry.startswith("poll")]
    # Two turns without room: both partitions paused, polling goes on (the group keeps
    # the consumer), nothing is taken in; then it takes events in again.
    assert polls == ["poll p0+p1", "poll nothing", "poll nothing"] + ["poll p0+p1"] * 3
    assert "handled p0-4,p1-4" in Kafka.journal


def routed(code: str, offset: int) -> Record:
    return record(code, offset, data=events_pb2.DossierRouted(dossier_code=code))


async def test_each_type_goes_to_its_handler_in_order_and_a_shared_handler_gets_one_call() -> None:
    submitted_seen: list[list[str]] = []
    routed_seen: list[list[str]] = []
    handlers = EventHandlers()

    @handlers.on(events_pb2.DossierSubmitted)
    async def take_in(events: Sequence[Event[events_pb2.DossierSubmitted]]) -> None:
        submitted_seen.append([e.data.dossier.code for e in events])

    @handlers.on(events_pb2.DossierRouted)
    async def follow(events: Sequence[Event[events_pb2.DossierRouted]]) -> None:
        routed_seen.append([e.data.dossier_code for e in events])

    producer = Producer()
    consumer = EventConsumer(ServiceSettings(), group_id="g", handlers=handlers, producer=producer)
    await consumer._process([record("A", 1), routed("A", 2), record("B", 3), routed("C", 4)])

    assert submitted_seen == [["A", "B"]]
    assert routed_seen == [["A", "C"]]
    assert handlers.event_types == {SUBMITTED, "vn.gov.dossier.routed.v1"}

    shared = Handler()
    both = EventHandlers()
    both.on(events_pb2.DossierSubmitted)(shared)
    both.on(events_pb2.DossierRouted)(shared)
    await EventConsumer(ServiceSettings(), group_id="g", handlers=both, producer=producer)._process(
        [record("A", 1), routed("A", 2), record("B", 3)]
    )

    assert shared.calls == [["A", "A", "B"]]  # one call, one transaction, as it came
    assert producer.sent == []


def test_a_handler_is_registered_once_for_an_event_message_only() -> None:
    handlers = EventHandlers()
    handlers.on(events_pb2.DossierSubmitted)(Handler())

    with pytest.raises(ValueError, match="already has a handler"):
        handlers.on(events_pb2.DossierSubmitted)(Handler())
    with pytest.raises(ValueError, match="not the data of any event type"):
        handlers.on(dossier_pb2.Dossier)


async def test_an_event_without_a_handler_is_poison_for_the_registry() -> None:
    handlers = EventHandlers()
    handlers.on(events_pb2.DossierSubmitted)(Handler())
    event = new_event(events_pb2.DossierRouted(dossier_code="A"), source="/x", dossier_code="A")

    with pytest.raises(PoisonEvent, match=r"no handler for vn\.gov\.dossier\.routed\.v1"):
        await handlers([event])


async def test_a_transient_failure_is_retried_alone_and_parks_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float] = []

    async def no_wait(delay: float) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(consumer_module.asyncio, "sleep", no_wait)
    handled: list[list[str]] = []
    failures = {"B": 2}

    async def flaky(events: Sequence[Event]) -> None:
        codes = [e.subject for e in events]
        handled.append(codes)
        for code in codes:
            if failures.get(code):
                failures[code] -= 1
                raise RuntimeError(f"{code}: a lock timed out")

    producer = Producer()
    consumer = consumer_with(Handler(), producer)
    consumer._handle = flaky
    await consumer._process([record("A", 1), record("B", 2)])

    # The batch fails; replayed alone, B fails once more and then goes through.
    assert handled == [["A", "B"], ["A"], ["B"], ["B"]]
    assert len(sleeps) == 1
    assert producer.sent == []


async def test_the_handler_continues_the_trace_the_record_carries() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen: list[Event] = []

    async def keep(events: Sequence[Event]) -> None:
        seen.extend(events)

    carried = record("A", 1)
    carried.headers.append(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01".encode()))
    consumer = consumer_with(Handler(), Producer())
    consumer._handle = keep
    await consumer._process([carried])

    assert seen[0].trace["traceparent"].split("-")[1] == trace_id
