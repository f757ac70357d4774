"""Identity's smaller leaks, on the real stack: OIDC codes in spans, forced logout, a 401
without a challenge, ten-year client assertions, clear personal IDs in consent rows,
world-readable logs. Deliberate failures come from 127.0.0.5, not from the services'
address, so they use up nobody else's failure budget."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select

from core.storage import create_engine
from devstack.otlp_sink import SpanCollector
from devstack.stack import Stack
from services.identity.models import consents
from tests.support.eid import at_provider, browser, consent, log_in, start_login
from tests.support.flows import eventually

CITIZEN = "079185000001"
ELSEWHERE = "127.0.0.5"


def test_the_callbacks_code_and_state_do_not_reach_the_spans(
    stack: Stack, spans: SpanCollector
) -> None:
    client = browser()
    callback = at_provider(client, start_login(client, stack), CITIZEN)
    query = parse_qs(urlsplit(callback).query)
    code, state = query["code"][0], query["state"][0]
    assert client.get(callback).status_code == 200

    def callback_spans() -> list[Any]:
        return [
            s
            for s in spans.spans()
            if s.service == "identity" and "/v1/citizen/callback" in json.dumps(s.attributes)
        ]

    # The callback's span is exported with its query's shape, the values redacted...
    found = eventually(callback_spans)
    assert "code=REDACTED&state=REDACTED" in json.dumps([s.attributes for s in found])
    # ...and no span of any service carries the code or the state.
    for span in spans.spans():
        exported = f"{span.name} {json.dumps(span.attributes)}"
        assert code not in exported, f"span {span.name} of {span.service} has the code"
        assert state not in exported, f"span {span.name} of {span.service} has the state"


def test_logout_takes_a_post_with_proof_that_it_comes_from_the_citizen(stack: Stack) -> None:
    client, login = log_in(stack, CITIZEN)
    identity = stack.url("identity")
    me = identity + "/v1/citizen/me"

    def still_logged_in() -> bool:
        answer = httpx.get(me, headers={"X-Citizen-Session": login["session"]}, timeout=15)
        return answer.status_code == 200

    # A link or an image elsewhere: GET does not log out.
    assert client.get(identity + "/v1/citizen/logout").status_code == 405
    assert still_logged_in()
    # A form elsewhere: the browser sends the cookie, but not the CSRF header.
    forged = client.post(identity + "/v1/citizen/logout")
    assert forged.status_code == 403, forged.text
    assert forged.json()["type"] == "/problems/csrf-check-failed"
    assert still_logged_in()
    # Our page: the cookie and the header given at login.
    logout = client.post(
        identity + "/v1/citizen/logout", headers={"X-CSRF-Token": login["csrf_token"]}
    )
    assert logout.status_code == 204
    assert not still_logged_in()


def test_a_bad_citizen_session_is_a_401_with_a_challenge(stack: Stack) -> None:
    answer = httpx.get(
        stack.url("identity") + "/v1/citizen/me",
        headers={"X-Citizen-Session": "not-a-session"},
        timeout=15,
    )
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("CitizenSession ")
    assert 'error="invalid_session"' in challenge


def test_a_client_assertion_valid_for_ten_years_is_refused(stack: Stack) -> None:
    identity = stack.url("identity")
    client = stack.credentials.clients["motcua-h22"]
    assert client.key_file
    key = RSAKey.import_key(Path(client.key_file).read_bytes())
    key.ensure_kid()  # as registered: the JWKS names it by thumbprint
    now = int(time.time())

    def assertion(lifetime_s: int) -> str:
        claims = {
            "iss": client.client_id,
            "sub": client.client_id,
            "aud": identity + "/oauth2/token",
            "iat": now,
            "exp": now + lifetime_s,
            "jti": secrets.token_urlsafe(12),
        }
        return jwt.encode({"alg": "RS256", "kid": key.kid or ""}, claims, key)

    def ask(lifetime_s: int) -> httpx.Response:
        elsewhere = httpx.HTTPTransport(local_address=ELSEWHERE)
        with httpx.Client(transport=elsewhere, timeout=30) as http:
            return http.post(
                identity + "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": (
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    ),
                    "client_assertion": assertion(lifetime_s),
                },
            )

    ten_years = ask(10 * 365 * 86400)
    assert ten_years.status_code == 400, ten_years.text
    assert ten_years.json()["error"] == "invalid_client"
    assert "at most 300 s" in ten_years.json()["error_description"]
    assert ask(300).status_code == 200


def test_consent_rows_keep_no_personal_id_in_clear(stack: Stack, database_url: str) -> None:
    _, login = log_in(stack, CITIZEN)
    granted = consent(stack, login["session"], "HT.XNTTHN", "Đăng ký kết hôn")
    # The citizen saw their data, household included...
    shown = granted["preview"]["residence"]
    assert shown["personal_id"] == CITIZEN
    members = [m["personal_id"] for m in shown.get("household", {}).get("members", [])]

    async def stored_row() -> dict[str, Any]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                query = select(consents).where(consents.c.id == granted["id"])
                return dict((await conn.execute(query)).one()._mapping)
        finally:
            await engine.dispose()

    # ...which the row keeps sealed: no ID of anyone in clear.
    row = asyncio.run(stored_row())
    assert row["residence_sealed"]
    for number in (CITIZEN, *members):
        assert number not in json.dumps(row, default=str)


def test_service_logs_are_not_world_readable(stack: Stack) -> None:
    logs = sorted((stack.var_dir / "log").glob("*.log"))
    assert {p.stem for p in logs} >= {"identity", "intake", "routing", "notify", "sandbox"}
    for path in logs:
        assert path.stat().st_mode & 0o007 == 0, f"{path.name}: {oct(path.stat().st_mode)}"
