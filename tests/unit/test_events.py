import pytest

from core.events import PoisonEvent, from_kafka, new_event, to_kafka
from gateway.v1 import events_pb2


def completed_event() -> tuple[bytes, bytes, dict[str, bytes]]:
    data = events_pb2.DossierCompleted(dossier_code="000.00.01.H22-261122-0001", late=True)
    return to_kafka(new_event(data, source="/gateway/routing", dossier_code=data.dossier_code))


def test_binary_mode_headers_and_key() -> None:
    key, _value, headers = completed_event()
    assert key == b"000.00.01.H22-261122-0001"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_type"] == b"vn.gov.dossier.completed.v1"
    assert headers["ce_subject"] == key
    assert headers["content-type"] == b"application/protobuf"
    assert headers["ce_time"].endswith(b"Z")


def test_round_trip_keeps_id_and_data() -> None:
    key, value, headers = completed_event()
    event = from_kafka(
        key, value, headers | {"traceparent": b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"}
    )
    assert event.id == headers["ce_id"].decode()
    assert isinstance(event.data, events_pb2.DossierCompleted)
    assert event.data.late is True


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, v: ({}, v), "not a CloudEvent"),
        (lambda h, v: (h | {"ce_type": b"com.example.other"}, v), "unknown event type"),
        (lambda h, v: (h | {"content-type": b"application/json"}, v), "not protobuf"),
        (lambda h, v: (h, b"\xff\xff\xff"), "not a valid DossierCompleted"),
    ],
)
def test_malformed_records_are_poison(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    key, value, headers = completed_event()
    bad_headers, bad_value = mutate(headers, value)
    with pytest.raises(PoisonEvent, match=reason):
        from_kafka(key, bad_value, bad_headers)
