"""The sandbox's durable state: each stand-in's store, closed and opened again on the same
file, still knows what it took, and the agency office resumes the callbacks it owed."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from email.message import EmailMessage
from pathlib import Path

import httpx

from sandbox.agency_ledger import AgencyLedger, Owed
from sandbox.mail import MailStore
from sandbox.portal import PortalStore
from sandbox.runner import AppServer, Sandbox, bind_socket
from sandbox.settings import SandboxSettings
from sandbox.sms import MessageIn, SmsStore
from sandbox.state import FILE_NAME, open_state
from sandbox.webhook_ledger import WebhookLedger
from tests.unit.test_sandbox_agency import AGENCY, Receiver, deliver, transfer


def mail() -> bytes:
    message = EmailMessage()
    message["From"] = "no-reply@dichvucong.example.vn"
    message["To"] = "lan@example.vn"
    message["Subject"] = "Hồ sơ đã được tiếp nhận"
    message["Message-ID"] = "<m-1@dichvucong.example.vn>"
    message.set_content("Kính gửi bà Lan.")
    return message.as_bytes()


def reopened(state_dir: Path, db: sqlite3.Connection) -> sqlite3.Connection:
    db.close()
    return open_state(state_dir)


def owed_for(transfer_id: str, delay_s: float = 0.0) -> list[Owed]:
    now = time.time()
    return [
        Owed(AGENCY, transfer_id, "acknowledgement", "http://gw/ack", {}, now),
        Owed(
            AGENCY, transfer_id, "outcome", "http://gw/outcome", {"outcome": "done"}, now + delay_s
        ),
    ]


def receive(ledger: AgencyLedger, transfer_id: str) -> tuple[int, int, bool]:
    record, new = ledger.receive(
        AGENCY,
        transfer_id,
        dossier_code="HS-1",
        step_index=0,
        channel="https",
        verified=True,
        owed=owed_for(transfer_id),
    )
    return record.deliveries, record.effects, new


def test_a_transfer_taken_before_a_restart_is_a_duplicate_after_it(tmp_path: Path) -> None:
    db = open_state(tmp_path)
    assert receive(AgencyLedger(db), "tr-1") == (1, 1, True)

    ledger = AgencyLedger(reopened(tmp_path, db))

    assert receive(ledger, "tr-1") == (2, 1, False)
    [listed] = [r.as_json() for r in ledger.transfers(AGENCY)]
    assert (listed["deliveries"], listed["effects"], listed["verified"]) == (2, 1, True)
    # The duplicate did not add callbacks: the to-do is the first delivery's, ack first.
    assert [o.what for o in ledger.owed()] == ["acknowledgement", "outcome"]
    assert ledger.summary() == {AGENCY: (1, 2)}


def test_owed_callbacks_survive_until_settled(tmp_path: Path) -> None:
    db = open_state(tmp_path)
    ledger = AgencyLedger(db)
    receive(ledger, "tr-1")
    ack, outcome = ledger.owed(AGENCY, "tr-1")
    ledger.settle(ack, done=True)

    ledger = AgencyLedger(reopened(tmp_path, db))

    assert ledger.owed() == [outcome]
    record = ledger.record(AGENCY, "tr-1")
    assert record is not None
    assert record.acknowledged_at is not None
    assert record.reported_at is None
    ledger.settle(outcome, done=False)  # given up: struck off, never marked reported
    assert ledger.owed() == []
    record = ledger.record(AGENCY, "tr-1")
    assert record is not None
    assert record.reported_at is None


def test_an_acknowledgement_given_with_the_answer_is_no_longer_owed(tmp_path: Path) -> None:
    ledger = AgencyLedger(open_state(tmp_path))
    receive(ledger, "tr-1")

    ledger.acknowledged(AGENCY, "tr-1")  # a gRPC receipt

    assert [o.what for o in ledger.owed()] == ["outcome"]
    record = ledger.record(AGENCY, "tr-1")
    assert record is not None
    assert record.acknowledged_at is not None


def test_the_trace_context_owed_with_a_callback_survives_and_old_files_gain_it(
    tmp_path: Path,
) -> None:
    # A state file from before callbacks kept their delivery's trace context.
    old = sqlite3.connect(tmp_path / FILE_NAME)
    old.execute(
        "CREATE TABLE agency_callback (agency_code TEXT NOT NULL, transfer_id TEXT NOT NULL,"
        " what TEXT NOT NULL, url TEXT NOT NULL, payload TEXT NOT NULL, due_at REAL NOT NULL,"
        " PRIMARY KEY (agency_code, transfer_id, what)) WITHOUT ROWID"
    )
    old.execute(
        "INSERT INTO agency_callback VALUES (?, 'tr-0', 'outcome', 'http://gw/o', '{}', 0)",
        (AGENCY,),
    )
    old.commit()
    old.close()
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ledger = AgencyLedger(open_state(tmp_path))
    ledger.owe(
        [Owed(AGENCY, "tr-1", "outcome", "http://gw/o", {}, 0, {"traceparent": traceparent})]
    )

    assert {o.transfer_id: o.trace for o in ledger.owed()} == {
        "tr-0": {},
        "tr-1": {"traceparent": traceparent},
    }


def test_mail_is_kept_across_a_restart_and_repeats_are_counted(tmp_path: Path) -> None:
    db = open_state(tmp_path)
    MailStore(db).add("no-reply@dichvucong.example.vn", ["Lan@example.vn"], mail())

    store = MailStore(reopened(tmp_path, db))
    store.add("no-reply@dichvucong.example.vn", ["lan@example.vn"], mail())  # sent twice

    first, second = store.messages("LAN@example.vn")
    assert (first["id"], second["id"]) == (1, 2)
    assert first["subject"] == "Hồ sơ đã được tiếp nhận"
    assert first["message_id"] == second["message_id"] == "<m-1@dichvucong.example.vn>"
    assert store.messages("other@example.vn") == []
    assert store.stats() == {"messages": 2, "repeated_message_ids": 1}
    store.clear()
    assert store.messages() == []
    assert store.stats() == {"messages": 0, "repeated_message_ids": 0}


def test_sms_references_and_portal_keys_are_remembered_across_a_restart(
    tmp_path: Path,
) -> None:
    db = open_state(tmp_path)
    sms = SmsStore(db).accept(MessageIn(to="+84912345678", text="Hồ sơ", reference="n-1"))
    PortalStore(db).push("k-1", {"MaHoSo": "HS-1", "TrangThaiHoSo": 4})

    db = reopened(tmp_path, db)
    sms_store, portal = SmsStore(db), PortalStore(db)

    assert sms_store.by_reference("n-1") == sms
    sms_store.resent("n-1")
    assert sms_store.resends == 1
    assert [m["reference"] for m in sms_store.addressed_to("+84912345678")] == ["n-1"]
    again = portal.push("k-1", {"MaHoSo": "HS-1", "TrangThaiHoSo": 4})
    assert again.status_code == 200
    [held] = portal.dossiers("HS-1")
    assert (held["key"], held["duplicates"]) == ("k-1", 1)
    assert portal.stats() == {"dossiers": 1, "pushes": 2, "rejected": 0}


def test_webhook_callbacks_are_kept_and_resends_show(tmp_path: Path) -> None:
    db = open_state(tmp_path)
    WebhookLedger(db).record("desk", b'{"type": "x"}', {"Webhook-Id": "msg-1"})

    ledger = WebhookLedger(reopened(tmp_path, db))
    ledger.record("desk", b'{"type": "x"}', {"Webhook-Id": "msg-1"})
    ledger.record("desk", b'{"type": "y"}', {"Webhook-Id": "msg-2"})

    assert [(c["webhook_id"], c["repeats"]) for c in ledger.received("desk")] == [
        ("msg-1", 0),
        ("msg-1", 1),
        ("msg-2", 0),
    ]
    assert ledger.received("other") == []


async def test_the_office_resumes_the_outcome_it_owed_after_a_restart(tmp_path: Path) -> None:
    settings = SandboxSettings(
        http_port=0, smtp_port=0, registry_grpc_port=0, state_dir=str(tmp_path)
    )
    recv = Receiver()
    async with AppServer(recv.app, bind_socket("127.0.0.1", 0)) as gateway:
        async with (
            Sandbox(settings) as first,
            httpx.AsyncClient(base_url=first.url, trust_env=False) as client,
        ):
            await client.put(f"/agencies/{AGENCY}/behaviour", json={"delay_s": 1.5})
            answer = await deliver(client, transfer("tr-r", gateway.url))
            assert answer.status_code == 202
            # Taken durably before the answer: another connection to the file sees it.
            with sqlite3.connect(tmp_path / FILE_NAME) as other:
                taken = other.execute("SELECT transfer_id FROM agency_transfer").fetchall()
            assert taken == [("tr-r",)]
            owed = (await client.get("/agencies/owed")).json()
            assert owed == [{"agency_code": AGENCY, "transfer_id": "tr-r", "what": "outcome"}]
        assert recv.calls.empty()  # stopped while working on the step: the report is owed

        async with (
            Sandbox(settings) as second,
            httpx.AsyncClient(base_url=second.url, trust_env=False) as client,
        ):
            call = await recv.next_call(within_s=5.0)
            assert (call["transfer_id"], call["body"]["outcome"]) == ("tr-r", "done")
            again = await deliver(client, transfer("tr-r", gateway.url))
            assert again.json() == {"status": "duplicate"}
            for _ in range(50):  # reported_at is written once the gateway's answer is in
                [listed] = (await client.get(f"/agencies/{AGENCY}/transfers")).json()
                if listed["reported_at"]:
                    break
                await asyncio.sleep(0.05)
            assert (listed["deliveries"], listed["effects"]) == (2, 1)
            assert listed["reported_at"] is not None
            assert (await client.get("/agencies/owed")).json() == []
    assert recv.calls.empty()  # reported once
