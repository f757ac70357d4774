"""Notify's webhook channel against a real HTTP receiver: signed so that an agency can
verify with core.signing (any Standard Webhooks library), and classified for retrying."""

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
from gateway.v1 import dossier_pb2, events_pb2
from sandbox.runner import AppServer, bind_socket
from services.notify.channels import WebhookChannel
from services.notify.models import metadata, webhook_subscriptions
from services.notify.notifications import webhook_payload
from services.notify.settings import NotifySettings

SECRET = new_secret()


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.answer = 204


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    state = Receiver()
    app = FastAPI()

    @app.post("/callbacks")
    async def callback(request: Request) -> Response:
        state.requests.append((await request.body(), dict(request.headers)))
        return Response(status_code=state.answer)

    async with AppServer(app, bind_socket("127.0.0.1", 0)) as server:
        yield state, f"{server.url}/callbacks"


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[WebhookChannel]:
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
    webhooks = WebhookChannel(NotifySettings(webhook_timeout_s=2), sessions)
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
        "body": webhook_payload(event),
    }


async def test_a_callback_is_signed_so_the_agency_can_verify_it(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    row = notification(url)
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
    row = notification(url)
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == status
    assert outcome.reason is not None
    assert f"HTTP {answer}" in outcome.reason


async def test_a_deleted_subscription_is_a_permanent_failure_and_nothing_is_sent(
    receiver: tuple[Receiver, str], channel: WebhookChannel
) -> None:
    state, url = receiver
    row = notification(url, subscription_id="gone")
    await channel.prepare([row])
    outcome = await channel.send(row)
    assert outcome.status == "permanent-failure"
    assert state.requests == []


def test_callbacks_carry_no_personal_data() -> None:
    dossier = dossier_pb2.Dossier(
        code="X-1",
        procedure_code="P",
        applicant=dossier_pb2.Applicant(personal_id="001090012345", full_name="Nguyễn Thị Lan"),
    )
    event = new_event(events_pb2.DossierSubmitted(dossier=dossier), source="/i", dossier_code="X-1")
    body = webhook_payload(event)
    assert "001090012345" not in body
    assert "Nguyễn" not in body
    assert json.loads(body)["data"]["dossier"]["procedure_code"] == "P"
