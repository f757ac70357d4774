"""SIGKILL the routing service with dossiers in flight: nothing is lost, nothing doubled."""

from __future__ import annotations

import signal
from collections import Counter

import httpx

from devstack.stack import Stack
from tests.integration.test_dossier_journey import AGENCIES
from tests.support.flows import (
    agency_transfers,
    as_agency,
    chain_dossier,
    eventually,
    submit,
    wait_completed,
)

DOSSIERS = 30


def test_routing_killed_mid_flight_still_completes_every_dossier_once(stack: Stack) -> None:
    codes = [
        submit(stack, chain_dossier(f"crash{i}@example.vn", f"0010900{i:05d}"))
        for i in range(DOSSIERS)
    ]
    # Kill once the journeys are under way but far from finished.
    eventually(
        lambda: any(t["dossier_code"] in codes for t in agency_transfers(stack, AGENCIES[0]))
    )
    stack.stop_service("routing", signal.SIGKILL)
    # Agencies keep reporting while routing is down; intake keeps accepting dossiers.
    late = submit(stack, chain_dossier("after-kill@example.vn"))
    stack.start_service("routing")
    stack.wait_ready("routing")

    for code in [*codes, late]:
        view = wait_completed(stack, code, timeout=120)
        assert [s["status"] for s in view["steps"]] == ["completed"] * 3

    for agency in AGENCIES:
        handled = Counter(
            t["dossier_code"]
            for t in agency_transfers(stack, agency)
            if t["dossier_code"] in {*codes, late}
        )
        assert set(handled) == {*codes, late}, f"{agency} missed dossiers"
        assert max(handled.values()) == 1, f"{agency} handled a dossier twice: {handled}"


def test_agency_report_is_idempotent(stack: Stack) -> None:
    code = submit(stack, chain_dossier("replay@example.vn"))
    view = wait_completed(stack, code)
    transfer_id = view["steps"][0]["transfer_id"]
    holder = as_agency(stack, view["steps"][0]["agency_code"])
    again = httpx.post(
        f"{stack.url('routing')}/v1/transfers/{transfer_id}/outcome",
        json={"outcome": "done"},
        headers=holder,
    )
    assert again.status_code == 200
    assert again.json() == {"transfer_id": transfer_id, "status": "completed", "replayed": True}
    missing = httpx.post(
        f"{stack.url('routing')}/v1/transfers/nope/outcome",
        json={"outcome": "done"},
        headers=holder,
    )
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = httpx.post(
        f"{stack.url('routing')}/v1/transfers/{transfer_id}/outcome",
        json={"outcome": "?"},
        headers=holder,
    )
    assert bad.status_code == 422
