"""SIGKILL the sandbox while an agency still owes the gateway its outcome report: after the
restart the agency reports it, as a real back-office resuming its to-do would, the transfer
is still taken once, and the mailbox, the portal and the desk's webhook receiver still hold
what they had received."""

from __future__ import annotations

import signal
from typing import Any

import httpx

from devstack.stack import Stack
from tests.integration.test_dossier_journey import AGENCIES
from tests.support.agencies import behave
from tests.support.flows import (
    DESK,
    agency_transfers,
    chain_dossier,
    eventually,
    mails_to,
    submit,
    wait_completed,
)
from tests.support.notify import callbacks_at, subscribe, unsubscribe, webhook_receiver

FIRST = AGENCIES[0]
# Long enough to kill and restart the sandbox while the first agency "works" on the step.
WORK_S = 6.0


def taken_by(stack: Stack, agency: str, code: str) -> list[dict[str, Any]]:
    return [t for t in agency_transfers(stack, agency) if t["dossier_code"] == code]


def portal_keys(stack: Stack, code: str) -> list[str]:
    response = httpx.get(
        f"{stack.url('sandbox')}/portal/dossiers", params={"dossier_code": code}, timeout=5
    )
    response.raise_for_status()
    return [pushed["key"] for pushed in response.json()]


def test_a_killed_sandbox_reports_the_outcome_it_owed_and_forgets_nothing(stack: Stack) -> None:
    email = "sandbox-kill@example.vn"
    receiver = webhook_receiver(stack, "restart")
    subscription = subscribe(stack, DESK, receiver, "vn.gov.dossier.submitted.v1")
    assert subscription.status_code == 201, subscription.text
    behave(stack, FIRST, delay_s=WORK_S)
    try:
        code = submit(stack, chain_dossier(email))
        # Acknowledged, outcome still owed: the moment a kill used to leave it stuck.
        [before] = eventually(
            lambda: [t for t in taken_by(stack, FIRST, code) if t["acknowledged_at"]]
        )
        # The receipt and the first transfer's message; and the portal's received status.
        mails = eventually(lambda: m if len(m := mails_to(stack, email)) >= 2 else None)
        pushed = eventually(lambda: portal_keys(stack, code))
        called = eventually(lambda: [c for c in callbacks_at(receiver) if code in c["body"]])
        assert before["reported_at"] is None
    except BaseException:
        behave(stack, FIRST)  # no kill came: the next tests want a prompt agency again
        raise
    finally:
        unsubscribe(stack, DESK, subscription.json()["id"])
    # The restart forgets the behaviour (tests steer it), not what was taken and owed.
    stack.stop_service("sandbox", signal.SIGKILL)
    stack.start_service("sandbox")
    stack.wait_ready("sandbox")

    view = wait_completed(stack, code, timeout=90)

    assert [s["status"] for s in view["steps"]] == ["completed"] * 3
    [after] = taken_by(stack, FIRST, code)
    assert after["transfer_id"] == before["transfer_id"]
    assert after["first_received_at"] == before["first_received_at"]
    assert after["effects"] == 1
    assert after["reported_at"] is not None
    for agency in AGENCIES[1:]:
        assert [t["effects"] for t in taken_by(stack, agency, code)] == [1]
    kept = [(m["id"], m["message_id"]) for m in mails_to(stack, email)]
    assert kept[: len(mails)] == [(m["id"], m["message_id"]) for m in mails]
    assert set(pushed) <= set(portal_keys(stack, code))
    assert [c for c in callbacks_at(receiver) if code in c["body"]][: len(called)] == called
