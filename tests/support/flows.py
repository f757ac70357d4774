"""Small helpers the end-to-end tests share: submit a dossier, wait for its journey."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from devstack.stack import Stack

T = TypeVar("T")
CHAIN = "LT.KS-TT-BHYT"
# The provincial one-stop desk: the demo agency that submits the tests' dossiers.
DESK = "000.00.01.H22"


def agency_token(stack: Stack, agency_code: str, scope: str = "") -> str:
    """An access token of the demo client acting for agency_code (client secret, cached)."""
    client = stack.credentials.client_for(agency_code)
    return stack.credentials.token(stack.url("identity"), client.client_id, scope)


def as_agency(stack: Stack, agency_code: str, scope: str = "") -> dict[str, str]:
    return {"Authorization": f"Bearer {agency_token(stack, agency_code, scope)}"}


def client_token(stack: Stack, client_id: str, scope: str = "") -> str:
    """A token of any demo client by id, e.g. the gateway's own gateway-intake."""
    return stack.credentials.token(stack.url("identity"), client_id, scope)


def as_operator(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {client_token(stack, 'gateway-operator')}"}


def receiving_agency(code: str) -> str:
    """Receipt codes start with the receiving agency's code: AGENCY-YYMMDD-NNNN."""
    return code.rsplit("-", 2)[0]


def chain_dossier(email: str, personal_id: str = "001090012345") -> dict[str, Any]:
    return {
        "procedure_code": CHAIN,
        "applicant": {"personal_id": personal_id, "full_name": "Nguyễn Thị Lan", "email": email},
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
            "residence_address": "Số 12, thôn Đông, xã Tân Phong",
        },
    }


def submit(stack: Stack, body: dict[str, Any]) -> str:
    response = httpx.post(
        stack.url("intake") + "/v1/dossiers", json=body, headers=as_agency(stack, DESK), timeout=10
    )
    assert response.status_code == 201, response.text
    code: str = response.json()["code"]
    return code


def eventually(probe: Callable[[], T | None], timeout: float = 60, every: float = 0.25) -> T:
    """Poll until probe returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def dossier_view(stack: Stack, code: str) -> dict[str, Any]:
    response = httpx.get(
        f"{stack.url('intake')}/v1/dossiers/{code}",
        headers=as_agency(stack, receiving_agency(code)),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_completed(stack: Stack, code: str, timeout: float = 60) -> dict[str, Any]:
    return eventually(
        lambda: (view := dossier_view(stack, code))["status"] == "completed" and view, timeout
    )


def mails_to(stack: Stack, address: str) -> list[dict[str, Any]]:
    response = httpx.get(
        stack.url("sandbox") + "/mail/messages", params={"to": address}, timeout=10
    )
    response.raise_for_status()
    messages: list[dict[str, Any]] = response.json()
    return messages


def agency_transfers(stack: Stack, agency_code: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{stack.url('sandbox')}/agencies/{agency_code}/transfers", timeout=10)
    response.raise_for_status()
    transfers: list[dict[str, Any]] = response.json()
    return transfers


def steer_sandbox(stack: Stack, path: str, **behaviour: Any) -> dict[str, Any]:
    """Tell a sandbox stand-in how to behave next (fail, delay, stay silent...):
    PUT {sandbox}/{path}/behaviour, e.g. path "agencies/000.21.31.H22", "sms", "portal"."""
    response = httpx.put(f"{stack.url('sandbox')}/{path}/behaviour", json=behaviour, timeout=10)
    response.raise_for_status()
    answer: dict[str, Any] = response.json() if response.content else {}
    return answer
