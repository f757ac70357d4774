"""Agency access rights on the real stack: tokens from identity, checked by every service."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from core.auth_grpc import bearer_metadata
from devstack.stack import HOST, Stack
from gateway.v1 import routing_pb2, routing_pb2_grpc
from tests.support.flows import (
    DESK,
    agency_token,
    as_agency,
    as_operator,
    chain_dossier,
    dossier_view,
    eventually,
    submit,
    wait_completed,
)

INSURANCE = "000.23.05.H22"  # may report its steps and read dossiers, not submit them
POLICE = "000.22.31.H22"


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{slug}"
    return body


def test_desk_gets_a_token_with_private_key_jwt_and_submits(stack: Stack) -> None:
    identity = stack.url("identity")
    metadata = httpx.get(f"{identity}/.well-known/oauth-authorization-server", timeout=5).json()
    assertion = stack.credentials.assertion(identity, "motcua-h22")
    answer = httpx.post(
        metadata["token_endpoint"],
        data={
            "grant_type": "client_credentials",
            "scope": "dossiers:submit",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    submitted = httpx.post(
        f"{stack.url('intake')}/v1/dossiers",
        json=chain_dossier("pkjwt@example.vn"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert submitted.status_code == 201, submitted.text
    wait_completed(stack, submitted.json()["code"])


def test_without_a_token_intake_answers_401(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.url('intake')}/v1/dossiers", json=chain_dossier("x@example.vn"), timeout=10
    )
    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("caller", ["insurance", "operator"])
def test_a_service_outside_the_agencys_scopes_is_403(stack: Stack, caller: str) -> None:
    headers = as_agency(stack, INSURANCE) if caller == "insurance" else as_operator(stack)
    response = httpx.post(
        f"{stack.url('intake')}/v1/dossiers",
        json=chain_dossier("scope@example.vn"),
        headers=headers,
        timeout=10,
    )
    body = assert_problem(response, 403, "insufficient-scope")
    assert body["required_scope"] == "dossiers:submit"
    letters = httpx.get(
        f"{stack.url('routing')}/v1/dead-letters", headers=as_agency(stack, DESK), timeout=10
    )
    assert_problem(letters, 403, "insufficient-scope")


def test_only_the_agency_holding_a_step_reports_its_outcome(stack: Stack) -> None:
    # The police step comes second: while the justice office works, it is still pending.
    stack_url = stack.url("intake")
    submitted = httpx.post(
        f"{stack_url}/v1/dossiers",
        json=chain_dossier("holder@example.vn"),
        headers=as_agency(stack, DESK),
        timeout=10,
    )
    code = submitted.json()["code"]
    step = eventually(lambda: (dossier_view(stack, code)["steps"] or [None])[0])
    outcome_url = f"{stack.url('routing')}/v1/transfers/{step['transfer_id']}/outcome"
    response = httpx.post(
        outcome_url, json={"outcome": "done"}, headers=as_agency(stack, POLICE), timeout=10
    )
    assert_problem(response, 403, "step-held-by-another-agency")
    view = wait_completed(stack, code)  # the holder's own report still goes through
    assert view["steps"][0]["status"] == "completed"


def test_a_dossier_is_read_only_by_its_agencies(stack: Stack) -> None:
    intake = stack.url("intake")
    chain = submit(stack, chain_dossier("reader@example.vn"))
    wait_completed(stack, chain)  # read by the receiving desk
    # The insurance office handles the last step of the chain: it may read the dossier.
    on_journey = httpx.get(f"{intake}/v1/dossiers/{chain}", headers=as_agency(stack, INSURANCE))
    assert on_journey.status_code == 200, on_journey.text

    birth = chain_dossier("reader@example.vn") | {"procedure_code": "HT.KS"}
    birth["form_data"].pop("residence_address")
    code = submit(stack, birth)
    wait_completed(stack, code)  # read by the receiving desk
    stranger = httpx.get(f"{intake}/v1/dossiers/{code}", headers=as_agency(stack, INSURANCE))
    assert_problem(stranger, 403, "dossier-not-readable")


def test_grpc_needs_a_token_with_the_methods_scope(stack: Stack) -> None:
    request = routing_pb2.GetJourneyRequest(dossier_code="nope")
    with grpc.insecure_channel(f"{HOST}:{stack.ports.routing_grpc}") as channel:
        stub = routing_pb2_grpc.RoutingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.GetJourney(request, timeout=5)
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as forged:
            stub.GetJourney(request, timeout=5, metadata=bearer_metadata("not.a.token"))
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED
        desk = bearer_metadata(agency_token(stack, DESK))
        with pytest.raises(grpc.RpcError) as denied:
            stub.GetJourney(request, timeout=5, metadata=desk)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
