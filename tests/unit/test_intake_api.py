"""Intake's HTTP contract on the embedded database: receipts, idempotency, problem details.

Kafka is not running here: the outbox keeps the events, which is what these tests check.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from core.events import from_kafka
from gateway.v1 import events_pb2
from services.intake.main import build_app
from services.intake.settings import IntakeSettings
from tests.support.tokens import TestIssuer

RECEIPT = re.compile(r"^000\.00\.01\.H22-\d{6}-\d{4}$")
DESK = "000.00.01.H22"
ISSUER = TestIssuer()


def dossier(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "procedure_code": "LT.KS-TT-BHYT",
        "applicant": {
            "personal_id": "001090012345",
            "full_name": "Nguyễn Thị Lan",
            "email": "lan@example.vn",
        },
        "form_data": {
            "child_full_name": "Trần Minh Khôi",
            "child_birth_date": "2026-11-01",
            "child_gender": "Nam",
            "mother_full_name": "Nguyễn Thị Lan",
            "residence_address": "Số 12, thôn Đông, xã Tân Phong",
        },
    }
    body.update(overrides)
    return body


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "intake.db"


@pytest.fixture
def client(database: Path, routing_catalogue: str) -> Iterator[TestClient]:
    settings = IntakeSettings(
        database_url=f"sqlite+aiosqlite:///{database}",
        kafka_bootstrap_servers="127.0.0.1:1",  # nothing listens: events stay in the outbox
        routing_grpc_target=routing_catalogue,
        journey_timeout_s=0.2,
        **ISSUER.settings(),
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as test_client:
        # The one-stop desk, allowed to submit and read its dossiers.
        test_client.headers.update(ISSUER.headers(DESK, "dossiers:submit dossiers:read"))
        yield test_client


def outbox_rows(database: Path) -> int:
    with create_engine(f"sqlite:///{database}").connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM intake_outbox")).scalar_one())


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["type"]
    return body


def test_submission_returns_receipt_due_date_and_stages_one_event(
    client: TestClient, database: Path
) -> None:
    response = client.post("/v1/dossiers", json=dossier())
    assert response.status_code == 201, response.text
    body = response.json()
    assert RECEIPT.match(body["code"])
    assert response.headers["location"] == f"/v1/dossiers/{body['code']}"
    assert body["status"] == "received"
    assert body["due_at"] > body["received_at"]
    # Due at office close in Hà Nội (17:00, UTC+7), rendered as the UTC instant.
    assert body["due_at"].endswith(("Z", "+00:00"))
    assert "T10:00:00" in body["due_at"]
    assert outbox_rows(database) == 1


def test_the_dossier_records_the_catalogue_version_it_was_received_under(
    client: TestClient, database: Path
) -> None:
    response = client.post("/v1/dossiers", json=dossier())
    assert response.status_code == 201, response.text
    # Routing's catalogue stood in serves version 1 (tests/support/catalogue_server.py).
    assert response.json()["catalogue_version"] == 1
    code = response.json()["code"]
    assert client.get(f"/v1/dossiers/{code}").json()["catalogue_version"] == 1
    with create_engine(f"sqlite:///{database}").connect() as conn:
        row = conn.execute(text("SELECT key, value, headers FROM intake_outbox")).one()
        stored = conn.execute(text("SELECT catalogue_version FROM intake_dossier")).scalar_one()
    assert stored == 1
    headers = {k: v.encode() for k, v in json.loads(row.headers).items()}
    event = from_kafka(row.key, row.value, headers)
    assert isinstance(event.data, events_pb2.DossierSubmitted)
    assert event.data.catalogue_version == 1


def test_the_preferred_channel_travels_in_the_event(client: TestClient, database: Path) -> None:
    applicant = {"personal_id": "001090012345", "full_name": "A", "preferred_channel": "sms"}
    response = client.post(
        "/v1/dossiers", json=dossier(applicant=applicant | {"phone": "0912345678"})
    )
    assert response.status_code == 201, response.text
    with create_engine(f"sqlite:///{database}").connect() as conn:
        row = conn.execute(text("SELECT key, value, headers FROM intake_outbox")).one()
    headers = {k: v.encode() for k, v in json.loads(row.headers).items()}
    event = from_kafka(row.key, row.value, headers)
    assert isinstance(event.data, events_pb2.DossierSubmitted)
    assert event.data.dossier.applicant.preferred_channel == "sms"


def test_receipt_numbers_follow_each_other(client: TestClient) -> None:
    first = client.post("/v1/dossiers", json=dossier()).json()["code"]
    second = client.post("/v1/dossiers", json=dossier()).json()["code"]
    assert int(second[-4:]) == int(first[-4:]) + 1
    assert first[:-4] == second[:-4]


def test_idempotency_key_replays_the_same_receipt(client: TestClient, database: Path) -> None:
    headers = {"Idempotency-Key": "desk-7/2026-11-22/42"}
    first = client.post("/v1/dossiers", json=dossier(), headers=headers)
    again = client.post("/v1/dossiers", json=dossier(), headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["code"] == first.json()["code"]
    assert outbox_rows(database) == 1


def test_idempotency_key_reused_for_another_dossier_is_refused(client: TestClient) -> None:
    headers = {"Idempotency-Key": "k-1"}
    client.post("/v1/dossiers", json=dossier(), headers=headers)
    other = dossier(applicant={"personal_id": "079203001234", "full_name": "Lê Văn Bình"})
    body = assert_problem(client.post("/v1/dossiers", json=other, headers=headers), 422)
    assert body["type"] == "/problems/idempotency-key-reused"


@pytest.mark.parametrize(
    ("payload", "slug"),
    [
        (dossier(procedure_code="NO.SUCH"), "unknown-procedure"),
        (dossier(form_data={"child_full_name": "A"}), "missing-form-fields"),
        (dossier(applicant={"personal_id": "12345", "full_name": "A"}), "validation-error"),
        (
            dossier(applicant={"personal_id": "001090012345", "full_name": "A", "email": "x"}),
            "validation-error",
        ),
        (dossier(unexpected="field"), "validation-error"),
        (
            dossier(
                applicant={
                    "personal_id": "001090012345",
                    "full_name": "A",
                    "preferred_channel": "fax",
                }
            ),
            "validation-error",
        ),
        ({}, "validation-error"),
    ],
)
def test_invalid_submissions_get_problem_details(
    client: TestClient, payload: Any, slug: str
) -> None:
    body = assert_problem(client.post("/v1/dossiers", json=payload), 422)
    assert body["type"] == f"/problems/{slug}"


def test_a_desk_files_only_for_its_own_agency(client: TestClient, database: Path) -> None:
    elsewhere = dossier(receiving_agency_code="000.21.31.H22")
    body = assert_problem(client.post("/v1/dossiers", json=elsewhere), 403)
    assert body["type"] == "/problems/dossier-for-another-agency"
    assert outbox_rows(database) == 0
    own = client.post("/v1/dossiers", json=dossier(receiving_agency_code=DESK))
    assert own.status_code == 201, own.text
    assert own.json()["receiving_agency_code"] == DESK


def test_a_dossier_naming_no_desk_is_received_by_the_caller(client: TestClient) -> None:
    # The catalogue's desk for HT.KS is the justice office; filed here, the one-stop desk has it.
    birth = dossier(procedure_code="HT.KS")
    birth["form_data"] = {k: v for k, v in birth["form_data"].items() if k != "residence_address"}
    response = client.post("/v1/dossiers", json=birth)
    assert response.status_code == 201, response.text
    assert RECEIPT.match(response.json()["code"])
    assert response.json()["receiving_agency_code"] == DESK


def test_another_desks_idempotency_key_does_not_return_its_dossier(client: TestClient) -> None:
    key = {"Idempotency-Key": "shared-key-1"}
    first = client.post("/v1/dossiers", json=dossier(), headers=key)
    assert first.status_code == 201, first.text
    # The same body from another desk is that desk's dossier: not a replay of the first.
    other = key | ISSUER.headers("000.21.31.H22", "dossiers:submit")
    body = assert_problem(client.post("/v1/dossiers", json=dossier(), headers=other), 422)
    assert body["type"] == "/problems/idempotency-key-reused"
    assert first.json()["code"] not in json.dumps(body)


def test_a_caller_of_an_unknown_agency_is_422(client: TestClient) -> None:
    headers = ISSUER.headers("999.99.99.X00", "dossiers:submit")
    body = assert_problem(client.post("/v1/dossiers", json=dossier(), headers=headers), 422)
    assert body["type"] == "/problems/unknown-agency"


def test_missing_fields_are_named(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/dossiers", json=dossier(form_data={})), 422)
    assert "residence_address" in body["missing_fields"]


def test_malformed_json_is_a_problem_not_a_500(client: TestClient) -> None:
    response = client.post(
        "/v1/dossiers", content=b'{"procedure_code": ', headers={"content-type": "application/json"}
    )
    assert_problem(response, 422)


def test_unknown_dossier_is_404_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/dossiers/000.00.01.H22-261122-9999"), 404)
    assert body["type"] == "/problems/dossier-not-found"


def test_dossier_is_readable_while_routing_is_unreachable(client: TestClient) -> None:
    code = client.post("/v1/dossiers", json=dossier()).json()["code"]
    body = client.get(f"/v1/dossiers/{code}").json()
    assert body["status"] == "received"
    assert body["journey_available"] is False


def test_not_ready_without_kafka_but_alive(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    deadline = time.monotonic() + 10
    while (ready := client.get("/health/ready")).json()["checks"]["database"] != "ok":
        assert time.monotonic() < deadline, ready.json()
        time.sleep(0.05)
    assert ready.status_code == 503
    assert ready.json()["checks"]["kafka"] != "ok"


def test_openapi_is_3_1_and_documents_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert (
        "application/problem+json"
        in spec["paths"]["/v1/dossiers"]["post"]["responses"]["422"]["content"]
    )


def test_database_down_is_alive_not_ready_and_requests_get_503(tmp_path: Path) -> None:
    settings = IntakeSettings(
        # Nothing listens on port 1: the database is unreachable for this whole test.
        database_url="postgresql+asyncpg://gateway@127.0.0.1:1/gateway",
        kafka_bootstrap_servers="127.0.0.1:1",
        routing_grpc_target="127.0.0.1:1",
        schema_wait_s=0.2,
        **ISSUER.settings(),
    )
    with TestClient(build_app(settings), raise_server_exceptions=False) as client:
        client.headers.update(ISSUER.headers(DESK, "dossiers:submit"))
        assert client.get("/health/live").status_code == 200
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] != "ok"
        response = client.post("/v1/dossiers", json=dossier())
        body = assert_problem(response, 503)
        assert body["type"] == "/problems/service-unavailable"


def test_no_token_is_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = client.post("/v1/dossiers", json=dossier(), headers={"Authorization": ""})
    body = assert_problem(response, 401)
    assert body["type"] == "/problems/invalid-token"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_token_from_another_issuer_key_is_401_invalid_token(client: TestClient) -> None:
    forger = TestIssuer()  # same claims, a key nobody registered
    headers = forger.headers(DESK, "dossiers:submit")
    response = client.post("/v1/dossiers", json=dossier(), headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_token_without_the_scope_is_403(client: TestClient) -> None:
    headers = ISSUER.headers(DESK, "dossiers:read")
    body = assert_problem(client.post("/v1/dossiers", json=dossier(), headers=headers), 403)
    assert body["type"] == "/problems/insufficient-scope"
    assert body["required_scope"] == "dossiers:submit"


def test_only_the_receiving_agency_reads_an_unrouted_dossier(client: TestClient) -> None:
    code = client.post("/v1/dossiers", json=dossier()).json()["code"]
    stranger = ISSUER.headers("000.23.05.H22", "dossiers:read")
    body = assert_problem(client.get(f"/v1/dossiers/{code}", headers=stranger), 403)
    assert body["type"] == "/problems/dossier-not-readable"
    assert client.get(f"/v1/dossiers/{code}").status_code == 200


def test_health_and_openapi_need_no_token(client: TestClient) -> None:
    assert client.get("/health/live", headers={"Authorization": ""}).status_code == 200
    spec = client.get("/openapi.json", headers={"Authorization": ""}).json()
    scheme = spec["components"]["securitySchemes"]["agencyToken"]
    assert scheme["flows"]["clientCredentials"]["tokenUrl"].endswith("/oauth2/token")
    submit = spec["paths"]["/v1/dossiers"]["post"]
    assert submit["security"] == [{"agencyToken": ["dossiers:submit"]}]


def nested(depth: int) -> dict[str, Any]:
    """form_data with `depth` levels of objects, the form itself counted."""
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


def with_form(**extra: Any) -> dict[str, Any]:
    return dossier(form_data=dossier()["form_data"] | extra)


@pytest.mark.parametrize(
    ("form_data", "location", "kind"),
    [
        # Past 8 levels, under the 32 of every JSON body.
        (nested(9), ["body", "form_data", *["next"] * 8], "json_too_deep"),
        (
            dossier()["form_data"] | {"rows": list(range(300))},
            ["body", "form_data", "rows"],
            "json_too_many_entries",
        ),
        (
            dossier()["form_data"] | {"note": "x" * 4001},
            ["body", "form_data", "note"],
            "string_too_long",
        ),
        (
            dossier()["form_data"] | {f"f{i}": "ư" * 3000 for i in range(12)},
            ["body", "form_data"],
            "json_too_large",
        ),
        (dossier()["form_data"] | {"n": 10**400}, ["body", "form_data", "n"], "number_too_large"),
    ],
)
def test_form_data_past_its_bounds_is_a_422_naming_the_place(
    client: TestClient, database: Path, form_data: Any, location: list[Any], kind: str
) -> None:
    body = assert_problem(client.post("/v1/dossiers", json=dossier(form_data=form_data)), 422)
    assert body["type"] == "/problems/validation-error"
    [error] = body["errors"]
    assert (error["location"], error["type"]) == (location, kind)
    assert outbox_rows(database) == 0


def test_form_data_nested_as_deep_as_protobuf_allows_is_a_422_not_a_500(
    client: TestClient, database: Path
) -> None:
    for depth in (33, 50, 101, 500):
        response = client.post("/v1/dossiers", json=dossier(form_data=nested(depth)))
        body = assert_problem(response, 422)
        assert body["type"] == "/problems/json-too-deep"
    not_finite = b'{"procedure_code": "LT.KS-TT-BHYT", "applicant": {"personal_id": '
    not_finite += b'"001090012345", "full_name": "A"}, "form_data": {"x": NaN}}'
    response = client.post(
        "/v1/dossiers", content=not_finite, headers={"content-type": "application/json"}
    )
    assert assert_problem(response, 422)["errors"][0]["type"] == "number_not_finite"
    # A lone surrogate is valid JSON, and no UTF-8 store or protobuf string takes it.
    surrogate = not_finite.replace(b"NaN", b'"\\ud800"')
    response = client.post(
        "/v1/dossiers", content=surrogate, headers={"content-type": "application/json"}
    )
    assert assert_problem(response, 422)["errors"][0]["type"] == "string_not_unicode"
    as_key = surrogate.replace(b'"x": "\\ud800"', b'"\\ud800": 1')
    response = client.post(
        "/v1/dossiers", content=as_key, headers={"content-type": "application/json"}
    )
    [error] = assert_problem(response, 422)["errors"]
    assert error["location"] == ["body", "form_data", "\\ud800"]
    assert outbox_rows(database) == 0


def test_form_data_within_its_bounds_is_taken(client: TestClient) -> None:
    form = with_form(extra=nested(7), rows=list(range(100)), note="ư" * 4000, n=2**53)
    assert client.post("/v1/dossiers", json=form).status_code == 201


def test_a_body_past_the_limit_is_a_413_before_anything_reads_it(client: TestClient) -> None:
    big = with_form(note="x" * (256 * 1024))
    body = assert_problem(client.post("/v1/dossiers", json=big), 413)
    assert body["type"] == "/problems/content-too-large"
    assert body["max_bytes"] == 256 * 1024
    # Refused before the token is even looked at.
    anonymous = client.post("/v1/dossiers", json=big, headers={"Authorization": ""})
    assert_problem(anonymous, 413)


@pytest.mark.parametrize(
    "personal_id",
    [
        "999090012345",  # no such province
        "001290012345",  # born 2090
        "001490012345",  # born 2190
        "٠٠١٠٩٠٠١٢٣٤٥",  # Arabic-Indic digits
        "００１０９００１２３４５",  # full-width digits
        "00109001234",
        "0010900123456",
        " 001090012345",
    ],
)
def test_personal_ids_identity_would_refuse_are_refused(
    client: TestClient, database: Path, personal_id: str
) -> None:
    applicant = {"personal_id": personal_id, "full_name": "A"}
    body = assert_problem(client.post("/v1/dossiers", json=dossier(applicant=applicant)), 422)
    [error] = body["errors"]
    assert error["location"] == ["body", "applicant", "personal_id"]
    assert personal_id not in error["message"]  # never echoed: it may reach a log
    assert outbox_rows(database) == 0


@pytest.mark.parametrize(
    ("phone", "reason"),
    [
        ("０９１２３４５６７８", "digits other than 0-9"),
        ("٠٩١٢٣٤٥٦٧٨", "digits other than 0-9"),
        ("024 3825 3525", "landline"),
        ("113", "short code"),
        ("+33 6 12 34 56 78", "not a Vietnamese number"),
        ("0123 456 7890", "old 11-digit mobile"),
        ("call me", "not a phone number"),
        ("0" * 40, "at most 32 characters"),
    ],
)
def test_phones_notify_could_not_text_are_refused(
    client: TestClient, database: Path, phone: str, reason: str
) -> None:
    applicant = {"personal_id": "001090012345", "full_name": "A", "phone": phone}
    body = assert_problem(client.post("/v1/dossiers", json=dossier(applicant=applicant)), 422)
    [error] = body["errors"]
    assert error["location"] == ["body", "applicant", "phone"]
    assert reason in error["message"]
    assert outbox_rows(database) == 0


def test_a_mobile_written_the_usual_ways_is_taken_as_written(
    client: TestClient, database: Path
) -> None:
    for phone in ("0912 345 678", "+84 91-234-5678", "(091) 234 5678"):
        applicant = {"personal_id": "001090012345", "full_name": "A", "phone": phone}
        assert client.post("/v1/dossiers", json=dossier(applicant=applicant)).status_code == 201
    with create_engine(f"sqlite:///{database}").connect() as conn:
        phones = (
            conn.execute(text("SELECT applicant FROM intake_dossier ORDER BY code")).scalars().all()
        )
    assert [json.loads(a)["phone"] for a in phones] == [
        "0912 345 678",
        "+84 91-234-5678",
        "(091) 234 5678",
    ]
