"""A citizen logging in with e-ID over real HTTP, as a browser would: identity's login
redirects to the provider, the citizen names themselves there (login_hint, the sandbox's
non-interactive path), the provider redirects back to identity's callback."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from devstack.stack import Stack


def browser() -> httpx.Client:
    # Redirects are followed by hand: each hop is checked, and the provider's is amended.
    return httpx.Client(follow_redirects=False, trust_env=False, timeout=15)


def start_login(client: httpx.Client, stack: Stack, acr: str = "2") -> str:
    """The provider's authorization URL that identity redirected to."""
    response = client.get(stack.url("identity") + "/v1/citizen/login", params={"acr": acr})
    assert response.status_code == 302, response.text
    return response.headers["location"]


def at_provider(client: httpx.Client, authorize_url: str, personal_id: str) -> str:
    """The citizen logs in at the provider; returns identity's callback URL it sends back."""
    response = client.get(f"{authorize_url}&{urlencode({'login_hint': personal_id})}")
    assert response.status_code == 302, response.text
    return response.headers["location"]


def log_in(stack: Stack, personal_id: str, acr: str = "2") -> tuple[httpx.Client, dict[str, Any]]:
    client = browser()
    callback = at_provider(client, start_login(client, stack, acr), personal_id)
    response = client.get(callback)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return client, body


def consent(stack: Stack, session: str, procedure_code: str, purpose: str) -> dict[str, Any]:
    """Preview, then grant, the registry read for one procedure; returns the consent."""
    identity, headers = stack.url("identity"), {"X-Citizen-Session": session}
    preview = httpx.post(
        identity + "/v1/consents",
        json={"procedure_code": procedure_code, "purpose": purpose},
        headers=headers,
        timeout=15,
    )
    assert preview.status_code == 201, preview.text
    consent_id = preview.json()["id"]
    granted = httpx.post(
        f"{identity}/v1/consents/{consent_id}/confirm", headers=headers, timeout=15
    )
    assert granted.status_code == 200, granted.text
    body: dict[str, Any] = granted.json()
    return body
