"""Small helpers the end-to-end tests share: submit a dossier, wait for its journey."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from devstack.stack import Stack

T = TypeVar("T")
CHAIN = "LT.KS-TT-BHYT"


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
    response = httpx.post(stack.url("intake") + "/v1/dossiers", json=body, timeout=10)
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
    response = httpx.get(f"{stack.url('intake')}/v1/dossiers/{code}", timeout=10)
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
