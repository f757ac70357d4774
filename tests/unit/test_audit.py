"""The audit trail of refusals: one JSON record per 403, scope checks included, without
personal data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI

from core.audit import forbidden
from core.auth import DOSSIERS_SUBMIT, AgencyPrincipal, TokenVerifier, require_scope
from core.deps import install
from core.problems import install_problem_handlers
from tests.support.audit import Trail, audit_trail
from tests.support.tokens import AUDIENCE, ISSUER, TestIssuer

TOKENS = TestIssuer()
Desk = Annotated[AgencyPrincipal, Depends(require_scope(DOSSIERS_SUBMIT))]


@pytest.fixture
def trail() -> Iterator[Trail]:
    with audit_trail() as handler:
        yield handler


def test_a_refusal_is_one_record_with_who_what_and_why(trail: Trail) -> None:
    caller = AgencyPrincipal("motcua-h22", "000.00.01.H22", frozenset())
    problem = forbidden(
        caller,
        action="record-supplement",
        target="dossier/000.21.31.H22-261122-0001",
        slug="dossier-of-another-desk",
        title="Only the desk that received this dossier may record this",
        detail="received by 000.21.31.H22",
    )
    assert problem.status == 403
    [record] = trail.records
    assert record["event"] == "authorization.refused"
    assert record["client"] == "motcua-h22"
    assert record["agency"] == "000.00.01.H22"
    assert record["action"] == "record-supplement"
    assert record["object"] == "dossier/000.21.31.H22-261122-0001"
    assert record["reason"] == "dossier-of-another-desk: received by 000.21.31.H22"
    assert set(record) <= {"time", "event", "client", "agency", "action", "object", "reason",
                           "trace_id"}  # fmt: skip


async def test_a_missing_scope_is_audited_with_the_route(trail: Trail) -> None:
    app = FastAPI()
    install_problem_handlers(app)
    install(
        app,
        token_verifier=TokenVerifier(issuer=ISSUER, audience=AUDIENCE, static_jwks=TOKENS.jwks),
    )

    @app.post("/v1/dossiers/{code}/result-returned")
    async def returned(code: str, _: Desk) -> dict[str, str]:
        return {"code": code}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.post(
            "/v1/dossiers/X-1/result-returned",
            headers=TOKENS.headers("000.22.31.H22", "dossiers:read"),
        )
    assert answer.status_code == 403
    assert answer.headers["content-type"] == "application/problem+json"
    [record] = trail.records
    assert record["action"] == "POST /v1/dossiers/{code}/result-returned"
    assert record["object"] == "/v1/dossiers/X-1/result-returned"
    assert record["agency"] == "000.22.31.H22"
    assert "dossiers:submit" in record["reason"]
