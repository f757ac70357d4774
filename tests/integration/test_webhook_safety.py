"""Webhooks on the real stack, as an attacker would use them: callbacks carry no personal
data even for an e-ID dossier with the registry's residence; a callback URL cannot point at
the gateway's own services (identity, the e-ID provider's key rotation) or private and
metadata addresses, neither at subscription nor at send time; redirects are not followed
and nothing a receiver writes is kept; an agency's subscriptions are capped."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from core.signing import new_secret, verify_signature
from core.storage import create_engine
from devstack.kafka import KafkaBroker
from devstack.stack import Stack
from sandbox.oidc_models import contact_of
from services.notify.models import webhook_subscriptions
from tests.support.eid import consent, log_in
from tests.support.flows import DESK, as_agency, eventually
from tests.support.notify import (
    callbacks_at,
    notification,
    publish,
    settled,
    submitted,
    subscribe,
    unsubscribe,
    webhook_receiver,
)

# A synthetic citizen of the sandbox registry that no other test files for.
CITIZEN = "092190000123"
PROCEDURE = "HT.XNTTHN"  # needs residence: filed with the registry's, by consent
JUSTICE = "000.21.31.H22"
SUBMITTED = "vn.gov.dossier.submitted.v1"
CALLBACK_FIELDS = {
    "event_id",
    "dossier_code",
    "status",
    "link",
    "procedure_code",
    "agency_code",
    "step_index",
    "late",
    "received_at",
    "due_at",
    "step_due_at",
    "requested_at",
    "refused_at",
    "completed_at",
    "new_due_at",
}


@pytest.fixture
def subscriptions(stack: Stack) -> Iterator[list[tuple[str, str]]]:
    """(agency, id) of the subscriptions a test made: deleted after it."""
    made: list[tuple[str, str]] = []
    yield made
    for agency, subscription_id in made:
        unsubscribe(stack, agency, subscription_id)


def subscribed(
    stack: Stack, made: list[tuple[str, str]], agency: str, url: str, *types: str
) -> dict[str, Any]:
    response = subscribe(stack, agency, url, *types)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    made.append((agency, body["id"]))
    return body


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) else []


def test_an_e_id_dossier_is_called_back_without_personal_data(
    stack: Stack, subscriptions: list[tuple[str, str]]
) -> None:
    receiver = webhook_receiver(stack, "eid")
    subscription = subscribed(stack, subscriptions, JUSTICE, receiver, SUBMITTED)
    _, login = log_in(stack, CITIZEN, acr="2")
    granted = consent(stack, login["session"], PROCEDURE, "Đăng ký kết hôn")
    residence = granted["preview"]["residence"]
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers",
        json={
            "procedure_code": PROCEDURE,
            # No contact in the body: the e-ID profile's email and phone are the dossier's.
            "applicant": {},
            "form_data": {"intended_use": "Đăng ký kết hôn"},
            "residence_consent_id": granted["id"],
        },
        headers={"X-Citizen-Session": login["session"]} | as_agency(stack, JUSTICE),
        timeout=15,
    )
    assert response.status_code == 201, response.text
    code = response.json()["code"]

    [callback] = eventually(lambda: [c for c in callbacks_at(receiver) if code in c["body"]])
    body = callback["body"]
    verify_signature(subscription["secret"], body.encode(), callback["headers"])
    email, phone = contact_of(CITIZEN)
    personal = {CITIZEN, login["full_name"], residence["birth_date"], email}
    personal |= {phone.removeprefix("+84")} if phone else set()
    # Every name, date and address line the registry released (short codes aside).
    personal |= {s for s in strings_in(residence) if len(s) >= 6}
    readable = json.dumps(json.loads(body), ensure_ascii=False)
    for value in personal:
        assert value not in body, f"{value!r} in the callback"
        assert value not in readable, f"{value!r} in the callback"
    for word in ("residence", "applicant", "household", "personal_id", "full_name", "email"):
        assert word not in body
    data = json.loads(body)["data"]
    assert set(data) <= CALLBACK_FIELDS
    assert (data["dossier_code"], data["procedure_code"], data["status"]) == (
        code,
        PROCEDURE,
        "received",
    )
    # The rest is read with the subscriber's own token, within its agency's rights.
    assert data["link"] == f"{stack.url('intake')}/v1/dossiers/{code}"
    assert httpx.get(data["link"], headers=as_agency(stack, JUSTICE)).status_code == 200


def sandbox_signing_keys(stack: Stack) -> list[str]:
    jwks = httpx.get(stack.url("sandbox") + "/oidc/jwks", timeout=10).json()
    return sorted(key["kid"] for key in jwks["keys"])


def test_callback_urls_into_the_gateway_or_private_networks_are_refused(stack: Stack) -> None:
    keys = sandbox_signing_keys(stack)
    identity, sandbox = stack.ports.identity, stack.ports.sandbox
    # Each is refused before any connection; the names need no DNS (https is checked first,
    # localhost is in /etc/hosts), the rest are address literals.
    refused = {
        f"http://127.0.0.1:{identity}/oauth2/token": "https",
        f"https://127.0.0.1:{identity}/oauth2/token": "loopback",
        # The e-ID provider's key rotation: same host and port as the allowed receiver.
        f"{stack.url('sandbox')}/oidc/keys/rotate": "https",
        f"{stack.url('sandbox')}/webhooks/../oidc/keys/rotate": "https",
        f"https://localhost:{sandbox}/oidc/keys/rotate": "loopback",
        f"https://[::ffff:127.0.0.1]:{identity}/": "loopback",
        "http://dichvucong.example.gov.vn/hooks": "https",
        "https://10.0.0.1/hooks": "private",
        "https://100.64.0.1/hooks": "CGNAT",
        "https://169.254.169.254/latest/meta-data/": "metadata",
        "https://[fd00:ec2::254]/latest/meta-data/": "metadata",
    }
    for url, why in refused.items():
        response = subscribe(stack, DESK, url, SUBMITTED)
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "/problems/callback-url-refused", (url, problem)
        assert why in problem["detail"], (url, problem)
    assert sandbox_signing_keys(stack) == keys


async def _insert_subscription(database_url: str, row: dict[str, Any]) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(webhook_subscriptions.insert().values(row))
    finally:
        await engine.dispose()


def test_a_stored_url_into_the_gateway_is_refused_at_send_time(
    stack: Stack, kafka: KafkaBroker, database_url: str, subscriptions: list[tuple[str, str]]
) -> None:
    """A subscription stored before the checks existed (or whose name now resolves
    elsewhere) is checked again when the callback goes: nothing reaches the provider."""
    keys = sandbox_signing_keys(stack)
    row = {
        "id": str(uuid.uuid4()),
        "agency_code": DESK,
        "url": stack.url("sandbox") + "/oidc/keys/rotate",
        "event_types": [SUBMITTED],
        "secret": new_secret(),
        "created_at": datetime.now(UTC),
    }
    asyncio.run(_insert_subscription(database_url, row))
    subscriptions.append((DESK, row["id"]))
    dossier = f"T-ssrf-{uuid.uuid4().hex[:8]}"
    publish(kafka.bootstrap_servers, [submitted(dossier)])
    found = eventually(lambda: settled(stack, dossier, 2))
    [callback] = [n for n in found if n["channel"] == "webhook"]
    assert (callback["status"], callback["reason"]) == (
        "permanent-failure",
        "callback URL refused: callbacks go over https",
    )
    assert callback["attempts"] == 1
    assert sandbox_signing_keys(stack) == keys


def test_a_redirect_is_not_followed_and_the_answer_not_kept(
    stack: Stack, kafka: KafkaBroker, subscriptions: list[tuple[str, str]]
) -> None:
    target, redirecting = webhook_receiver(stack, "target"), webhook_receiver(stack, "redirect")
    chatter = "Internal note: admin password hunter2"
    steered = httpx.put(
        redirecting + "/behaviour",
        json={"status": 302, "location": target, "body": chatter},
        timeout=10,
    )
    steered.raise_for_status()
    subscribed(stack, subscriptions, DESK, redirecting, SUBMITTED)
    dossier = f"T-redirect-{uuid.uuid4().hex[:8]}"
    publish(kafka.bootstrap_servers, [submitted(dossier)])
    found = eventually(lambda: settled(stack, dossier, 2))
    [callback] = [n for n in found if n["channel"] == "webhook"]
    assert (callback["status"], callback["reason"]) == (
        "permanent-failure",
        "HTTP 302 Found: redirects are not followed",
    )
    detail = notification(stack, callback["id"])
    assert all("hunter2" not in (change["reason"] or "") for change in detail["history"])
    assert len(callbacks_at(redirecting)) == 1
    assert callbacks_at(target) == []


def test_an_agency_holds_a_bounded_number_of_subscriptions(
    stack: Stack, subscriptions: list[tuple[str, str]]
) -> None:
    url = stack.url("notify") + "/v1/webhook-subscriptions"
    held = len(httpx.get(url, headers=as_agency(stack, DESK), timeout=10).json())
    receiver = webhook_receiver(stack, "cap")
    for _ in range(20 - held):  # WEBHOOK_MAX_SUBSCRIPTIONS's default
        subscribed(stack, subscriptions, DESK, receiver, SUBMITTED)
    over = subscribe(stack, DESK, receiver, SUBMITTED)
    assert over.status_code == 409, over.text
    assert over.headers["content-type"] == "application/problem+json"
    assert over.json()["type"] == "/problems/subscription-limit-reached"
    assert over.json()["limit"] == 20
    # Another agency's place is its own.
    subscribed(stack, subscriptions, JUSTICE, receiver, SUBMITTED)
    # A place freed is a place taken again.
    agency, first = subscriptions.pop(0)
    unsubscribe(stack, agency, first)
    subscribed(stack, subscriptions, DESK, receiver, SUBMITTED)
