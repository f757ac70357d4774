"""Notify's webhook channel against a real HTTP receiver: signed so that an agency can
verify with core.signing (any Standard Webhooks library), classified for retrying, never
redirected, never keeping what the receiver wrote, and carrying no personal data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response

from core.events import new_event
from core.signing import SignatureError, new_secret, verify_signature
from core.storage import create_engine, create_tables, session_factory
from gateway.v1 import dossier_pb2, events_pb2, registry_pb2
from sandbox.runner import AppServer, bind_socket
from services.notify.callbacks import callback_body
from services.notify.channels import WebhookChannel
from services.notify.models import metadata, webhook_subscriptions
from services.notify.settings import NotifySettings

SECRET = new_secret()


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.answer = 204
        self.location = ""
        self.text = ""


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    app = FastAPI()

    @app.post("/callbacks/{name}")
    async def callback(name: str, request: Request) -> Response:
        state.requests.append((await request.body(), dict(request.headers)))
        headers = {"Location": state.location} if state.location else None
        return Response(state.text, status_code=state.answer, headers=headers)

    async with AppServer(app, bind_socket("127.0.0.1", 0)) as server:
        yield state, f"{server.url}/callbacks/"


@pytest.fixture
async def channel(tmp_path: Path, receiver: tuple[Receiver, str]) -> AsyncIterator[WebhookChannel]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}")
    await create_tables(engine, metadata)
    sessions = session_factory(engine)
    async with sessions.begin() as session:
        await session.execute(
            webhook_subscriptions.insert().values(
                id="sub-1",
                agency_code="000.22.31.H22",
                url="unused",
                event_types=["vn.gov.dossier.routed.v1"],
                secret=SECRET,
                created_at=datetime.now(UTC),
            )
        )
    # The receiver's path is allow-listed, as the local stack does for the sandbox's.
    settings = NotifySettings(webhook_timeout_s=2, outbound_allow=receiver[1])
    webhooks = WebhookChannel(settings, sessions)
    await webhooks.start()
    yield webhooks
    await webhooks.close()
    await engine.dispose()


def notification(url: str, subscription_id: str = "sub-1") -> dict[str, Any]:
    event = new_event(
        events_pb2.DossierRouted(dossier_code="X-1", agency_code="000.22.31.H22"),
        source="/routing",
        dossier_code="X-1",
    )
    return {
        "id": "notification-1",
        "subscription_id": subscription_id,
        "recipient": url,
        "body": callback_body(event, procedure_code="P", intake_url="http://intake"),
    }


async def test_a_callback_is_signed_so_the_agency_can_verify_it(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    row = notification(url + "a")
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == "delivered"
    [(body, headers)] = state.requests
    verify_signature(SECRET, body, headers)
    assert headers["webhook-id"] == "notification-1"
    payload = json.loads(body)
    assert payload["type"] == "vn.gov.dossier.routed.v1"
    assert payload["data"]["agency_code"] == "000.22.31.H22"
    with pytest.raises(SignatureError):
        verify_signature(new_secret(), body, headers)
    with pytest.raises(SignatureError):
        verify_signature(SECRET, body.replace(b"X-1", b"X-2"), headers)


@pytest.mark.parametrize(
    ("answer", "status"),
    [(503, "temporary-failure"), (429, "temporary-failure"), (400, "permanent-failure")],
)
async def test_answers_are_classified(
    receiver: tuple[Receiver, str], channel: WebhookChannel, answer: int, status: str
) -> None:
    state, url = receiver
    state.answer = answer
    state.text = "stack trace of the receiver"
    row = notification(url + "a")
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == status
    assert outcome.reason is not None
    assert outcome.reason.startswith(f"HTTP {answer} ")
    assert "stack trace" not in outcome.reason


async def test_a_redirect_is_a_permanent_failure_and_is_not_followed(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    state.answer, state.location, state.text = 302, url + "elsewhere", "internal page"
    row = notification(url + "a")
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert (outcome.status, outcome.reason) == (
        "permanent-failure",
        "HTTP 302 Found: redirects are not followed",
    )
    assert len(state.requests) == 1


async def test_a_url_outside_the_allow_list_is_refused_at_send_time(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    # Same host and port as the allowed receiver, another path (e.g. a subscription made
    # before the check existed): nothing is sent.
    row = notification(url.replace("/callbacks/", "/admin"))
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == "permanent-failure"
    assert outcome.reason == "callback URL refused: callbacks go over https"
    https = notification(url.replace("http://", "https://").replace("/callbacks/", "/admin"))
    outcome = await channel.send(https)
    assert (outcome.status, outcome.reason) == (
        "permanent-failure",
        "callback URL refused: 127.0.0.1 is a loopback address",
    )
    assert state.requests == []


async def test_a_deleted_subscription_is_a_permanent_failure_and_nothing_is_sent(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    row = notification(url + "a", subscription_id="gone")
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == "permanent-failure"
    assert state.requests == []


def test_callbacks_carry_no_personal_data() -> None:
    residence = registry_pb2.Residence(
        personal_id="001090012345",
        full_name="Nguyễn Thị Lan",
        birth_date="1990-04-12",
    )
    dossier = dossier_pb2.Dossier(
        code="X-1",
        procedure_code="P",
        receiving_agency_code="000.00.01.H22",
        applicant=dossier_pb2.Applicant(
            personal_id="001090012345",
            full_name="Nguyễn Thị Lan",
            email="lan@example.vn",
            phone="+84912345678",
        ),
        residence=residence,
    )
    dossier.form_data.update({"mother_full_name": "Nguyễn Thị Lan"})
    event = new_event(events_pb2.DossierSubmitted(dossier=dossier), source="/i", dossier_code="X-1")
    body = callback_body(event, procedure_code=None, intake_url="https://gw.example/intake/")
    for personal in ("001090012345", "Nguyễn", "1990-04-12", "lan@example", "912345678"):
        assert personal not in body
    data = json.loads(body)["data"]
    assert set(data) == {
        "event_id",
        "dossier_code",
        "status",
        "link",
        "procedure_code",
        "agency_code",
    }
    assert (data["procedure_code"], data["status"]) == ("P", "received")
    assert data["link"] == "https://gw.example/intake/v1/dossiers/X-1"
