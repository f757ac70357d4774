"""Once-only on the real stack: a citizen logs in with e-ID at the sandbox provider
(authorization code + PKCE over real HTTP), previews and grants the registry read, files a
residence-dependent dossier with no residence document, and sees who read their data."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from core.auth_grpc import bearer_metadata
from core.events import from_kafka
from core.storage import create_engine, session_factory
from devstack.kafka import KafkaBroker
from devstack.stack import HOST, Stack
from gateway.v1 import events_pb2, identity_pb2, identity_pb2_grpc
from services.identity import access_log
from tests.conftest import TOPIC
from tests.support.eid import at_provider, browser, consent, log_in, start_login
from tests.support.flows import agency_token, as_agency, client_token, wait_completed
from tests.support.kafka import at_least, keyed, read_topic

# A synthetic citizen of the sandbox registry, used by no other test (see test_pii_hygiene).
CITIZEN = "079185000001"
PROCEDURE = "HT.XNTTHN"  # needs residence, e-ID assurance level 2
AGENCY = "000.21.31.H22"


def marital_status_dossier(**extra: Any) -> dict[str, Any]:
    return {
        "procedure_code": PROCEDURE,
        "applicant": {"email": "once-only@example.vn"},
        "form_data": {"intended_use": "Đăng ký kết hôn"},
        **extra,
    }


def post_dossier(stack: Stack, body: dict[str, Any], session: str | None) -> httpx.Response:
    """Filed at the justice office's desk (the procedure's receiving agency) by its system."""
    headers = as_agency(stack, AGENCY) | ({"X-Citizen-Session": session} if session else {})
    return httpx.post(stack.url("intake") + "/v1/dossiers", json=body, headers=headers, timeout=15)


def submitted_event(kafka: KafkaBroker, code: str) -> events_pb2.DossierSubmitted:
    kind = "vn.gov.dossier.submitted.v1"
    [record] = asyncio.run(
        read_topic(kafka.bootstrap_servers, TOPIC, keyed(code, kind), at_least(1))
    )
    event = from_kafka(record.key, record.value, dict(record.headers))
    assert isinstance(event.data, events_pb2.DossierSubmitted)
    return event.data


def test_citizen_files_a_residence_dossier_without_a_document(
    stack: Stack, kafka: KafkaBroker
) -> None:
    client, login = log_in(stack, CITIZEN, acr="2")
    session = login["session"]
    assert login["assurance_level"] == 2
    assert client.cookies.get("citizen_session") == session
    me = client.get(stack.url("identity") + "/v1/citizen/me").json()
    assert me["personal_id"] == CITIZEN

    identity = stack.url("identity")
    headers = {"X-Citizen-Session": session}
    purpose = "Cấp giấy xác nhận tình trạng hôn nhân để đăng ký kết hôn"
    preview = httpx.post(
        identity + "/v1/consents",
        json={"procedure_code": PROCEDURE, "purpose": purpose},
        headers=headers,
        timeout=15,
    )
    assert preview.status_code == 201, preview.text
    consent = preview.json()
    assert consent["state"] == "previewed"
    shown = consent["preview"]["residence"]
    assert shown["personal_id"] == CITIZEN
    assert shown["permanent_residence"]["province_code"] == CITIZEN[:3]

    # Not confirmed yet: intake may not take the residence.
    refused = post_dossier(
        stack, marital_status_dossier(residence_consent_id=consent["id"]), session
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("consent-not-granted")

    confirmed = httpx.post(
        f"{identity}/v1/consents/{consent['id']}/confirm", headers=headers, timeout=15
    )
    assert confirmed.status_code == 200
    assert confirmed.json()["state"] == "granted"

    # An applicant identity in the body is not believed: e-ID's replaces it.
    impostor = {"personal_id": "001090012345", "full_name": "Kẻ Mạo Danh", "email": "x@example.vn"}
    created = post_dossier(
        stack,
        marital_status_dossier(residence_consent_id=consent["id"], applicant=impostor),
        session,
    )
    assert created.status_code == 201, created.text
    code = created.json()["code"]

    dossier = submitted_event(kafka, code).dossier
    assert dossier.applicant.personal_id == CITIZEN
    assert dossier.applicant.full_name == login["full_name"]
    assert dossier.assurance_level == 2
    assert MessageToDict(dossier.residence, preserving_proto_field_name=True) == shown

    wait_completed(stack, code)

    reads = client.get(identity + "/v1/citizen/access-log").json()["reads"]
    taken = [r for r in reads if r["dossier_code"] == code]
    assert [(r["agency"], r["service"], r["data"]) for r in taken] == [
        (AGENCY, "intake", "residence")
    ]
    assert any(r["service"] == "identity" and r["data"] == "residence" for r in reads)
    # The consent served this dossier and no other.
    again = post_dossier(stack, marital_status_dossier(residence_consent_id=consent["id"]), session)
    assert again.status_code == 422, again.text


def test_residence_dossier_without_consent_or_document_is_refused(stack: Stack) -> None:
    _, login = log_in(stack, CITIZEN, acr="2")
    refused = post_dossier(stack, marital_status_dossier(), login["session"])
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("residence-proof-missing")

    # The old path still works: an uploaded proof of residence, no e-ID.
    body = marital_status_dossier(
        applicant={"personal_id": "001090012345", "full_name": "Nguyễn Thị Lan"},
        documents=[{"kind": "residence", "name": "xac-nhan-cu-tru.pdf"}],
    )
    assert post_dossier(stack, body, None).status_code == 201


def test_level_one_login_cannot_file_a_level_two_procedure(stack: Stack) -> None:
    _, login = log_in(stack, CITIZEN, acr="1")
    assert login["assurance_level"] == 1
    body = marital_status_dossier(documents=[{"kind": "residence"}])
    refused = post_dossier(stack, body, login["session"])
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].endswith("assurance-too-low")


def test_replayed_callback_and_foreign_consent_are_refused(stack: Stack) -> None:
    client = browser()
    callback = at_provider(client, start_login(client, stack), CITIZEN)
    assert client.get(callback).status_code == 200
    replay = client.get(callback)  # same state, same nonce, same code
    assert replay.status_code == 400, replay.text

    _, other = log_in(stack, "031200123456")
    _, mine = log_in(stack, CITIZEN)
    consent = httpx.post(
        stack.url("identity") + "/v1/consents",
        json={"procedure_code": PROCEDURE, "purpose": "Xác nhận tình trạng hôn nhân"},
        headers={"X-Citizen-Session": mine["session"]},
        timeout=15,
    ).json()
    stolen = post_dossier(
        stack, marital_status_dossier(residence_consent_id=consent["id"]), other["session"]
    )
    assert stolen.status_code == 403, stolen.text


def test_identity_grpc_refuses_residence_without_granted_consent(stack: Stack) -> None:
    _, mine = log_in(stack, CITIZEN)
    _, other = log_in(stack, "031200123456")
    previewed = httpx.post(
        stack.url("identity") + "/v1/consents",
        json={"procedure_code": PROCEDURE, "purpose": "Xác nhận tình trạng hôn nhân"},
        headers={"X-Citizen-Session": mine["session"]},
        timeout=15,
    ).json()
    assert previewed["state"] == "previewed"

    intake_token = client_token(stack, "gateway-intake")
    desk_token = agency_token(stack, AGENCY)

    def take(session: str) -> grpc.StatusCode:
        with grpc.insecure_channel(f"{HOST}:{stack.ports.identity_grpc}") as channel:
            stub = identity_pb2_grpc.CitizenIdentityStub(channel)
            request = identity_pb2.TakeResidenceRequest(
                consent_id=previewed["id"],
                session=session,
                dossier_code="000.21.31.H22-261122-9999",
                requesting_agency=AGENCY,
            )
            with pytest.raises(grpc.RpcError) as refused:
                stub.TakeResidence(request, timeout=10, metadata=bearer_metadata(intake_token))
        code: grpc.StatusCode = refused.value.code()
        return code

    assert take(mine["session"]) == grpc.StatusCode.FAILED_PRECONDITION
    assert take(other["session"]) == grpc.StatusCode.PERMISSION_DENIED
    assert take("not-a-session") == grpc.StatusCode.UNAUTHENTICATED
    # Citizen data is served to the gateway's intake only: a desk's token is refused.
    with grpc.insecure_channel(f"{HOST}:{stack.ports.identity_grpc}") as channel:
        stub = identity_pb2_grpc.CitizenIdentityStub(channel)
        request = identity_pb2.TakeResidenceRequest(consent_id=previewed["id"], session="x")
        with pytest.raises(grpc.RpcError) as refused:
            stub.TakeResidence(request, timeout=10, metadata=bearer_metadata(desk_token))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_no_registry_read_for_a_procedure_that_does_not_need_it(stack: Stack) -> None:
    client, login = log_in(stack, CITIZEN)
    before = client.get(stack.url("identity") + "/v1/citizen/access-log").json()["reads"]
    refused = httpx.post(
        stack.url("identity") + "/v1/consents",
        json={"procedure_code": "LT.KS-TT-BHYT", "purpose": "Khai sinh cho con"},
        headers={"X-Citizen-Session": login["session"]},
        timeout=15,
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("residence-not-needed")
    after = client.get(stack.url("identity") + "/v1/citizen/access-log").json()["reads"]
    assert after == before

    logout = stack.url("identity") + "/v1/citizen/logout"
    assert client.post(logout, headers={"X-CSRF-Token": login["csrf_token"]}).status_code == 204
    # The session is gone server-side, not only the cookie.
    gone = httpx.get(
        stack.url("identity") + "/v1/citizen/me",
        headers={"X-Citizen-Session": login["session"]},
        timeout=15,
    )
    assert gone.status_code == 401, gone.text


def test_the_stored_access_log_chain_is_intact(stack: Stack, database_url: str) -> None:

    async def check() -> list[str]:
        engine = create_engine(database_url)
        try:
            async with session_factory(engine)() as session:
                return await access_log.verify_stored(session)
        finally:
            await engine.dispose()

    _, login = log_in(stack, CITIZEN)
    consent(stack, login["session"], PROCEDURE, "Kiểm tra chuỗi nhật ký")
    assert asyncio.run(check()) == []


def test_logins_go_on_across_a_provider_key_rotation(stack: Stack) -> None:
    _, before = log_in(stack, CITIZEN)
    jwks = stack.url("sandbox") + "/oidc/jwks"
    old_kids = {k["kid"] for k in httpx.get(jwks, timeout=10).json()["keys"]}
    assert httpx.post(stack.url("sandbox") + "/oidc/keys/rotate", timeout=10).status_code == 204
    new_kids = {k["kid"] for k in httpx.get(jwks, timeout=10).json()["keys"]} - old_kids
    assert len(new_kids) == 1
    # Identity has never seen the new kid: it refetches the JWKS and the login verifies.
    _, after = log_in(stack, CITIZEN)
    assert after["session"] != before["session"]
