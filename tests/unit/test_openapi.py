"""The OpenAPI helpers (core/openapi.py) and the documents the four services serve, built
in-process: every error a Problem, the statuses each route answers, scopes, names, tags."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, Query
from fastapi.testclient import TestClient
from pydantic import BaseModel

from core.auth import DOSSIERS_READ, REPORTS_READ, AgencyPrincipal, require_scope
from core.openapi import (
    PROBLEM_REF,
    camel_case,
    install_openapi,
    operation_id,
    problems,
    replayed,
)
from core.problems import PROBLEM_JSON, install_problem_handlers
from services.identity.main import build_app as identity_app
from services.intake.main import build_app as intake_app
from services.notify.main import build_app as notify_app
from services.routing.main import build_app as routing_app

TOKEN_URL = "http://identity.test/oauth2/token"
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")


Reader = Annotated[AgencyPrincipal, Depends(require_scope(DOSSIERS_READ))]


class Thing(BaseModel):
    name: str


def small_app() -> FastAPI:
    app = FastAPI(generate_unique_id_function=operation_id)
    install_problem_handlers(app)
    install_openapi(
        app, server_url="https://gateway.test", token_url=TOKEN_URL, scopes={"x:read": "read"}
    )

    @app.post("/things", status_code=201, response_model=Thing, responses=replayed(Thing))
    async def create_thing(body: Thing) -> Thing:
        return body

    @app.get("/things/{name}", response_model=Thing, responses=problems(404))
    async def get_thing(name: str, agency: Reader) -> Thing:
        return Thing(name=name)

    @app.get("/search", tags=["outer", "search"])
    async def search_things(q: Annotated[str, Query(min_length=2)]) -> list[str]:
        return [q]

    @app.get("/plain/{name}")
    async def plain(name: str) -> str:
        return name

    @app.get("/hello")
    async def hello(hint: Annotated[str | None, Header()] = None) -> str:
        return "hello"

    @app.delete("/plain/{name}")
    async def remove(name: str) -> None:
        return None

    return app


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return small_app().openapi()


def test_camel_case_operation_ids() -> None:
    assert camel_case("submit_dossier") == "submitDossier"
    assert camel_case("get") == "get"
    assert camel_case("list_dead_letters") == "listDeadLetters"


def test_problems_reference_the_one_schema_with_their_headers() -> None:
    answers = problems(401, 404, 429)
    for status in (401, 404, 429):
        assert answers[status]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}
    assert "WWW-Authenticate" in answers[401]["headers"]
    assert "Retry-After" in answers[429]["headers"]
    assert "headers" not in answers[404]


def test_a_replay_is_a_typed_200_with_location_and_replayed_headers(
    document: dict[str, Any],
) -> None:
    answers = document["paths"]["/things"]["post"]["responses"]
    assert answers["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Thing"
    }
    assert set(answers["200"]["headers"]) == {"Location", "Idempotent-Replayed"}
    assert set(answers["201"]["headers"]) == {"Location"}


def test_fastapis_validation_error_is_replaced_by_the_problem(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert schemas["Problem"]["required"] == ["type", "title", "status"]
    search = document["paths"]["/search"]["get"]["responses"]
    assert search["422"]["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}


def test_statuses_follow_what_the_route_can_answer(document: dict[str, Any]) -> None:
    paths = document["paths"]
    # A JSON body: 400 (not JSON), 413, 422; no token needed, so no 401/403.
    assert set(paths["/things"]["post"]["responses"]) == {
        "200", "201", "400", "413", "422", "429", "503"
    }  # fmt: skip
    # A token with a scope: 401, 403; its own 404; 422 for a path with NUL (core.limits).
    assert set(paths["/things/{name}"]["get"]["responses"]) == {
        "200", "401", "403", "404", "422", "429", "503"
    }  # fmt: skip
    # An optional header taken as any string cannot fail validation.
    assert set(paths["/hello"]["get"]["responses"]) == {"200", "429", "503"}


def test_security_is_the_oauth2_scheme_with_the_routes_scope(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"agencyToken"}
    flow = schemes["agencyToken"]["flows"]["clientCredentials"]
    assert flow == {"tokenUrl": TOKEN_URL, "scopes": {"x:read": "read"}}
    assert document["paths"]["/things/{name}"]["get"]["security"] == [
        {"agencyToken": [DOSSIERS_READ]}
    ]
    assert "security" not in document["paths"]["/things"]["post"]


def test_one_tag_short_ids_and_servers(document: dict[str, Any]) -> None:
    assert document["servers"] == [{"url": "https://gateway.test"}]
    search = document["paths"]["/search"]["get"]
    assert search["tags"] == ["search"]
    assert search["operationId"] == "searchThings"


def test_a_405_names_every_method_of_the_path_in_allow() -> None:
    with TestClient(small_app()) as client:
        refused = client.put("/plain/x")
    assert refused.status_code == 405
    assert refused.headers["content-type"] == PROBLEM_JSON
    assert refused.headers["allow"] == "DELETE, GET"


def service_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, build in (
        ("intake", intake_app),
        ("routing", routing_app),
        ("notify", notify_app),
        ("identity", identity_app),
    ):
        yield name, build().openapi()


@pytest.fixture(scope="module")
def services(monkeypatch_module: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    monkeypatch_module.setenv("PSEUDONYM_KEY", "00" * 32)
    return dict(service_documents())


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_service_error_is_a_problem_and_every_operation_named_once(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, document in services.items():
        ids = [op["operationId"] for _, _, op in operations(document)]
        assert len(ids) == len(set(ids)), name
        for path, method, operation in operations(document):
            assert CAMEL.match(operation["operationId"]), operation["operationId"]
            assert len(operation["tags"]) == 1, (path, method)
            for status, answer in operation["responses"].items():
                if int(status) < 400 or path == "/oauth2/token":
                    continue  # the token endpoint's errors are OAuth's (RFC 6749 §5.2)
                assert answer["content"] == {PROBLEM_JSON: {"schema": PROBLEM_REF}}, (
                    name, path, method, status,
                )  # fmt: skip


def test_secured_operations_document_401_and_403(services: dict[str, dict[str, Any]]) -> None:
    secured = 0
    for document in services.values():
        for path, method, operation in operations(document):
            if any("agencyToken" in s for s in operation.get("security", [])):
                secured += 1
                assert {"401", "403"} <= set(operation["responses"]), (path, method)
    assert secured >= 25


def test_typed_journey_statistics_and_procedure_forms(
    services: dict[str, dict[str, Any]],
) -> None:
    routing = services["routing"]
    journey = routing["paths"]["/v1/dossiers/{code}/journey"]["get"]["responses"]["200"]
    ref = journey["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    status = routing["components"]["schemas"][ref]["properties"]["status"]
    assert status["enum"] == list(range(1, 11))
    statistics = routing["paths"]["/v1/statistics"]["get"]["responses"]["200"]["content"]
    assert set(statistics) == {"application/json", "text/csv"}
    assert routing["paths"]["/v1/statistics"]["get"]["security"] == [
        {"agencyToken": [REPORTS_READ]}
    ]
    intake = services["intake"]
    assert "/v1/procedures/{procedure_code}" in intake["paths"]
    step_status = intake["components"]["schemas"]["StepOut"]["properties"]["status"]
    assert "completed" in step_status["enum"]
