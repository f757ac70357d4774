"""Dossier events as CloudEvents 1.0 in the Kafka binary content mode.

The protobuf message of proto/gateway/v1/events.proto is the event data; its CloudEvents
type is fixed here, once. ce_* headers carry the attributes, `content-type` says protobuf,
the Kafka key is the dossier code, and W3C `traceparent` travels beside them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic

from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from typing_extensions import TypeVar

from core.clock import SYSTEM_CLOCK
from gateway.v1 import events_pb2

PROTOBUF = "application/protobuf"

EVENT_TYPES: dict[str, type[Message]] = {
    "vn.gov.dossier.submitted.v1": events_pb2.DossierSubmitted,
    "vn.gov.dossier.routed.v1": events_pb2.DossierRouted,
    "vn.gov.dossier.delivered.v1": events_pb2.DossierDelivered,
    "vn.gov.dossier.step_completed.v1": events_pb2.StepCompleted,
    "vn.gov.dossier.completed.v1": events_pb2.DossierCompleted,
    "vn.gov.dossier.overdue.v1": events_pb2.DossierOverdue,
    "vn.gov.dossier.status_changed.v1": events_pb2.DossierStatusChanged,
    "vn.gov.dossier.supplement_requested.v1": events_pb2.SupplementRequested,
    "vn.gov.dossier.refused.v1": events_pb2.DossierRefused,
    "vn.gov.transfer.dead_lettered.v1": events_pb2.TransferDeadLettered,
    "vn.gov.notification.status_changed.v1": events_pb2.NotificationStatusChanged,
}
TYPE_OF: dict[type[Message], str] = {cls: name for name, cls in EVENT_TYPES.items()}
# The event's protobuf message: `Event[DossierSubmitted]` is what a handler of that type gets
# (core/handlers.py); a bare `Event` may hold any.
M = TypeVar("M", bound=Message, default=Message, covariant=True)
D = TypeVar("D", bound=Message)


class PoisonEvent(ValueError):
    """A record that can never be processed: it goes to the dead-letter topic."""


class _ProtobufBytes(JSONFormat):
    # The binding only needs data <-> bytes; protobuf (de)serialisation happens in Event.
    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        return bytes(data)

    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return body


_FORMAT = _ProtobufBytes()


@dataclass(frozen=True)
class Event(Generic[M]):
    type: str
    source: str
    subject: str
    data: M
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=SYSTEM_CLOCK.now)
    # W3C context of the span that is handling this event (set by the consumer): what the
    # handler writes continues the trace from here.
    trace: dict[str, str] = field(default_factory=dict)


def new_event(data: D, *, source: str, dossier_code: str) -> Event[D]:
    return Event(type=TYPE_OF[type(data)], source=source, subject=dossier_code, data=data)


def to_kafka(event: Event) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(key, value, headers) of the binary content mode; the key is the dossier code."""
    cloud_event = CloudEvent(
        {
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "time": event.time,
            "datacontenttype": PROTOBUF,
        },
        event.data.SerializeToString(),
    )
    message = ce_kafka.to_binary(cloud_event, _FORMAT, key_mapper=lambda _: event.subject)
    key = message.key.encode() if isinstance(message.key, str) else (message.key or b"")
    return key, message.value, message.headers


def from_kafka(key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> Event:
    """Decode a record; anything malformed raises PoisonEvent with the reason."""
    ce_headers = {k: v for k, v in headers.items() if k.startswith("ce_") or k == "content-type"}
    try:
        cloud_event = ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=ce_headers, key=key, value=value or b""),
            _FORMAT,
            CloudEvent,
        )
    except Exception as exc:  # the SDK raises several types for missing/invalid attributes
        raise PoisonEvent(f"not a CloudEvent in binary mode: {exc}") from exc
    message_class = EVENT_TYPES.get(cloud_event.get_type())
    if message_class is None:
        raise PoisonEvent(f"unknown event type {cloud_event.get_type()!r}")
    if cloud_event.get_datacontenttype() != PROTOBUF:
        raise PoisonEvent(f"content-type {cloud_event.get_datacontenttype()!r} is not protobuf")
    data = message_class()
    try:
        payload = cloud_event.get_data()
        if not isinstance(payload, bytes):
            raise DecodeError("event data is not binary")
        data.ParseFromString(payload)
    except DecodeError as exc:
        raise PoisonEvent(f"data is not a valid {message_class.__name__}: {exc}") from exc
    return Event(
        type=cloud_event.get_type(),
        source=cloud_event.get_source(),
        subject=cloud_event.get_subject() or "",
        data=data,
        id=cloud_event.get_id(),
        time=cloud_event.get_time() or SYSTEM_CLOCK.now(),
    )


def timestamp(value: datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime, as events carry times."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp
