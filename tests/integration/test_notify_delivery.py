"""Notify on the real stack: SMS through the sandbox gateway failing and recovering,
redelivered events, a SIGKILL mid-send, pacing, and the overdue apology by email."""

from __future__ import annotations

import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from core.events import new_event
from core.signing import verify_signature
from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from gateway.v1 import events_pb2
from tests.support.flows import DESK, as_agency, eventually, mails_to
from tests.support.notify import (
    callbacks_at,
    mail_behaviour,
    notification,
    publish,
    routed,
    settled,
    sms_behaviour,
    sms_to,
    stamp,
    status_events,
    submitted,
    subscribe,
    unsubscribe,
    webhook_receiver,
)

# Test-sized pacing of the SMS channel (tests/conftest.py).
SMS_RATE_PER_S, SMS_BURST = 4, 2


def code(tag: str) -> str:
    return f"T-{tag}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def healthy_sms_gateway(stack: Stack) -> Iterator[None]:
    sms_behaviour(stack)
    yield
    sms_behaviour(stack)
    mail_behaviour(stack)


def test_sms_gateway_failing_for_a_while_delivers_each_message_once(
    stack: Stack, kafka: KafkaBroker
) -> None:
    phone, e164 = "0912000101", "+84912000101"
    sms_behaviour(stack, fail_next=3, fail_status=503)
    codes = [code("flaky") for _ in range(2)]
    publish(kafka.bootstrap_servers, [submitted(c, phone=phone, preferred="sms") for c in codes])

    found = [eventually(lambda c=c: settled(stack, c, 1))[0] for c in codes]
    assert [n["status"] for n in found] == ["delivered", "delivered"]
    assert sms_behaviour(stack)["rejected"] == 3
    messages = sms_to(stack, e164)
    assert sorted(m["reference"] for m in messages) == sorted(n["id"] for n in found)
    assert all("đã được tiếp nhận" in m["text"] for m in messages)
    histories = [[h["status"] for h in notification(stack, n["id"])["history"]] for n in found]
    assert any("temporary-failure" in h for h in histories), histories
    for history in histories:
        assert history[0] == "created"
        assert history[-1] == "delivered"
    # Each outcome is also published (outbox) as NotificationStatusChanged, in order.
    outcomes = [s for s in histories[0] if s not in {"created", "sending"}]
    changes = status_events(kafka.bootstrap_servers, codes[0], len(outcomes))
    assert [c.status for c in changes] == outcomes
    assert {(c.notification_id, c.channel) for c in changes} == {(found[0]["id"], "sms")}


def test_sms_gateway_failing_for_good_is_a_permanent_failure_never_resent(
    stack: Stack, kafka: KafkaBroker
) -> None:
    phone, e164 = "0912000102", "+84912000102"
    sms_behaviour(stack, fail_all=True, fail_status=503)
    failing = code("down")
    publish(kafka.bootstrap_servers, [submitted(failing, phone=phone, preferred="sms")])
    # Retried with backoff for RETRY_FOR_S (8 s in tests), then given up.
    [given_up] = eventually(lambda: settled(stack, failing, 1), timeout=40)
    assert given_up["status"] == "permanent-failure"
    assert "HTTP 503" in given_up["reason"]
    attempts = given_up["attempts"]
    assert attempts > 1

    # The gateway recovers; a later message goes through, the given-up one stays given up.
    sms_behaviour(stack)
    later = code("up")
    publish(kafka.bootstrap_servers, [submitted(later, phone=phone, preferred="sms")])
    [sent] = eventually(lambda: settled(stack, later, 1))
    assert sent["status"] == "delivered"
    assert [m["reference"] for m in sms_to(stack, e164)] == [sent["id"]]
    again = notification(stack, given_up["id"])
    assert (again["status"], again["attempts"]) == ("permanent-failure", attempts)


def test_a_refusal_by_the_gateway_is_permanent_at_once(stack: Stack, kafka: KafkaBroker) -> None:
    sms_behaviour(stack, fail_next=1, fail_status=400)
    refused = code("refused")
    publish(kafka.bootstrap_servers, [submitted(refused, phone="0912000103", preferred="sms")])
    [found] = eventually(lambda: settled(stack, refused, 1))
    assert (found["status"], found["attempts"]) == ("permanent-failure", 1)
    assert "HTTP 400" in found["reason"]
    assert sms_to(stack, "+84912000103") == []


def test_the_same_event_delivered_twice_is_one_message_per_channel(
    stack: Stack, kafka: KafkaBroker
) -> None:
    email, phone, e164 = "twice@example.vn", "0912000104", "+84912000104"
    dossier = code("twice")
    event = submitted(dossier, email=email, phone=phone)
    # The same event (same id) twice, then a later one of the same dossier: once the later
    # one is handled, the duplicate before it in the partition has been too.
    publish(kafka.bootstrap_servers, [event, event, routed(dossier)])
    found = eventually(lambda: settled(stack, dossier, 4))
    assert Counter((n["event_id"], n["channel"]) for n in found) == {
        (event.id, "email"): 1,
        (event.id, "sms"): 1,
        **{(n["event_id"], n["channel"]): 1 for n in found if n["event_id"] != event.id},
    }
    assert all(n["status"] == "delivered" for n in found)
    mails = eventually(lambda: m if len(m := mails_to(stack, email)) >= 2 else None)
    assert len(mails) == 2
    assert len([m for m in mails if m["subject"].endswith("đã được tiếp nhận")]) == 1
    assert len(sms_to(stack, e164)) == 2


def test_a_burst_above_the_rate_is_delivered_in_full_paced_by_the_limit(
    stack: Stack, kafka: KafkaBroker
) -> None:
    count, phone, e164 = 14, "0912000105", "+84912000105"
    codes = [code("burst") for _ in range(count)]
    publish(kafka.bootstrap_servers, [submitted(c, phone=phone, preferred="sms") for c in codes])
    for c in codes:
        [found] = eventually(lambda c=c: settled(stack, c, 1), timeout=30)
        assert found["status"] == "delivered"
    messages = sms_to(stack, e164)
    assert len(messages) == count
    times = sorted(datetime.fromisoformat(m["received_at"]) for m in messages)
    span = (times[-1] - times[0]).total_seconds()
    # The bucket lets BURST through at once, then one every 1/RATE seconds.
    assert span >= (count - SMS_BURST) / SMS_RATE_PER_S - 0.25, span
    # In any second, no more than the rate plus the burst (and a little for clock jitter).
    for start in times:
        within = [t for t in times if start <= t < start + timedelta(seconds=1)]
        assert len(within) <= SMS_RATE_PER_S + SMS_BURST, (start, within)


def test_notify_killed_mid_sending_sends_one_message_per_event_and_channel(
    stack: Stack, kafka: KafkaBroker
) -> None:
    count, phone, e164 = 16, "0912000106", "+84912000106"
    codes = [code("kill") for _ in range(count)]
    publish(kafka.bootstrap_servers, [submitted(c, phone=phone, preferred="sms") for c in codes])
    # Pacing keeps most of the burst waiting: kill once a few are out.
    eventually(lambda: len(sms_to(stack, e164)) >= 3, every=0.05)
    stack.stop_service("notify", signal.SIGKILL)
    sent_before = len(sms_to(stack, e164))
    assert sent_before < count, "the burst was over before the kill"
    stack.start_service("notify")
    stack.wait_ready("notify")

    found = [eventually(lambda c=c: settled(stack, c, 1), timeout=60)[0] for c in codes]
    assert [n["status"] for n in found] == ["delivered"] * count
    references = Counter(m["reference"] for m in sms_to(stack, e164))
    assert set(references) == {n["id"] for n in found}
    assert max(references.values()) == 1


def test_notify_killed_while_providers_hold_a_message_never_sends_it_twice(
    stack: Stack, kafka: KafkaBroker
) -> None:
    email, phone, e164 = "inflight@example.vn", "0912000107", "+84912000107"
    # Both providers keep what they are given and answer 2 s later: a kill in between is
    # the crash after acceptance and before notify records it.
    sms_behaviour(stack, answer_delay_s=2)
    mail_behaviour(stack, answer_delay_s=2)
    codes = [code("inflight") for _ in range(3)]
    events = [submitted(c, email=email, phone=phone) for c in codes]
    publish(kafka.bootstrap_servers, events)
    eventually(lambda: sms_to(stack, e164) and mails_to(stack, email), every=0.05)
    stack.stop_service("notify", signal.SIGKILL)
    sms_behaviour(stack)
    mail_behaviour(stack)
    stack.start_service("notify")
    stack.wait_ready("notify")

    found = [n for c in codes for n in eventually(lambda c=c: settled(stack, c, 2), timeout=60)]
    # SMS: the interrupted one is sent again with the same reference; the gateway answers
    # it without a second message.
    sms = [n for n in found if n["channel"] == "sms"]
    assert [n["status"] for n in sms] == ["delivered"] * 3
    assert sms_behaviour(stack)["resends"] >= 1
    assert Counter(m["reference"] for m in sms_to(stack, e164)) == {n["id"]: 1 for n in sms}
    # Email: SMTP cannot de-duplicate, so the one in flight is not sent again; it is
    # recorded for an officer (it did arrive once), and the others are sent.
    mails = [n for n in found if n["channel"] == "email"]
    statuses = Counter(n["status"] for n in mails)
    assert statuses == {"delivered": 2, "technical-failure": 1}, mails
    [interrupted] = [n for n in mails if n["status"] == "technical-failure"]
    assert "interrupted" in interrupted["reason"]
    received = Counter(m["headers"]["X-Notification-Id"] for m in mails_to(stack, email))
    assert received == {n["id"]: 1 for n in mails}


def test_an_overdue_dossier_gets_the_apology_with_the_new_date_and_reason(
    stack: Stack, kafka: KafkaBroker
) -> None:
    email = "apology@example.vn"
    dossier = code("late")
    new_due = datetime(2026, 12, 3, 3, 0, tzinfo=UTC)
    reason = "Cần xác minh thêm thông tin nơi cư trú"
    overdue = events_pb2.DossierOverdue(
        dossier_code=dossier,
        agency_code="000.22.31.H22",
        due_at=stamp(datetime(2026, 11, 27, 10, 0, tzinfo=UTC)),
        reason=reason,
        new_due_at=stamp(new_due),
    )
    blank = events_pb2.DossierOverdue()
    blank.CopyFrom(overdue)
    blank.ClearField("reason")
    late = new_event(overdue, source="/test", dossier_code=dossier)
    incomplete = new_event(blank, source="/test", dossier_code=dossier)
    publish(kafka.bootstrap_servers, [submitted(dossier, email=email), late, incomplete])
    by_event = {n["event_id"]: n for n in eventually(lambda: settled(stack, dossier, 3))}
    apology, unsent = by_event[late.id], by_event[incomplete.id]
    assert (apology["status"], apology["template_version"]) == ("delivered", 1)
    # Without a reason the apology is not sent with a blank: it is recorded, with why.
    assert unsent["status"] == "technical-failure"
    assert "personalisation field is missing" in unsent["reason"]
    assert "'reason' is undefined" in unsent["reason"]

    mails = eventually(lambda: m if len(m := mails_to(stack, email)) >= 2 else None)
    [letter] = [m for m in mails if m["subject"].startswith("Phiếu xin lỗi")]
    assert letter["subject"] == f"Phiếu xin lỗi và hẹn lại ngày trả kết quả — hồ sơ {dossier}"
    assert f"Lý do: {reason}." in letter["text"]
    assert "hẹn lại ngày trả kết quả là ngày 03/12/2026" in letter["text"]
    assert "Công an xã Tân Phong xin lỗi Ông/Bà" in letter["text"]
    assert len(mails) == 2


def test_no_contact_and_invalid_details_are_recorded_not_looped(
    stack: Stack, kafka: KafkaBroker
) -> None:
    unknown, invalid = code("nobody"), code("invalid")
    publish(
        kafka.bootstrap_servers,
        [routed(unknown), submitted(invalid, email="ok@example.vn", phone="024 3825 3525")],
    )
    [nobody] = eventually(lambda: settled(stack, unknown, 1))
    assert nobody["status"] == "permanent-failure"
    assert nobody["reason"] == "no email address or phone number for the applicant"
    by_channel = {n["channel"]: n for n in eventually(lambda: settled(stack, invalid, 2))}
    assert by_channel["email"]["status"] == "delivered"
    assert by_channel["sms"]["status"] == "permanent-failure"
    assert "landline" in by_channel["sms"]["reason"]


def test_webhook_subscriptions_show_their_secret_once(stack: Stack) -> None:
    url = stack.url("notify") + "/v1/webhook-subscriptions"
    body = {
        "agency_code": "000.21.31.H22",
        # The sandbox's receiver: a public name would be resolved (DNS) at subscription time.
        "url": webhook_receiver(stack, "secret-once"),
        "event_types": ["vn.gov.dossier.routed.v1"],
    }
    justice = as_agency(stack, "000.21.31.H22")
    created = httpx.post(url, json=body, headers=justice, timeout=10)
    assert created.status_code == 201, created.text
    assert created.json()["secret"].startswith("whsec_")
    listed = httpx.get(url, headers=justice, timeout=10).json()
    assert created.json()["id"] in [s["id"] for s in listed]
    assert all("secret" not in s for s in listed)
    # An agency subscribes, lists and deletes for itself only.
    desk = as_agency(stack, DESK)
    assert httpx.post(url, json=body, headers=desk, timeout=10).status_code == 403
    assert created.json()["id"] not in [s["id"] for s in httpx.get(url, headers=desk).json()]
    assert httpx.delete(f"{url}/{created.json()['id']}", headers=desk).status_code == 404
    wrong = httpx.post(url, json=body | {"event_types": ["vn.gov.nope"]}, headers=justice)
    assert wrong.status_code == 422
    deleted = httpx.delete(f"{url}/{created.json()['id']}", headers=justice, timeout=10)
    assert deleted.status_code == 204
    gone = httpx.delete(f"{url}/{created.json()['id']}", headers=justice, timeout=10)
    assert gone.status_code == 404
    assert gone.headers["content-type"] == "application/problem+json"


def test_a_subscribed_agency_gets_signed_callbacks_once(stack: Stack, kafka: KafkaBroker) -> None:
    receiver = webhook_receiver(stack, "once")
    created = subscribe(stack, "000.21.31.H22", receiver, "vn.gov.dossier.routed.v1")
    assert created.status_code == 201, created.text
    subscription = created.json()
    dossier = code("hook")
    event = routed(dossier)
    try:
        publish(
            kafka.bootstrap_servers, [submitted(dossier, email="hook@example.vn"), event, event]
        )
        found = eventually(lambda: settled(stack, dossier, 3))
    finally:
        unsubscribe(stack, "000.21.31.H22", subscription["id"])
    [callback] = [n for n in found if n["channel"] == "webhook"]
    assert (callback["status"], callback["event_id"]) == ("delivered", event.id)
    [received] = callbacks_at(receiver)
    body, headers = received["body"].encode(), received["headers"]
    verify_signature(subscription["secret"], body, headers)
    assert headers["webhook-id"] == callback["id"]
    assert json.loads(body)["data"]["agency_code"] == "000.21.31.H22"
