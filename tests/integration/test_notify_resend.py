"""A notification given up is an operator's dead letter: it can be sent again, as a new
message, once the cause is mended; the failed one keeps its status and history (issue E,
item 1: every work queue's dead letters can be replayed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import Stack
from tests.support.flows import DESK, as_agency, as_operator, chain_dossier, eventually, submit
from tests.support.notify import notifications, sms_behaviour, sms_to

PHONE = "0912000777"
E164 = "+84912000777"


@pytest.fixture
def sms_refusing(stack: Stack) -> Iterator[Stack]:
    sms_behaviour(stack, fail_all=True, fail_status=400)
    yield stack
    sms_behaviour(stack, fail_all=False, fail_next=0)


def first_sms(stack: Stack, code: str, status: str) -> dict[str, Any] | None:
    found = [n for n in notifications(stack, code) if n["channel"] == "sms"]
    found.sort(key=lambda n: n["created_at"])
    return found[0] if found and found[0]["status"] == status else None


def test_a_refused_sms_is_sent_again_by_an_operator(sms_refusing: Stack) -> None:
    stack = sms_refusing
    body = chain_dossier("")
    body["applicant"] = {**body["applicant"], "phone": PHONE, "preferred_channel": "sms"}
    body["applicant"].pop("email", None)
    code = submit(stack, body)
    failed = eventually(lambda: first_sms(stack, code, "permanent-failure"), 60)
    sms_behaviour(stack, fail_all=False)

    url = stack.url("notify") + f"/v1/notifications/{failed['id']}/resend"
    refused = httpx.post(url, headers=as_agency(stack, DESK), timeout=10)
    assert refused.status_code == 403
    resent = httpx.post(url, headers=as_operator(stack), timeout=10)
    assert resent.status_code == 201, resent.text
    # A second click does not tell the citizen twice.
    twice = httpx.post(url, headers=as_operator(stack), timeout=10)
    assert twice.status_code == 409, twice.text
    fresh = resent.json()
    assert fresh["id"] != failed["id"]
    assert fresh["reason"] == f"resend of {failed['id']}"

    def delivered() -> dict[str, Any] | None:
        now = [n for n in notifications(stack, code) if n["id"] == fresh["id"]]
        return now[0] if now and now[0]["status"] == "delivered" else None

    eventually(delivered, 60)
    old = [n for n in notifications(stack, code) if n["id"] == failed["id"]]
    assert old[0]["status"] == "permanent-failure"
    detail = httpx.get(
        stack.url("notify") + f"/v1/notifications/{fresh['id']}",
        headers=as_operator(stack),
        timeout=10,
    ).json()
    assert [m for m in sms_to(stack, E164) if m["text"] == detail["body"]], sms_to(stack, E164)

    # Only a message given up is sent again.
    again = httpx.post(
        stack.url("notify") + f"/v1/notifications/{fresh['id']}/resend",
        headers=as_operator(stack),
        timeout=10,
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
