"""Intake's side of once-only, without identity running: what a residence-dependent
procedure demands, who the applicant is, and a clear 503 when identity cannot be asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.catalogue import load_catalogue
from services.intake.citizen import EidApplicant, verified_request
from services.intake.main import build_app
from services.intake.schemas import DossierIn
from services.intake.settings import IntakeSettings
from tests.support.tokens import TestIssuer

ISSUER = TestIssuer()


@pytest.fixture
def client(tmp_path: Path, routing_catalogue: str) -> Iterator[TestClient]:
    settings = IntakeSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}",
        kafka_bootstrap_servers="127.0.0.1:1",
        routing_grpc_target=routing_catalogue,
        identity_grpc_target="127.0.0.1:1",  # nothing listens
        identity_timeout_s=0.5,
        **ISSUER.settings(),
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as test_client:
        # The justice office's desk, the receiving agency of the marital-status procedure.
        test_client.headers.update(ISSUER.headers("000.21.31.H22", "dossiers:submit"))
        yield test_client


def marital_status(**extra: Any) -> dict[str, Any]:
    return {
        "procedure_code": "HT.XNTTHN",
        "applicant": {"personal_id": "001090012345", "full_name": "Nguyễn Thị Lan"},
        "form_data": {"intended_use": "Đăng ký kết hôn"},
        **extra,
    }


def test_the_catalogue_says_which_procedures_need_residence() -> None:
    procedure = load_catalogue().procedure("HT.XNTTHN")
    assert procedure is not None
    assert procedure.needs == ("residence",)
    assert procedure.min_assurance == 2
    chain = load_catalogue().procedure("LT.KS-TT-BHYT")
    assert chain is not None
    assert (chain.needs, chain.min_assurance) == ((), 1)


def test_residence_procedure_without_proof_is_refused(client: TestClient) -> None:
    response = client.post("/v1/dossiers", json=marital_status())
    assert response.status_code == 422
    assert response.json()["type"].endswith("residence-proof-missing")
    # A consent id without an e-ID session proves nothing either.
    response = client.post("/v1/dossiers", json=marital_status(residence_consent_id="c-1"))
    assert response.status_code == 422


def test_an_uploaded_residence_document_is_the_old_path(client: TestClient) -> None:
    body = marital_status(documents=[{"kind": "residence", "name": "xac-nhan-cu-tru.pdf"}])
    assert client.post("/v1/dossiers", json=body).status_code == 201


def test_without_e_id_the_applicant_must_be_named(client: TestClient) -> None:
    body = marital_status(applicant={"email": "a@example.vn"}, documents=[{"kind": "residence"}])
    response = client.post("/v1/dossiers", json=body)
    assert response.status_code == 422
    assert response.json()["type"].endswith("applicant-unidentified")


def test_a_citizen_session_needs_identity_to_answer(client: TestClient) -> None:
    body = marital_status(applicant={"email": "a@example.vn"}, residence_consent_id="c-1")
    response = client.post("/v1/dossiers", json=body, headers={"X-Citizen-Session": "abc"})
    assert response.status_code == 503
    assert response.json()["type"].endswith("identity-unavailable")


def eid_applicant(email: str | None, phone: str | None) -> EidApplicant:
    return EidApplicant("session", "001090012345", "Nguyễn Thị Lan", 2, None, email, phone)


@pytest.mark.parametrize(
    ("body", "profile", "expected"),
    [
        # The body wins: this dossier's news goes where the citizen asked.
        (
            {"email": "lan@example.vn", "phone": "0912345678"},
            ("eid@example.vn", "+84935137405"),
            ("lan@example.vn", "0912345678"),
        ),
        # The profile fills in what the body leaves out, one field at a time.
        ({}, ("eid@example.vn", "+84935137405"), ("eid@example.vn", "+84935137405")),
        (
            {"email": "lan@example.vn"},
            ("eid@example.vn", "+84935137405"),
            ("lan@example.vn", "+84935137405"),
        ),
        ({"phone": "0912345678"}, ("eid@example.vn", None), ("eid@example.vn", "0912345678")),
        # Neither: no contact, which notify records rather than retries.
        ({}, (None, None), (None, None)),
    ],
)
def test_e_id_contact_fills_in_what_the_body_leaves_out(
    body: dict[str, str],
    profile: tuple[str | None, str | None],
    expected: tuple[str | None, str | None],
) -> None:
    request = DossierIn.model_validate(
        marital_status(applicant={"personal_id": "079185000001", "full_name": "X", **body})
    )
    verified = verified_request(request, eid_applicant(*profile)).applicant
    assert (verified.email, verified.phone) == expected
    # Identity always comes from e-ID, whatever the body said.
    assert (verified.personal_id, verified.full_name) == ("001090012345", "Nguyễn Thị Lan")
